"""Run the backbone with OpenVINO on a CPU: the same vectors, in about half the time.

``runtime="auto"`` (the default) uses OpenVINO where it is installed (``pip install 'sfp-rag[openvino]'``), the
device is the CPU and the weights are not 4-bit; ``runtime="torch"`` keeps PyTorch. The first use of a model (a
backbone plus its merged adapter) exports it once with ``torch.export`` and converts it to an OpenVINO model in the
cache (about 40 s for Gemma-3-270M); later loads read it, and OpenVINO's own compiled-model cache makes a cold start
take a fraction of a second. The precision follows ``dtype`` (bf16 where the CPU has fast bf16, else f32).

Measured on a 2-core Xeon with AMX (``benchmarks/encode_speed.py``, ``benchmarks/index_query.py``): 2.3x the chunks/s
of the torch bf16 path; the vectors agree with torch's to a cosine above 0.999, so an index built by one runtime is
searched by the other (the manifest records which made it).

Only right-padded batches run here (the encoder's default): the exported graph takes token ids alone.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import atomic_directory, cache_dir, require
from .config import RUNTIMES

logger = logging.getLogger(__name__)

_PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
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


def precision_name(dtype: torch.dtype) -> str:
    return _PRECISIONS[dtype]


# --- export -----------------------------------------------------------------------------------------------------


class _LastHidden(nn.Module):
    """What is exported: token ids in, the last hidden layer out (no mask: right padding needs none)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, use_cache=False).last_hidden_state


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
    import openvino as ov
    from filelock import FileLock

    from .backbones import model_digest, resolve_model_dir

    name = Path(resolve_model_dir(model)).name
    version = ov.__version__.split("-")[0]
    key = f"{name}-{model_digest(model)[:16]}-{adapter_digest or 'base'}-ov{version}"
    target = cache_dir() / "openvino" / key
    failed = target.with_name(key + ".failed")
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


def _export(backbone: nn.Module, model: str, target: Path) -> None:
    import openvino as ov
    from torch.export import Dim, export

    example = torch.ones(2, 16, dtype=torch.long)
    shapes = ({0: Dim("batch", min=1, max=1 << 16), 1: Dim("length", min=2, max=1 << 15)},)
    with torch.no_grad():
        program = export(_LastHidden(backbone).eval(), (example,), dynamic_shapes=shapes)
    converted = ov.convert_model(program)
    with atomic_directory(target) as tmp:
        ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=True)  # fp16 weights: half the disk
        source = {"model": model, "hidden_size": int(backbone.config.hidden_size),
                  "openvino": ov.__version__, "torch": torch.__version__}  # fmt: skip
        (tmp / "sfp_source.json").write_text(json.dumps(source, indent=2))


# --- the backbone --------------------------------------------------------------------------------------------


class OpenVINOBackbone(nn.Module):
    """A stand-in for a transformers ``AutoModel`` inside ``SFPModel``: ``forward(input_ids=...)`` returns an object
    with ``last_hidden_state`` (float32, on the CPU). It has no parameters to train and runs on the CPU only."""

    runtime = "openvino"

    def __init__(self, folder: Path, precision: str) -> None:
        super().__init__()
        import openvino as ov

        source = json.loads((folder / "sfp_source.json").read_text())
        self.folder = folder
        self.config = SimpleNamespace(hidden_size=source["hidden_size"])
        self.precision = precision
        self.version = ov.__version__.split("-")[0]
        properties = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",  # one batch at a time on every core
            "CACHE_DIR": str(folder / "compiled"),  # the compiled model: a cold start reads it (0.3 s, not 2-4 s)
        }
        self._compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", properties)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, used by one thread at a time

    def forward(self, input_ids: torch.Tensor, attention_mask=None, position_ids=None, use_cache=False, **_: Any):
        if attention_mask is not None or position_ids is not None:
            raise ValueError(
                "the openvino runtime takes right-padded batches only (the encoder's default); a left-padded batch "
                "needs runtime='torch'"
            )
        ids = np.ascontiguousarray(input_ids.detach().cpu().numpy(), dtype=np.int64)
        with self._lock:
            hidden = self._request.infer({0: ids})[0]  # copied out of the request's buffer
        return SimpleNamespace(last_hidden_state=torch.from_numpy(np.asarray(hidden, dtype=np.float32)))

    def _apply(self, fn, recurse=True):  # .to("cuda") would silently keep running on the CPU: refuse it
        probe = fn(torch.empty(0))
        if probe.device.type != "cpu":
            raise ValueError("the openvino runtime runs on the CPU; load the encoder with runtime='torch' for "
                             f"{probe.device.type}")  # fmt: skip
        return self


def load_openvino_backbone(
    model: str, adapter_digest: str | None, dtype: torch.dtype, load: Callable[[], nn.Module]
) -> OpenVINOBackbone:
    """The OpenVINO backbone of ``model`` (+ adapter), converted on first use with ``load`` (see
    ``exported_model_dir``), compiled for ``dtype``'s precision."""
    require("openvino", "The OpenVINO runtime", _INSTALL)
    return OpenVINOBackbone(exported_model_dir(model, adapter_digest, load), precision_name(dtype))
