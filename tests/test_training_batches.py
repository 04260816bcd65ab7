"""Batch composition and memory: TAS-B topic batches and GradCache, each against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfp_rag.training.checkpoints import latest_checkpoint
from sfp_rag.training.config import TrainConfig
from sfp_rag.training.sampling import (
    TOPICS_NAME,
    TopicBatchOrder,
    kmeans_labels,
    load_topics,
    save_topics,
)
from sfp_rag.training.trainer import ObjectiveStep, build_peft_model, train
from tests.test_training import SENTENCES, _config


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


# --- topic batches ----------------------------------------------------------------------------------------------


def test_topic_batches_use_every_text_once_per_epoch_and_stay_in_one_cluster():
    labels = np.repeat(np.arange(5), 8)[np.random.default_rng(0).permutation(40)]  # 5 clusters of 8, shuffled
    order = TopicBatchOrder(labels, batch_size=8, seed=3)
    epoch0 = [order(i) for i in range(order.per_epoch)]
    assert order.per_epoch == 5
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(40))  # every text exactly once
    assert all(len(set(labels[b].tolist())) == 1 for b in epoch0)  # cluster size == batch size: one topic each
    again = TopicBatchOrder(labels, batch_size=8, seed=3)
    assert all((again(i) == epoch0[i]).all() for i in range(5))  # depends on (labels, seed, i) only
    assert any(not (order(5 + i) == epoch0[i]).all() for i in range(5))  # a new epoch reshuffles


def test_topic_batches_with_uneven_clusters_drop_only_the_remainder():
    labels = np.array([0] * 13 + [1] * 3 + [2] * 7)  # 23 texts, batch 4: 5 batches, 3 texts dropped per epoch
    order = TopicBatchOrder(labels, batch_size=4, seed=0)
    rows = np.concatenate([order(i) for i in range(order.per_epoch)])
    assert order.per_epoch == 5 and len(set(rows.tolist())) == 20
    # laid end to end, a batch spans at most two clusters unless a cluster is smaller than a batch
    spans = [len(set(labels[order(i)].tolist())) for i in range(order.per_epoch)]
    assert max(spans) <= 3 and spans.count(1) >= 2
    with pytest.raises(ValueError, match="batch_size"):
        TopicBatchOrder(np.zeros(3, dtype=int), batch_size=4, seed=0)


def test_kmeans_labels_recover_separated_topics():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 16, dtype=np.float32) * 5
    x = np.concatenate([c + 0.1 * rng.standard_normal((25, 16)) for c in centers]).astype(np.float32)
    labels = kmeans_labels(x, 4, seed=1)
    groups = labels.reshape(4, 25)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 4
    with pytest.raises(ValueError, match="topic clusters"):
        kmeans_labels(x, 1000, seed=1)


def test_topics_file_round_trip_and_mismatch(tmp_path):
    labels = np.array([2, 0, 1, 1])
    save_topics(tmp_path, labels)
    np.testing.assert_array_equal(load_topics(tmp_path, 4), labels)
    assert load_topics(tmp_path, 5) is None  # made for other texts: cluster again
    assert load_topics(tmp_path / "none", 4) is None
    assert not list(tmp_path.glob(".*tmp"))


def test_topic_batch_training_saves_its_clusters_and_resumes_exactly(tiny_model_dir, data_file, tmp_path):
    straight = []
    kw = dict(topic_clusters=4, lora_dropout=0.1)
    train(_config(tiny_model_dir, data_file, tmp_path / "a", **kw), callback=lambda s, x: straight.append(x),
          show_progress=False)  # fmt: skip
    labels = np.load(tmp_path / "a" / TOPICS_NAME)
    assert labels.shape == (len(SENTENCES),) and len(set(labels.tolist())) > 1

    resumed = []

    def crash(step, loss):
        resumed.append(loss)
        if step == 4:
            raise KeyboardInterrupt

    config = _config(tiny_model_dir, data_file, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=crash, show_progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "step-3"
    np.testing.assert_array_equal(np.load(tmp_path / "b" / TOPICS_NAME), labels)  # same start, same clusters
    resumed = resumed[:3]
    train(config, resume=True, callback=lambda s, x: resumed.append(x), show_progress=False)
    np.testing.assert_allclose(resumed, straight, rtol=1e-5)


def test_topic_clusters_validation(tmp_path):
    base = {"data": "x", "output_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="topic_clusters"):
        TrainConfig(**base, topic_clusters=1)
    with pytest.raises(ValueError, match="grad_cache"):
        TrainConfig(**base, grad_cache=-1)


# --- GradCache ----------------------------------------------------------------------------------------------------


def _lora_model(tiny_model_dir, tmp_path, **kw):
    from sfp_rag.embedding.modeling import SFPModel

    config = _config(tiny_model_dir, "unused.txt", tmp_path / "out", **kw)
    model, tokenizer = build_peft_model(config, "cpu", "none")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would leave every lora_A gradient zero
                p.normal_(0, 0.02)
    return config, SFPModel(model), tokenizer


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


PASSAGES = [" ".join(SENTENCES[i : i + 3]) for i in range(0, 24, 3)]  # 8 texts of three sentences


def _rep2_alone(sfp, tokenizer, config, template: str, texts: list[str]) -> torch.Tensor:
    """Rep2 of each text under ``template``, each embedded in a batch of its own: the brute-force side of the
    loss references."""
    from sfp_rag.embedding.tokenization import PromptTokenizer

    prompt = PromptTokenizer(tokenizer, template, max_text_tokens=config.max_text_tokens)
    return torch.stack([sfp(prompt([text])).rep2[0] for text in texts])


def test_ict_loss_is_query_prompt_sentence_against_document_prompt_passage(tiny_model_dir, tmp_path):
    """Brute force: the anchor is the held-out sentence under the query prompt, the positive the rest of its
    passage under the document prompt, each embedded alone (Rep2), then InfoNCE."""
    from sfp_rag.training.losses import info_nce
    from sfp_rag.training.trainer import inverse_cloze

    config, sfp, tokenizer = _lora_model(
        tiny_model_dir, tmp_path, objective="two-pass-ict", query_template="question-sum", lora_dropout=0.0
    )
    sfp.eval()
    with torch.no_grad():
        loss, _ = ObjectiveStep(config, tokenizer, "cpu", distributed=False)(sfp, PASSAGES, np.random.default_rng(4))
        rng = np.random.default_rng(4)
        pairs = [inverse_cloze(t, rng, config.ict_keep) for t in PASSAGES]
        anchor = _rep2_alone(sfp, tokenizer, config, "question-sum", [q for q, _ in pairs])
        positive = _rep2_alone(sfp, tokenizer, config, "eol-sum", [p for _, p in pairs])
        assert loss.item() == pytest.approx(info_nce(anchor, positive, 0.05).item(), abs=1e-5)
        doc_prompt_only = _rep2_alone(sfp, tokenizer, config, "eol-sum", [q for q, _ in pairs])
        assert abs(loss.item() - info_nce(doc_prompt_only, positive, 0.05).item()) > 1e-3  # the prompt matters


def test_title_loss_is_query_prompt_title_against_document_prompt_text(tiny_model_dir, tmp_path):
    """Brute force: a titled unit's anchor is its title under the query prompt and its positive the text under the
    document prompt; an untitled one gives two crops (anchor under the query prompt too); then InfoNCE."""
    from sfp_rag.training.losses import info_nce
    from sfp_rag.training.trainer import random_crop

    config, sfp, tokenizer = _lora_model(
        tiny_model_dir, tmp_path, objective="two-pass-title", query_template="question-sum", lora_dropout=0.0
    )
    titles = ["Cells and how they divide", "", "Rivers of the north", "", "A note on bread", "Old maps", "", "Tea"]
    units = [f"{t}\n{p}" if t else p for t, p in zip(titles, PASSAGES)]
    sfp.eval()
    with torch.no_grad():
        loss, _ = ObjectiveStep(config, tokenizer, "cpu", distributed=False)(sfp, units, np.random.default_rng(4))
        rng = np.random.default_rng(4)
        pairs = [(t, p) if t else (random_crop(p, rng), random_crop(p, rng)) for t, p in zip(titles, PASSAGES)]
        anchor = _rep2_alone(sfp, tokenizer, config, "question-sum", [a for a, _ in pairs])
        positive = _rep2_alone(sfp, tokenizer, config, "eol-sum", [p for _, p in pairs])
        assert loss.item() == pytest.approx(info_nce(anchor, positive, 0.05).item(), abs=1e-5)
        swapped = _rep2_alone(sfp, tokenizer, config, "eol-sum", [a for a, _ in pairs])
        assert abs(loss.item() - info_nce(swapped, positive, 0.05).item()) > 1e-3  # the prompt matters
        whole = _rep2_alone(sfp, tokenizer, config, "eol-sum", [u.replace("\n", " ") for u in units])
        assert abs(loss.item() - info_nce(anchor, whole, 0.05).item()) > 1e-3  # the title is not in the positive


def test_title_share_mixes_title_batches_with_document_prompt_crop_batches(tiny_model_dir, tmp_path):
    """Brute force: with title_share < 1 each batch draws once: below the share it is a title batch (as
    title_share=1 gives), otherwise two crops of each text without its title, both under the document prompt."""
    from sfp_rag.training.losses import info_nce
    from sfp_rag.training.trainer import random_crop

    config, sfp, tokenizer = _lora_model(
        tiny_model_dir, tmp_path, objective="two-pass-title", query_template="question-sum", lora_dropout=0.0
    )
    config.title_share = 0.5
    titles = ["Cells and how they divide", "Rivers", "", "Maps", "Bread", "Old maps", "Tea", "Salt"]
    units = [f"{t}\n{p}" if t else p for t, p in zip(titles, PASSAGES)]
    step = ObjectiveStep(config, tokenizer, "cpu", distributed=False)
    sfp.eval()
    kinds = set()
    with torch.no_grad():
        for seed in range(6):
            loss, _ = step(sfp, units, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            if rng.random() < 0.5:
                kinds.add("titles")
                pairs = [(t, p) if t else (random_crop(p, rng), random_crop(p, rng)) for t, p in zip(titles, PASSAGES)]
                anchor = _rep2_alone(sfp, tokenizer, config, "question-sum", [a for a, _ in pairs])
            else:
                kinds.add("crops")
                first = [random_crop(p, rng) for p in PASSAGES]  # all anchors drawn, then all positives
                pairs = list(zip(first, [random_crop(p, rng) for p in PASSAGES]))
                anchor = _rep2_alone(sfp, tokenizer, config, "eol-sum", [a for a, _ in pairs])
                query_prompt = _rep2_alone(sfp, tokenizer, config, "question-sum", [a for a, _ in pairs])
                positive = _rep2_alone(sfp, tokenizer, config, "eol-sum", [p for _, p in pairs])
                assert abs(loss.item() - info_nce(query_prompt, positive, 0.05).item()) > 1e-3
            positive = _rep2_alone(sfp, tokenizer, config, "eol-sum", [p for _, p in pairs])
            assert loss.item() == pytest.approx(info_nce(anchor, positive, 0.05).item(), abs=1e-5)
    assert kinds == {"titles", "crops"}  # six draws at 0.5 saw both kinds of batch


def test_title_share_is_only_for_two_pass_title(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="title_share mixes"):
        TrainConfig(data="x", output_dir=str(tmp_path), model=str(tiny_model_dir), objective="two-pass-crops",
                    title_share=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="two-pass-crops"):
        TrainConfig(data="x", output_dir=str(tmp_path), model=str(tiny_model_dir), objective="two-pass-title",
                    title_share=0.0)  # fmt: skip


@pytest.mark.parametrize("objective", ["single-pass", "two-pass-crops", "two-pass-ict"])
def test_grad_cache_gives_the_full_batch_gradient(tiny_model_dir, tmp_path, objective):
    config, sfp, tokenizer = _lora_model(tiny_model_dir, tmp_path, objective=objective, lora_dropout=0.0)
    texts = PASSAGES if objective == "two-pass-ict" else SENTENCES[:8]
    full = ObjectiveStep(config, tokenizer, "cpu", distributed=False)
    loss_full, tokens_full = full.backward(sfp, texts, np.random.default_rng(5), scale=0.5)
    reference = _grads(sfp)
    config.grad_cache = 3  # sub-batches of 3, 3 and 2 rows
    cached = ObjectiveStep(config, tokenizer, "cpu", distributed=False)
    loss_cached, tokens_cached = cached.backward(sfp, texts, np.random.default_rng(5), scale=0.5)
    got = _grads(sfp)
    assert loss_cached.item() == pytest.approx(loss_full.item(), rel=1e-5) and tokens_cached == tokens_full
    assert reference.keys() == got.keys() and len(got) > 0
    for name in reference:
        torch.testing.assert_close(got[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for n, g in got.items() if "lora_A" in n)


def test_grad_cache_replays_the_same_dropout_masks(tiny_model_dir, tmp_path):
    """With dropout on, the second (graph-building) pass must see the masks of the first (cached) pass, or the
    cached gradients belong to other embeddings."""
    config, sfp, tokenizer = _lora_model(tiny_model_dir, tmp_path, objective="two-pass-dropout", lora_dropout=0.3)
    config.grad_cache = 4
    calls = []

    class Recording(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch):
            out = self.inner(batch)
            calls.append(out.rep2.detach().clone())
            return out

    torch.manual_seed(1)
    ObjectiveStep(config, tokenizer, "cpu", distributed=False).backward(Recording(sfp), SENTENCES[:8])
    assert len(calls) == 8  # 2 sub-batches x 2 views, cached then replayed
    for first, replay in zip(calls[:4], calls[4:]):
        torch.testing.assert_close(first, replay)
    assert not torch.allclose(calls[0], calls[1])  # the two views do differ (dropout is on)


def test_grad_cache_training_follows_the_plain_run(tiny_model_dir, data_file, tmp_path):
    """Without dropout the random stream plays no part, so a GradCache run is the plain run step for step; with
    dropout the masks are drawn per sub-batch, so the two runs are equally valid but not equal."""
    straight, cached = [], []
    train(_config(tiny_model_dir, data_file, tmp_path / "a", lora_dropout=0.0),
          callback=lambda s, x: straight.append(x), show_progress=False)  # fmt: skip
    train(_config(tiny_model_dir, data_file, tmp_path / "b", lora_dropout=0.0, grad_cache=3),
          callback=lambda s, x: cached.append(x), show_progress=False)  # fmt: skip
    np.testing.assert_allclose(cached, straight, rtol=1e-4)  # the same run, at 3 rows' activation memory
