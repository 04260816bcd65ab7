"""The torch side of the OpenVINO runtime: ``OpenVINOBackbone``, a compiled model standing in for a transformers
backbone inside ``SFPModel`` (see ``openvino_runtime``)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .._utils import require
from .openvino_runtime import _INSTALL, CompiledModel, exported_model_dir, precision_name


class OpenVINOBackbone(nn.Module):
    """A stand-in for a transformers ``AutoModel`` inside ``SFPModel``: ``forward(input_ids=...)`` returns an object
    with ``last_hidden_state`` (float32, on the CPU). It has no parameters to train and runs on the CPU only."""

    runtime = "openvino"

    def __init__(self, compiled: CompiledModel) -> None:
        super().__init__()
        self.compiled = compiled
        self.folder, self.precision, self.version = compiled.folder, compiled.precision, compiled.version
        self.config = SimpleNamespace(hidden_size=compiled.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, position_ids=None, use_cache=False, **_: Any):
        if attention_mask is not None or position_ids is not None:
            raise ValueError(
                "the openvino runtime takes right-padded batches only (the encoder's default); a left-padded batch "
                "needs runtime='torch'"
            )
        hidden = self.compiled.infer(input_ids.detach().cpu().numpy())  # (B, L, D)
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))

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
    return OpenVINOBackbone(CompiledModel(exported_model_dir(model, adapter_digest, load), precision_name(dtype)))
