"""The single forward pass: run the backbone once over a prompt batch and read Rep1 and Rep2.

``SFPModel`` wraps any ``AutoModel`` backbone (plain, 4-bit or PEFT-wrapped). Right-padded batches (the default)
run without a mask, as under causal attention padding at the end cannot change a real token; left-padded batches get
the mask and position ids computed from it, so both give the same representations. The LM head is never run.
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
        """The last hidden layer for every token: (B, L, D).

        A right-padded batch goes through the backbone as if it had no padding: under causal attention a real token
        only sees the tokens before it, which are all real, so the padding mask changes nothing that is read (only
        the padded positions' own states, never gathered), and the positions are 0, 1, 2, ... as in an unpadded
        row. The backbone then takes the same path as a batch of one (SDPA's ``is_causal``, no mask materialised):
        a text's vector does not depend on the batch it is in. A left-padded batch needs the mask and the positions
        computed from it."""
        if batch.padding_side == "right":
            out = self.backbone(input_ids=batch.input_ids, use_cache=False)
        else:
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
