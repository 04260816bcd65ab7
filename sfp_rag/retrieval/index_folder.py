"""The on-disk index folder (``indexes/NAME/``) and searching it.

Layout (format ``sfp-rag-index/1``):

    manifest.json    encoder identity and config, index type, chunking, corpus stats, skipped files, versions
    index.faiss      the FAISS index (always a CPU index); ids are row numbers
    vectors.npy      float32 (N, d) embeddings, row i = docstore line i (the source of truth for rebuilds)
    docstore.jsonl   one JSON object per chunk: source, chunk, start, end, text
    files.json       relpath -> sha256, size, first row and number of chunks (for incremental updates)
    centering.npz    optional: the corpus centering (``centering.py``); index.faiss then holds centered vectors
    bm25/            optional BM25 index over the chunk texts (hybrid search)

A folder is written complete into a temporary directory and renamed into place, so a reader sees either the old
index or the new one. ``Collection.open`` checks that the parts agree and says how to rebuild when they do not.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import is_regular_file, require_regular_file
from ..hits import Hit
from .centering import CENTERING_FILE, Centering
from .faiss_index import FaissIndex
from .fusion import DEFAULT_ALPHA

logger = logging.getLogger(__name__)

FORMAT = "sfp-rag-index/1"
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
VECTORS = "vectors.npy"
DOCSTORE = "docstore.jsonl"
FILES = "files.json"
INDEX_HOME_ENV = "SFP_RAG_HOME"
BM25_DIR = "bm25"


class IndexFolderError(ValueError):
    """An index folder is missing, damaged or does not match the encoder."""


class IndexMismatchError(IndexFolderError):
    """The index was built by another encoder than the one asked to query or update it."""


# What a hit's score is, by mode (also in --help, the README and every JSON answer).
SCORE_KINDS = {
    "dense": "cosine similarity of query and chunk embeddings (-1..1, higher is closer)",
    "bm25": "BM25 keyword score (0 and up, unbounded; higher matches more query terms)",
    "hybrid": f"fused score (0..1, relative to the query's best candidates): alpha*(cos+1)/(best cos+1) + "
    f"(1-alpha)*BM25/(best BM25), alpha {DEFAULT_ALPHA}; a relevance threshold belongs on each hit's 'cosine'",
}


# --- hints that act on the folder the user named ----------------------------------------------------------------

# Folders of the operating system: a hint never suggests building or rebuilding an index there or in them.
_SYSTEM_ROOTS = tuple(Path(p) for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run",
                                       "/sbin", "/sys", "/usr"))  # fmt: skip


def is_system_folder(path: Path) -> bool:
    """``/``, a folder directly under it, anything inside the operating system's own folders, or the home folder."""
    real = Path(path).expanduser().resolve()
    if real == Path(real.anchor) or real.parent == Path(real.anchor) or real == Path.home().resolve():
        return True
    return any(real == root or root in real.parents for root in _SYSTEM_ROOTS)


def target_option(path: Path) -> str | None:
    """The ``sfp-rag index`` option that writes to ``path``: ``--name NAME`` for an index of the home, ``--out PATH``
    for any other folder; None for a system folder (no index belongs there)."""
    path = Path(path)
    if is_system_folder(path):
        return None
    home = index_home().expanduser().resolve()
    if path.expanduser().absolute().parent.resolve() == home and _NAME.fullmatch(path.name):
        return f"--name {path.name}"
    return f"--out {shlex.quote(str(path))}"


def rebuild_hint(path: Path, extra: str = "") -> str:
    option = target_option(path)
    if option is None:
        return f"{path} is a system folder: give the folder of an index"
    return f"rebuild it with: sfp-rag index <docs> {option}{extra} --rebuild"


def build_hint(path: Path) -> str:
    option = target_option(path)
    if option is None:
        return f"{path} is a system folder: give the folder of an index"
    return f"build one with: sfp-rag index <docs> {option}"


# --- index parts are regular files -------------------------------------------------------------------------------


def check_regular(path: Path, index: Path) -> None:
    """Raise ``IndexFolderError`` when ``path`` exists but is not a regular file (``_utils.require_regular_file``:
    checked with ``stat``, so a FIFO is never opened), or cannot be looked at."""
    try:
        require_regular_file(path, "index part")
    except ValueError as err:
        raise IndexFolderError(f"{err}: an index's parts are files sfp-rag wrote; {rebuild_hint(index)}") from None
    except OSError as err:
        raise IndexFolderError(f"{path} cannot be read ({err.strerror}); {rebuild_hint(index)}") from None


def _array_problem(path: Path, err: Exception, hint: str, state: str = "") -> str:
    """Why an array file was not loaded. One that holds Python objects is refused, and said so: such a file is
    unpickled to load, which can run code, and sfp-rag never does it (nor suggests it: numpy's message names the
    option that would)."""
    text = str(err)
    if "pickle" in text or "Python objects" in text:
        return (
            f"{path} holds Python objects, not plain numbers: refused, because loading objects from a file can run "
            f"code; an index's arrays are plain float32 numbers that sfp-rag wrote; {hint}"
        )
    return f"{path} is {state}damaged ({text}); {hint}"


def index_home() -> Path:
    """Where named indexes live: $SFP_RAG_HOME, else ./indexes."""
    return Path(os.environ.get(INDEX_HOME_ENV, "indexes"))


# A name is one path component of safe characters: it can never point outside the index home.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_index_name(name: str) -> str:
    """Return ``name`` if it is a valid index name, else raise an error that says what a name may hold."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith((".lock", ".partial")):
        raise IndexFolderError(
            f"{name!r} is not a valid index name: use letters, digits, '.', '_' and '-' (starting with a letter or "
            "digit, at most 128 characters); to put an index somewhere else, give a path with --out"
        )
    return name


def default_index_name(docs: str | Path) -> str:
    """The name an index of ``docs`` gets when none is given: the folder's name, made safe."""
    base = Path(docs).expanduser().resolve().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:128]
    if not name:
        raise IndexFolderError(f"cannot derive an index name from {str(docs)!r}; give one with --name")
    return name


def looks_like_path(name_or_path: str | Path) -> bool:
    """A path is explicit: it has a separator, is absolute, or starts with '.' or '~'. Anything else is a name."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or os.sep in text or text.startswith((".", "~")) or Path(text).is_absolute()


def resolve_index_path(name_or_path: str | Path | None) -> Path:
    """A bare name is an index in ``index_home()`` (never a folder of the current directory); a path (``./x``,
    ``a/b``, ``/abs``, a ``Path``) is used as it is; None: the only index there is."""
    if name_or_path is None:
        home = index_home()
        names = sorted(p.name for p in home.glob("*") if (p / MANIFEST).exists()) if home.is_dir() else []
        if len(names) == 1:
            return home / names[0]
        if not names:
            raise IndexFolderError(f"no index in {home}/; build one with: sfp-rag index <docs>")
        raise IndexFolderError(f"several indexes in {home}/ ({', '.join(names)}); choose one with --index NAME")
    if looks_like_path(name_or_path):
        return Path(name_or_path).expanduser()
    return index_home() / check_index_name(str(name_or_path))


def is_index_folder(path: Path) -> bool:
    """True when ``path`` is an sfp-rag index folder, perhaps a damaged one: a ``manifest.json`` of our format, or a
    ``manifest.json`` beside at least two of our other parts. Only such a folder may be replaced by a rebuild or
    deleted; any other folder (one with a web app's ``manifest.json``, say) is left alone."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        return False
    if is_regular_file(path / MANIFEST):  # a FIFO in its place is never opened (that would block)
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
                return True
        except OSError:
            return False
        except ValueError:
            pass
    return sum(is_regular_file(path / part) for part in (FAISS_FILE, VECTORS, DOCSTORE, FILES)) >= 2


def check_build_target(out: Path, docs: Path | None = None) -> None:
    """Refuse an index target that a build would damage: the documents themselves or a folder above them, the index
    home, a folder holding indexes, a file, or a non-empty folder that is not an sfp-rag index (``--rebuild``
    included: a rebuild only ever replaces an index)."""
    target = Path(out).expanduser().absolute()
    real_target = target.resolve()
    real_source = Path(docs).expanduser().resolve() if docs is not None else None
    if real_source is not None and (real_target == real_source or real_target in real_source.parents):
        raise IndexFolderError(
            f"the index folder {out} is the documents folder {docs} or holds it: building there would replace the "
            "documents; choose another --out or --name"
        )
    if real_target == index_home().expanduser().resolve() or (target.is_dir() and any_index_inside(target)):
        raise IndexFolderError(
            f"{out} is the index home or holds other indexes; an index is one folder inside it (--name NAME)"
        )
    if target.exists() and not target.is_dir():
        raise IndexFolderError(f"{out} is a file, not an index folder; choose another --out or --name")
    if target.is_dir() and not is_index_folder(target) and any(target.iterdir()):
        raise IndexFolderError(
            f"{out} exists but is not an sfp-rag index (no valid {MANIFEST}); it is left alone, --rebuild included: "
            "choose another --name/--out, or move that folder away yourself"
        )


def any_index_inside(folder: Path) -> bool:
    try:
        return any((child / MANIFEST).exists() for child in folder.iterdir() if child.is_dir())
    except OSError:
        return False


def encoder_section(encoder) -> dict[str, Any]:
    """What a manifest records of the encoder: its identity, a config to rebuild it (no device/dtype/runtime: they
    are the reader's), and what ran the backbone (``runtime``: torch or OpenVINO and the precision)."""
    config = encoder.config.to_dict()
    for key in ("device", "dtype", "runtime"):
        config.pop(key, None)
    return {"identity": encoder.identity(), "config": config, "probe_ids": encoder.probe_ids(),
            "runtime": encoder.runtime}  # fmt: skip


def describe_difference(identity: dict[str, Any], encoder) -> str:
    mine = encoder.identity()
    diffs = [f"{k}: index {identity.get(k)!r} vs now {mine.get(k)!r}" for k in mine if identity.get(k) != mine.get(k)]
    text = "; ".join(diffs) or "fingerprints differ"
    if mine.get("adapter") and identity.get("adapter") == mine["adapter"]:
        if identity.get("adapter_sha256") != mine.get("adapter_sha256"):
            text += (
                f": the adapter {mine['adapter']!r} holds other weights than when the index was built (retrained in "
                "place, or a new shipped default after an sfp-rag upgrade)"
            )
    return text


# The manifest fields that readers rely on, with their types: anything else is optional.
_MANIFEST_FIELDS = {
    ("fingerprint",): str,
    ("index",): dict,
    ("index", "factory"): str,
    ("index", "ntotal"): int,
    ("encoder",): dict,
    ("encoder", "identity"): dict,
    ("encoder", "config"): dict,
}


def _check_manifest(manifest: dict[str, Any], where: Path) -> None:
    for keys, kind in _MANIFEST_FIELDS.items():
        value: Any = manifest
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise IndexFolderError(
                f"{where} is damaged: {'.'.join(keys)} should be a {kind.__name__}, found {value!r:.60}; "
                f"{rebuild_hint(where.parent)}"
            )


class Collection:
    """An index folder opened for searching; FAISS index, vectors and docstore load on first use."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._faiss: FaissIndex | None = None
        self._mapped: np.ndarray | None = None
        self._lines: list[bytes] | None = None
        self._files: dict[str, Any] | None = None
        self._bm25 = None
        self._centering: Centering | None = None

    @classmethod
    def open(cls, path: str | Path) -> Collection:
        path = Path(path)
        if not (path / MANIFEST).exists():
            if path.is_dir() and any(path.iterdir()):
                raise IndexFolderError(
                    f"{path} has no {MANIFEST}: not an sfp-rag index, or damaged; {rebuild_hint(path)}"
                )
            raise IndexFolderError(f"no index at {path}; {build_hint(path)}")
        for part in (MANIFEST, FAISS_FILE, VECTORS, DOCSTORE, FILES, CENTERING_FILE):
            check_regular(path / part, path)
        if (path / BM25_DIR).is_dir():
            for part in sorted((path / BM25_DIR).iterdir()):
                check_regular(part, path)
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFolderError(f"{path / MANIFEST} is damaged ({err}); {rebuild_hint(path)}") from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise IndexFolderError(f"{path} has format {found!r}, expected {FORMAT!r}; {rebuild_hint(path)}")
        _check_manifest(manifest, path / MANIFEST)
        for part in (FAISS_FILE, VECTORS, DOCSTORE, FILES):
            if not (path / part).exists():
                raise IndexFolderError(f"{path / part} is missing; {rebuild_hint(path)}")
        return cls(path, manifest)

    # --- parts -----------------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return int(self.manifest["index"]["ntotal"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def faiss(self) -> FaissIndex:
        if self._faiss is None:
            index = FaissIndex.load(self.path / FAISS_FILE, self.manifest["index"]["factory"])
            if index.ntotal != self.ntotal:
                raise IndexFolderError(
                    f"{self.path / FAISS_FILE} holds {index.ntotal} vectors, the manifest "
                    f"{self.ntotal}; {rebuild_hint(self.path)}"
                )
            self._faiss = index
        return self._faiss

    def vectors(self, mmap: bool = True) -> np.ndarray:
        """The stored vectors (N, d): memory-mapped read-only (opened once; hybrid search reads rows of it on every
        query), or with ``mmap=False`` a fresh in-memory copy."""
        if mmap and self._mapped is not None:
            return self._mapped
        try:
            vectors = np.load(self.path / VECTORS, mmap_mode="r" if mmap else None)
        except (ValueError, OSError) as err:
            raise IndexFolderError(_array_problem(self.path / VECTORS, err, rebuild_hint(self.path))) from None
        if vectors.dtype != np.float32 or vectors.ndim != 2:
            raise IndexFolderError(
                f"{self.path / VECTORS} is not a float32 matrix (it holds {vectors.dtype}, shape {vectors.shape}); "
                f"{rebuild_hint(self.path)}"
            )
        if vectors.shape[0] != self.ntotal:
            raise IndexFolderError(
                f"{self.path / VECTORS} has {vectors.shape[0]} rows, expected {self.ntotal}; {rebuild_hint(self.path)}"
            )
        if mmap:
            self._mapped = vectors
        return vectors

    def _docstore_lines(self) -> list[bytes]:
        if self._lines is None:
            lines = (self.path / DOCSTORE).read_bytes().splitlines()
            if len(lines) != self.ntotal:
                raise IndexFolderError(
                    f"{self.path / DOCSTORE} has {len(lines)} lines, expected {self.ntotal}; {rebuild_hint(self.path)}"
                )
            self._lines = lines
        return self._lines

    def record(self, row: int) -> dict[str, Any]:
        try:
            return json.loads(self._docstore_lines()[row])
        except json.JSONDecodeError as err:
            raise IndexFolderError(
                f"{self.path / DOCSTORE} line {row + 1} is damaged; {rebuild_hint(self.path)}"
            ) from err

    def texts(self) -> list[str]:
        return [self.record(i)["text"] for i in range(self.ntotal)]

    @property
    def files(self) -> dict[str, Any]:
        if self._files is None:
            where = self.path / FILES
            try:
                files = json.loads(where.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise IndexFolderError(f"{where} is damaged ({err}); {rebuild_hint(self.path)}") from None
            entry_keys = {"sha256": str, "size": int, "first_row": int, "chunks": int}
            if not isinstance(files, dict) or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in entry_keys.items())
                for e in files.values()
            ):
                raise IndexFolderError(
                    f"{where} is damaged (expected path -> {sorted(entry_keys)}); {rebuild_hint(self.path)}"
                )
            self._files = files
        return self._files

    # --- searching -------------------------------------------------------------------------------------------

    def hit(self, row: int, score: float, cosine: float | None = None, bm25: float | None = None) -> Hit:
        r = self.record(row)
        return Hit(
            float(score), int(row), r["source"], r["chunk"], r.get("start"), r.get("end"), r["text"],
            r.get("metadata") or {}, cosine, bm25,
        )  # fmt: skip

    @property
    def has_bm25(self) -> bool:
        return (self.path / BM25_DIR).is_dir()

    @property
    def bm25(self):
        """The BM25 index (built with ``hybrid``), loaded on first use."""
        if self._bm25 is None:
            from .bm25 import BM25Index

            if not self.has_bm25:
                raise IndexFolderError(f"{self.path} has no BM25 index; {rebuild_hint(self.path, ' --hybrid')}")
            self._bm25 = BM25Index.load(self.path / BM25_DIR)
        return self._bm25

    @property
    def centering(self) -> Centering | None:
        """The corpus centering the dense side was built with (None: the index is not centered)."""
        if self._centering is None and (self.manifest.get("centering") or {}).get("fitted"):
            where = self.path / CENTERING_FILE
            try:
                self._centering = Centering.load(where)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                raise IndexFolderError(_array_problem(where, err, rebuild_hint(self.path), "missing or ")) from None
        return self._centering

    def search_queries(self, queries: np.ndarray) -> np.ndarray:
        """Query embeddings (as the encoder gives them) in the space the FAISS index searches."""
        return queries if self.centering is None else self.centering.queries(queries)

    def searched_vectors(self, rows: list[int]) -> np.ndarray:
        """The stored vectors of ``rows`` as the FAISS index holds them (centered when the index is)."""
        vectors = np.asarray(self.vectors()[rows], dtype=np.float32)
        return vectors if self.centering is None else self.centering.documents(vectors)

    def search_vectors(self, queries: np.ndarray, k: int, params: dict[str, int] | None = None) -> list[list[Hit]]:
        """Dense top-``k`` for each query embedding (``params``: FAISS search parameters for this search)."""
        scores, ids = self.faiss.search(self.search_queries(queries), min(k, max(self.ntotal, 1)), params)
        return [[self.hit(i, s, cosine=s) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]
