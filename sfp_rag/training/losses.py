"""The contrastive objective: InfoNCE with in-batch negatives over cosine similarities.

Row i of ``anchor`` should be most similar to row i of ``positive``; every other positive in the batch is a negative.
CSE-SFP uses Rep2 (the last token) as the anchor and Rep1 (the end of stage one) as the positive, with temperature
0.05, i.e. similarities are scaled by 1/0.05 = 20.

Across processes (torchrun), ``gather_with_grad`` concatenates every rank's embeddings so each rank sees the global
batch as negatives; the local slice keeps its gradient. See ``info_nce(..., distributed=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CITATION = """@inproceedings{zhang2025csesfp,
  title={CSE-SFP: Enabling Unsupervised Sentence Representation Learning via a Single Forward Pass},
  author={Zhang, Bowen and Song, Zixin and Li, Chunping},
  booktitle={SIGIR},
  year={2025}
}"""


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``x`` concatenated (rank order), with this rank's slice still attached to the graph.

    Returns:
        ``(gathered (world*B, D), offset)`` where ``offset`` is the first row of this rank's slice.
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # all_gather returns copies without grad; put the live tensor back
    return torch.cat(parts, dim=0), rank * x.shape[0]


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    temperature: float = 0.05,
    distributed: bool = False,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE loss of a batch: cross-entropy of each anchor against all positives (and ``negatives``).

    Args:
        anchor: (B, D) embeddings (Rep2 in CSE-SFP).
        positive: (B, D) embeddings (Rep1); row i is the positive of anchor i.
        temperature: similarities are divided by it (0.05 means a scale of 20).
        distributed: gather both sides across torch.distributed ranks first (the loss is the global-batch loss on
            every rank; gradients reach only this rank's rows).
        negatives: (M, D) extra negatives of every anchor (hard negatives), after the positives as columns; not
            with ``distributed``.
    """
    if anchor.shape != positive.shape or anchor.ndim != 2:
        raise ValueError(
            f"anchor and positive must both be (B, D), got {tuple(anchor.shape)} and {tuple(positive.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if negatives is not None and (negatives.ndim != 2 or negatives.shape[1] != anchor.shape[1]):
        raise ValueError(f"negatives must be (M, {anchor.shape[1]}), got {tuple(negatives.shape)}")
    if distributed:
        if negatives is not None:
            raise ValueError("extra negatives are not gathered across processes: train them in one process")
        anchor, _ = gather_with_grad(anchor)  # (W*B, D)
        positive, _ = gather_with_grad(positive)  # (W*B, D)
    scale = 1.0 / temperature
    a = F.normalize(anchor.float(), dim=-1)  # (N, D)
    p = F.normalize(positive.float(), dim=-1)  # (N, D)
    if negatives is not None:
        p = torch.cat([p, F.normalize(negatives.float(), dim=-1)])  # (N + M, D)
    logits = scale * a @ p.T  # (N, N + M): cosine similarity / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)  # (N,): the diagonal holds the positives
    return F.cross_entropy(logits, labels)


def matryoshka_info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    dims: tuple[int, ...] | list[int],
    temperature: float = 0.05,
    distributed: bool = False,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE on the whole vectors and on each prefix of ``dims`` dimensions, averaged (Matryoshka representation
    learning, Kusupati et al., NeurIPS 2022): the first ``d`` dimensions, renormalised, embed on their own.

    Args:
        dims: the shorter widths, each below the full width (the full width is always included); empty: plain
            ``info_nce``.
        negatives: extra negatives, cut to each width as the others (see ``info_nce``).
    """
    width = anchor.shape[-1]
    if any(not 0 < d < width for d in dims):
        raise ValueError(f"matryoshka dims must be between 1 and the width {width - 1}, got {list(dims)}")
    if distributed:  # gather once: every width then sees the global batch
        if negatives is not None:
            raise ValueError("extra negatives are not gathered across processes: train them in one process")
        anchor, _ = gather_with_grad(anchor)
        positive, _ = gather_with_grad(positive)
    widths = sorted(set(dims)) + [width]
    cut = (lambda d: None) if negatives is None else (lambda d: negatives[:, :d])
    losses = [info_nce(anchor[:, :d], positive[:, :d], temperature, negatives=cut(d)) for d in widths]
    return torch.stack(losses).mean()


class InfoNCELoss(nn.Module):
    """``info_nce`` as a module, with its settings and citation."""

    citation = CITATION

    def __init__(self, temperature: float = 0.05, distributed: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.distributed = distributed

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return info_nce(anchor, positive, self.temperature, self.distributed)

    def get_config_dict(self) -> dict:
        return {"temperature": self.temperature, "scale": 1.0 / self.temperature, "similarity": "cosine"}
