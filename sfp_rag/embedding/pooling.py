"""Pure array functions: read hidden states at given positions, position ids from a mask, and pooling modes.

No model or tokenizer knowledge lives here. Fusion modes (``mean``, ``concat``) combine the two representations
after L2-normalising each, so neither dominates only because its hidden state has a larger norm. The torch functions
import torch when called, and each has a numpy twin (``*_numpy``) for the torch-free OpenVINO path, so importing this
module (and the configs that validate a pooling mode) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

POOLING_MODES = ("rep2", "rep1", "mean", "concat")


def check_pooling(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
    return mode


def gather_positions(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``hidden[b, index[b]]`` for every row b: (B, L, D), (B,) -> (B, D)."""
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
    return hidden[rows, index.to(hidden.device)]  # (B, D)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row, whichever side is padded: (B, L) -> (B, L)."""
    positions = attention_mask.long().cumsum(dim=1) - 1  # (B, L); -1 on left padding
    return positions.clamp(min=0)


def pool(rep1: torch.Tensor, rep2: torch.Tensor, mode: str) -> torch.Tensor:
    """Combine Rep1 and Rep2 (each (B, D)) into the embedding: (B, D), or (B, 2D) for ``concat``."""
    import torch
    import torch.nn.functional as F

    check_pooling(mode)
    if mode == "rep2":
        return rep2
    if mode == "rep1":
        return rep1
    a, b = F.normalize(rep1.float(), dim=-1), F.normalize(rep2.float(), dim=-1)  # (B, D) each
    if mode == "mean":
        return (a + b) / 2  # (B, D)
    return torch.cat([a, b], dim=-1)  # (B, 2D)


def normalize_numpy(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as ``F.normalize(x, dim=-1)`` (the same 1e-12 floor): (N, D) -> (N, D)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pool_numpy(rep1: np.ndarray, rep2: np.ndarray, mode: str) -> np.ndarray:
    """``pool`` on numpy arrays: (B, D) each -> (B, D), or (B, 2D) for ``concat``."""
    check_pooling(mode)
    if mode == "rep2":
        return rep2
    if mode == "rep1":
        return rep1
    a, b = normalize_numpy(rep1), normalize_numpy(rep2)  # (B, D) each
    return (a + b) / 2 if mode == "mean" else np.concatenate([a, b], axis=-1)


def pooled_dim(hidden_size: int, mode: str) -> int:
    return 2 * hidden_size if check_pooling(mode) == "concat" else hidden_size
