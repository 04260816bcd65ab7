"""Small helpers shared by every module: device and dtype resolution, optional-dependency checks, atomic writes.

Simplifications: device resolution knows cuda, mps and cpu only; "auto" never picks a second GPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import random
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Set
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
DEVICES = ("auto", "cpu", "cuda", "mps")


# --- optional dependencies -------------------------------------------------------------------------------------


@functools.lru_cache
def is_available(module: str) -> bool:
    """True when ``module`` can be imported (looked up without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, purpose: str, install: str) -> None:
    """Raise an ImportError that says what needs ``module`` and how to install it."""
    if not is_available(module):
        raise ImportError(
            f"{purpose} needs the '{module}' package, which is not installed. Install it with: {install}"
        )


# --- text input ----------------------------------------------------------------------------------------------


def check_texts(texts: object, name: str = "texts") -> list[str]:
    """Accept a ``str`` or a sequence of ``str`` (list, tuple, any ordered iterable of strings); raise a
    ``TypeError`` for anything else (bytes, a dict or set, a number) and a ``ValueError`` for a string that is not
    valid Unicode (lone surrogates, e.g. undecodable bytes that reached Python through ``surrogateescape``).
    ``name`` is what the messages call the input (``texts``, or a request field such as ``input``).

    The local paths and the HTTP client (``client.SFPClient``) both check with it, so the same input gets the
    same message whether it is embedded here or sent to a server."""
    if isinstance(texts, str):
        out = [texts]
    elif isinstance(texts, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be str, not {type(texts).__name__}: decode it first, e.g. data.decode('utf-8')")
    elif isinstance(texts, (Mapping, Set)) or not isinstance(texts, Iterable):
        raise TypeError(
            f"{name} must be a string or a list of strings, got {type(texts).__name__}"
            + (" (unordered: pass a list, e.g. list(values))" if isinstance(texts, (Mapping, Set)) else "")
        )
    else:
        out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__} ({t!r:.60}), not str; convert or drop it")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:
            bad = t[err.start]
            raise ValueError(
                f"{name}[{i}] is not valid text: it holds the lone surrogate U+{ord(bad):04X} at position "
                f"{err.start} (usually bytes that are not UTF-8); pass text decoded as UTF-8"
            ) from None
    return out


def file_kind(mode: int) -> str:
    """What a ``stat`` mode is, in words (for messages about files that are not regular files)."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe (FIFO)"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def require_regular_file(path: str | Path, what: str) -> Path:
    """``path``, or a ``ValueError`` when it exists but is not a regular file. Checked with ``stat``, which opens
    nothing: opening a named pipe blocks until a writer comes, so a FIFO in the place of a file would hang."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path} is a {file_kind(mode)}, not a regular file")
    return path


def is_regular_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file (``stat`` only: nothing is opened)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# --- device and dtype ------------------------------------------------------------------------------------------


def resolve_device(device: str | None = None) -> str:
    """Map ``None``/"auto" to the best available device; check an explicit one exists."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    base = str(device).split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES} (optionally 'cuda:N'), got {device!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return str(device)


@functools.lru_cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AMX or AVX-512 BF16), so bf16 beats fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
    except (OSError, IndexError):
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def machine_info() -> dict[str, Any]:
    """What a measured number depends on: CPU model and the flags that change speed, cores, versions, GPU."""
    import platform
    import sys

    info: dict[str, Any] = {"cpu": platform.processor() or "unknown", "cpu_count": os.cpu_count(),
                            "python": sys.version.split()[0], "platform": platform.platform()}  # fmt: skip
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line for line in lines if line.startswith("flags")).split()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    except (OSError, StopIteration):
        pass
    torch = sys.modules.get("torch")  # only when the command loaded it: recording never imports torch
    if torch is not None:
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def normalize_dtype_name(dtype: Any) -> str:
    """Return the canonical name ("auto", "float32", "bfloat16", "float16") of a dtype string or torch dtype."""
    name = str(dtype).replace("torch.", "")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or fp32/bf16/fp16), got {dtype!r}")
    return name


def resolve_dtype(dtype: Any, device: str):
    """The weights' torch dtype. "auto" is bf16 where matrix units make it fast (bf16-capable CUDA GPUs, CPUs with
    AMX or AVX512-BF16), fp16 on older GPUs, fp32 elsewhere. On CPU, bf16 measured 8.9x the plain transformers path
    with the same STS-B score as fp32 (benchmarks/encode_speed.py)."""
    import torch

    name = normalize_dtype_name(dtype)
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- other libraries' noise -------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Keep what other libraries do on import or load from leaking into the caller's process: a reader module that
    calls ``logging.basicConfig`` at import, transformers' weight-loading bars, bitsandbytes' CPU notice and
    deprecation warnings. Root logging is restored as it was; a library configures no logging of its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    bars = None
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    quiet = [logging.getLogger(name) for name in ("bitsandbytes", "faiss.loader", "pypdf")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for q, lv in zip(quiet, levels):
            q.setLevel(lv)
        if bars:
            hf_logging.enable_progress_bar()
        root.handlers[:] = handlers
        root.setLevel(level)


# --- progress -------------------------------------------------------------------------------------------------


def progress_bar(total: int, desc: str, unit: str, enabled: bool | None, log: logging.Logger, **kwargs: Any):
    """A tqdm bar; ``enabled=None`` shows it only when ``log`` is at INFO, there is work and stderr is a terminal
    (a log file gets no carriage-return frames). ``True`` forces it, ``False`` hides it."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = log.isEnabledFor(logging.INFO) and total > 0 and _stderr_is_terminal()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, **kwargs)


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --- files ----------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where dequantized weights and other caches live: $SFP_RAG_CACHE, else the user cache directory."""
    env = os.environ.get("SFP_RAG_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sfp_rag"))


class UnwritablePathError(PermissionError):
    """A folder that output should go to cannot be created or written."""


def ensure_writable_dir(folder: str | Path, purpose: str) -> Path:
    """Create ``folder`` (and its parents) and check that a file can be written in it; raise
    ``UnwritablePathError`` naming the folder and the reason (a parent that is a file, no permission, a read-only
    or virtual filesystem) instead of a traceback or a misleading error later."""
    folder = Path(folder).expanduser()
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UnwritablePathError(f"cannot write {purpose} in {folder}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sfp-rag-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UnwritablePathError(
            f"cannot write {purpose} in {folder}: {err.strerror or err} (choose a writable location)"
        ) from None
    return folder


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` in one rename.

    The old ``target`` stays in place until the new one is complete, and is removed only after the swap. A
    ``target`` that is a symbolic link is written where it points (the link stays as it is). On an exception
    (Ctrl-C included) the temporary directory is deleted and ``target`` is untouched.
    """
    target = Path(target)
    if target.is_symlink():  # write where the link points: the link keeps working and is never left stale
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out)."""
    from importlib import metadata

    out = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
