"""The single forward pass: run the backbone once over a prompt batch and read Rep1 and Rep2.

``SFPModel`` wraps any ``AutoModel`` backbone (plain, 4-bit or PEFT-wrapped). Position ids are computed from the
attention mask, so left- and right-padded batches give the same representations; the LM head is never run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .pooling import gather_positions, position_ids_from_mask
from .tokenization import PromptBatch

logger = logging.getLogger(__name__)


@dataclass
class SFPOutput:
    """Both views from one pass."""

    rep1: torch.Tensor  # (B, D) hidden state at the end of stage one (the positive in training)
    rep2: torch.Tensor  # (B, D) hidden state at the last token (the anchor; the embedding at inference)


class SFPModel(nn.Module):
    """A decoder-only backbone that returns the last-layer hidden states at Rep1 and Rep2."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    def hidden_states(self, batch: PromptBatch) -> torch.Tensor:
        """The last hidden layer for every token: (B, L, D)."""
        out = self.backbone(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),  # (B, L)
            use_cache=False,
        )
        return out.last_hidden_state  # (B, L, D)

    def forward(self, batch: PromptBatch) -> SFPOutput:
        hidden = self.hidden_states(batch)  # (B, L, D)
        return SFPOutput(
            rep1=gather_positions(hidden, batch.rep1_index),  # (B, D)
            rep2=gather_positions(hidden, batch.rep2_index),  # (B, D)
        )
