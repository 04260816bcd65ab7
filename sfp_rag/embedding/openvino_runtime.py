"""Run the backbone with OpenVINO on a CPU: the same vectors, faster than PyTorch.

``runtime="auto"`` (the default) uses OpenVINO where it is installed (``pip install 'sfp-rag[openvino]'``), the
device is the CPU and the weights are not 4-bit; ``runtime="torch"`` keeps PyTorch. The first use of a model (a
backbone plus its merged adapter) exports it once with ``torch.export`` and converts it to an OpenVINO model in the
cache (about 40 s for Gemma-3-270M); later loads read it, and OpenVINO's own compiled-model cache makes a cold start
take a fraction of a second. The precision follows ``dtype`` (bf16 where the CPU has fast bf16, else f32).

Measured against the torch bf16 path (``benchmarks/index_query.py``, ``benchmarks/encode_speed.py``, 2 cores):
1.54x the chunks/s of a SciFact index build on a Xeon with AMX (2.08x the tokens/s on whole abstracts), 1.35x on an
AMD EPYC without AMX (1.50x); the vectors agree with torch's to a cosine of 0.998 or more on both, so an index built
by one runtime is searched by the other (the manifest records which made it).

Only right-padded batches run here (the encoder's default): the exported graph takes token ids alone.

This module imports neither torch nor OpenVINO until it converts or compiles a model, so the torch-free
``OpenVINOEncoder`` (``openvino_encoder.py``) can use it; the torch module around a compiled model is
``openvino_backbone.OpenVINOBackbone``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import atomic_directory, cache_dir, cpu_has_fast_bf16, normalize_dtype_name, require
from .config import RUNTIMES

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

_PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_INSTALL = "pip install 'sfp-rag[openvino]' (or: pip install openvino)"


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    return runtime


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: str, load_in_4bit: bool = False) -> str:
    """``torch`` or ``openvino`` for a configured runtime on a resolved device."""
    check_runtime(runtime)
    if runtime == "openvino":
        if device != "cpu":
            raise ValueError(f"the openvino runtime runs on the CPU, not {device!r}; pass device='cpu' or "
                             "runtime='torch'")  # fmt: skip
        if load_in_4bit:
            raise ValueError("4-bit (bitsandbytes) weights run under PyTorch only; pass runtime='torch'")
        require("openvino", "The OpenVINO runtime", _INSTALL)
        return "openvino"
    if runtime == "auto" and device == "cpu" and not load_in_4bit and openvino_installed():
        return "openvino"
    return "torch"


def precision_name(dtype: Any) -> str:
    """OpenVINO's name for a dtype (a torch dtype or its name): ``f32``, ``bf16`` or ``f16``. ``"auto"`` is what
    ``_utils.resolve_dtype`` makes of it on a CPU: bf16 where the CPU has fast bf16, else f32."""
    name = normalize_dtype_name(dtype)
    if name == "auto":
        name = "bfloat16" if cpu_has_fast_bf16() else "float32"
    return _PRECISIONS[name]


# --- conversion ---------------------------------------------------------------------------------------------


class ConversionError(RuntimeError):
    """torch.export or OpenVINO could not convert the model (``runtime="auto"`` then runs it with torch)."""


def exported_model_dir(model: str, adapter_digest: str | None, load: Callable[[], nn.Module]) -> Path:
    """The cached OpenVINO model of ``model`` with ``adapter`` merged: converted on first use (under a file lock, into
    a folder that appears complete or not at all); keyed on the weights' content and the OpenVINO version. A model
    that fails to convert is remembered (``<key>.failed``), so later loads do not spend the attempt again.

    Args:
        model: the backbone's name or path; adapter_digest: its merged adapter's digest (None: no adapter).
        load: builds the fp32 torch backbone with the adapter merged (called only to convert).
    """
    from filelock import FileLock

    from .backbones import resolve_model_dir

    target = _cache_folder(model, adapter_digest)
    failed = target.with_name(target.name + ".failed")
    name = Path(resolve_model_dir(model)).name
    if (target / "sfp_source.json").exists():
        return target
    if failed.exists():
        raise ConversionError(f"{failed.read_text(encoding='utf-8')} (remembered in {failed}; delete it to retry)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "sfp_source.json").exists():
            logger.warning("converting %s for OpenVINO once (about a minute); later loads read %s", name, target)
            try:
                _export(load(), model, target)
            except Exception as err:  # torch.export and OpenVINO raise many types for an unsupported model
                reason = f"{name} could not be converted for OpenVINO: {type(err).__name__}: {str(err)[:500]}"
                failed.write_text(reason, encoding="utf-8")
                raise ConversionError(reason) from err
    return target


def converted_model_dir(model: str, adapter_digest: str | None) -> Path | None:
    """The cached OpenVINO model of ``model`` (+ adapter) when it has been converted already, else None (nothing is
    converted here, and neither torch nor OpenVINO is imported)."""
    if not openvino_installed():
        return None
    target = _cache_folder(model, adapter_digest)
    return target if (target / "sfp_source.json").exists() else None


def _cache_folder(model: str, adapter_digest: str | None) -> Path:
    from .backbones import model_digest, resolve_model_dir

    name = Path(resolve_model_dir(model)).name
    key = f"{name}-{model_digest(model)[:16]}-{adapter_digest or 'base'}-ov{_openvino_version()}"
    return cache_dir() / "openvino" / key


def _openvino_version() -> str:
    """The installed OpenVINO's version (from the package metadata: importing OpenVINO costs 0.1 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino").split("-")[0]
    except PackageNotFoundError:
        import openvino as ov

        return ov.__version__.split("-")[0]


def _export(backbone: nn.Module, model: str, target: Path) -> None:
    import warnings

    import openvino as ov
    import torch
    from torch.export import Dim, export

    class LastHidden(torch.nn.Module):  # what is exported: token ids in, the last hidden layer out (no mask)
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.backbone(input_ids=input_ids, use_cache=False).last_hidden_state

    example = torch.ones(2, 16, dtype=torch.long)
    shapes = ({0: Dim("batch", min=1, max=1 << 16), 1: Dim("length", min=2, max=1 << 15)},)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export's own deprecations, not the user's
        program = export(LastHidden().eval(), (example,), dynamic_shapes=shapes)
        converted = ov.convert_model(program)
    with atomic_directory(target) as tmp:
        ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=True)  # fp16 weights: half the disk
        source = {"model": model, "hidden_size": int(backbone.config.hidden_size),
                  "openvino": ov.__version__, "torch": torch.__version__}  # fmt: skip
        (tmp / "sfp_source.json").write_text(json.dumps(source, indent=2))


# --- the backbone --------------------------------------------------------------------------------------------


# --- running -------------------------------------------------------------------------------------------------


class CompiledModel:
    """A converted model compiled for the CPU: ``infer(ids)`` maps int64 token ids (B, L), right-padded, to the last
    hidden layer (B, L, D) float32. One infer request, used by one thread at a time."""

    def __init__(self, folder: Path, precision: str) -> None:
        import openvino as ov

        source = json.loads((folder / "sfp_source.json").read_text())
        self.folder = folder
        self.hidden_size = int(source["hidden_size"])
        self.precision = precision
        self.version = ov.__version__.split("-")[0]
        properties = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",  # one batch at a time on every core
            "CACHE_DIR": str(folder / "compiled"),  # the compiled model: a cold start reads it (0.3 s, not 2-4 s)
        }
        self.request = ov.Core().compile_model(str(folder / "model.xml"), "CPU", properties).create_infer_request()
        self._lock = threading.Lock()

    def infer(self, ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            hidden = self.request.infer({0: ids})[0]  # a copy of the request's buffer (share_outputs is off)
        return np.asarray(hidden, dtype=np.float32)
