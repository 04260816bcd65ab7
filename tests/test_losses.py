from __future__ import annotations

import math

import pytest
import torch

from sfp_rag.training.losses import InfoNCELoss, info_nce, matryoshka_info_nce


def _loop_reference(anchor, positive, temperature):
    """InfoNCE written out row by row."""
    total = 0.0
    for i in range(anchor.shape[0]):
        sims = [
            torch.nn.functional.cosine_similarity(anchor[i], positive[j], dim=0).item() / temperature
            for j in range(positive.shape[0])
        ]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        total += log_denominator - sims[i]
    return total / anchor.shape[0]


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
def test_info_nce_equals_a_hand_written_loop(temperature):
    torch.manual_seed(0)
    a, p = torch.randn(6, 5), torch.randn(6, 5)
    assert info_nce(a, p, temperature).item() == pytest.approx(_loop_reference(a, p, temperature), rel=1e-5)


def test_perfect_alignment_gives_low_loss_and_scale_is_inverse_temperature():
    x = torch.eye(4) * 3
    assert info_nce(x, x, 0.05).item() < 1e-6
    loss = InfoNCELoss(0.05)
    assert loss.get_config_dict()["scale"] == pytest.approx(20.0)
    assert "CSE-SFP" in loss.citation


def test_bad_arguments():
    with pytest.raises(ValueError, match="both be"):
        info_nce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.zeros(3, 2), torch.zeros(3, 2), temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(-1)


def test_matryoshka_loss_is_the_mean_of_the_prefix_losses():
    torch.manual_seed(0)
    a, p = torch.randn(6, 8), torch.randn(6, 8)
    by_hand = sum(_loop_reference(a[:, :d], p[:, :d], 0.05) for d in (2, 4, 8)) / 3  # each prefix renormalised
    assert matryoshka_info_nce(a, p, [4, 2], 0.05).item() == pytest.approx(by_hand, rel=1e-5)
    assert matryoshka_info_nce(a, p, [], 0.05).item() == pytest.approx(info_nce(a, p, 0.05).item(), rel=1e-6)
    for bad in ([8], [0], [2, 9]):
        with pytest.raises(ValueError, match="between 1 and the width 7"):
            matryoshka_info_nce(a, p, bad)


def _loop_with_negatives(anchor, positive, negatives, temperature):
    """InfoNCE written out row by row, each anchor against every positive and every extra negative."""
    columns = torch.cat([positive, negatives])
    total = 0.0
    for i in range(anchor.shape[0]):
        sims = [torch.nn.functional.cosine_similarity(anchor[i], c, dim=0).item() / temperature for c in columns]
        total += math.log(sum(math.exp(s) for s in sims)) - sims[i]
    return total / anchor.shape[0]


def test_extra_negatives_are_columns_of_every_anchor():
    torch.manual_seed(1)
    a, p, n = torch.randn(5, 6), torch.randn(5, 6), torch.randn(3, 6)
    by_hand = _loop_with_negatives(a, p, n, 0.05)
    assert info_nce(a, p, 0.05, negatives=n).item() == pytest.approx(by_hand, rel=1e-5)
    assert info_nce(a, p, 0.05, negatives=n).item() > info_nce(a, p, 0.05).item()  # more columns, larger loss
    assert info_nce(a, p, 0.05, negatives=n[:0]).item() == pytest.approx(info_nce(a, p, 0.05).item(), rel=1e-6)
    widths = sum(_loop_with_negatives(a[:, :d], p[:, :d], n[:, :d], 0.05) for d in (3, 6)) / 2
    assert matryoshka_info_nce(a, p, [3], 0.05, negatives=n).item() == pytest.approx(widths, rel=1e-5)
    with pytest.raises(ValueError, match=r"negatives must be \(M, 6\)"):
        info_nce(a, p, negatives=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="one process"):
        info_nce(a, p, distributed=True, negatives=n)
