from __future__ import annotations

import gzip
import json
import logging
import socket

import numpy as np
import pytest
import torch

from sfp_rag.embedding.modeling import SFPModel
from sfp_rag.embedding.tokenization import PromptTokenizer
from sfp_rag.training.checkpoints import latest_checkpoint, read_log
from sfp_rag.training.config import TrainConfig
from sfp_rag.training.data import TrainingDataError, load_texts
from sfp_rag.training.losses import info_nce
from sfp_rag.training.trainer import BatchOrder, TrainingDiverged, train

SENTENCES = [
    f"sentence {i} tells of {w} and {v}."
    for i, (w, v) in enumerate(
        zip(
            ["cats", "dogs", "tea", "rain", "stocks", "bread", "music", "ships"] * 8,
            ["mats", "parks", "cups", "clouds", "banks", "ovens", "songs", "ports"] * 8,
        )
    )
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n\n")
    return path


def _config(tiny_model_dir, data_file, out, **kw):
    base = dict(
        data=str(data_file),
        output_dir=str(out),
        model=str(tiny_model_dir),
        quantization="none",
        batch_size=8,
        max_steps=6,
        lr=1e-3,
        warmup_steps=0,
        save_every=3,
        log_every=1,
        device="cpu",
        dtype="float32",
    )
    return TrainConfig(**{**base, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the objective --------------------------------------------------------------------------------------------


def test_single_pass_loss_equals_hidden_states_read_by_hand(tiny_model, bpe_tokenizer):
    texts = SENTENCES[:5]
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum", max_text_tokens=32)
    items = pt.tokenize(texts)
    with torch.no_grad():
        out = SFPModel(tiny_model)(pt.collate(items))
        loss = info_nce(out.rep2, out.rep1, 0.05)
        rep1, rep2 = [], []
        for it in items:
            hidden = tiny_model(input_ids=torch.tensor([it.input_ids])).last_hidden_state[0]
            rep1.append(hidden[it.rep1])
            rep2.append(hidden[it.rep2])
        by_hand = info_nce(torch.stack(rep2), torch.stack(rep1), 0.05)
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-5)


@pytest.mark.parametrize(
    "objective",
    ["single-pass", "two-pass-dropout", "two-pass-prompts", "two-pass-crops", "two-pass-ict", "two-pass-title"],
)
def test_a_few_steps_lower_the_loss(tiny_model_dir, data_file, tmp_path, objective):
    losses = []
    config = _config(
        tiny_model_dir,
        data_file,
        tmp_path / "out",
        objective=objective,
        max_steps=12,
        max_train_texts=8,
        save_every=100,
    )  # one batch, seen 12 times
    train(config, callback=lambda step, loss: losses.append(loss), show_progress=False)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_matryoshka_dims_train_with_the_prefix_loss_and_are_recorded(tiny_model_dir, data_file, tmp_path, monkeypatch):
    import sfp_rag.training.trainer as trainer_module

    widths = []
    real = trainer_module.matryoshka_info_nce

    def spy(anchor, positive, dims, *args, **kwargs):
        widths.append((anchor.shape[1], list(dims)))
        return real(anchor, positive, dims, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "matryoshka_info_nce", spy)
    config = _config(tiny_model_dir, data_file, tmp_path / "out", max_steps=2, matryoshka_dims=[16, 8, 16])
    assert config.matryoshka_dims == [8, 16]  # sorted, once each
    train(config, show_progress=False)
    assert widths and all(w == (32, [8, 16]) for w in widths)  # every step, on the full (32-wide) vectors
    saved = json.loads((tmp_path / "out" / "sfp_config.json").read_text())
    assert saved["training"]["matryoshka_dims"] == [8, 16]
    with pytest.raises(ValueError, match="matryoshka_dims must be positive"):
        _config(tiny_model_dir, data_file, tmp_path / "bad", matryoshka_dims=[0, 8])
    with pytest.raises(ValueError, match="must be below the model's 32"):
        train(_config(tiny_model_dir, data_file, tmp_path / "wide", matryoshka_dims=[32]), show_progress=False)


def test_output_is_an_adapter_the_encoder_loads(tiny_model_dir, data_file, tmp_path):
    from sfp_rag.embedding.encoder import SFPEncoder

    out = tmp_path / "out"
    result = train(_config(tiny_model_dir, data_file, out), show_progress=False)
    assert result.steps == 6 and np.isfinite(result.final_loss)
    saved = json.loads((out / "sfp_config.json").read_text())
    assert saved["encoder"]["template"] == "eol-sum" and saved["training"]["objective"] == "single-pass"
    assert saved["training"]["steps"] == 6 and not (out / "README.md").exists()
    log = read_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "examples_per_s", "tokens_per_s"} <= set(r) for r in log)
    trained = SFPEncoder.from_pretrained(str(out), device="cpu", dtype="float32")
    base = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")
    assert trained.config.adapter == str(out)
    assert not np.allclose(trained.encode(SENTENCES[:3]), base.encode(SENTENCES[:3]), atol=1e-4)
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints


def test_every_checkpoint_is_an_adapter_the_encoder_loads(tiny_model_dir, data_file, tmp_path):
    from sfp_rag.embedding.encoder import SFPEncoder

    out = tmp_path / "out"
    train(_config(tiny_model_dir, data_file, out), show_progress=False)
    texts = SENTENCES[:3]

    def encode(path):
        return SFPEncoder.from_pretrained(str(path), device="cpu", dtype="float32").encode(texts)

    final, mid = out / "checkpoints" / "step-6", out / "checkpoints" / "step-3"
    np.testing.assert_allclose(encode(final), encode(out), atol=1e-6)  # the last checkpoint is the final adapter
    assert not np.allclose(encode(mid), encode(out), atol=1e-4)  # an earlier one is its own model
    saved = json.loads((mid / "sfp_config.json").read_text())
    assert saved["encoder"]["template"] == "eol-sum" and saved["training"]["checkpoint_step"] == 3
    (mid / "adapter_model.safetensors").unlink()  # an incompletely copied adapter is named as such
    with pytest.raises(FileNotFoundError, match="adapter_config.json but no weights"):
        SFPEncoder.from_pretrained(str(mid), device="cpu", dtype="float32")
    # a checkpoint written before checkpoints were adapters (weights as adapter.safetensors) still resumes
    config = _config(tiny_model_dir, data_file, tmp_path / "old", max_steps=6)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=lambda s, loss: _interrupt_at(s, 4), show_progress=False)
    step3 = tmp_path / "old" / "checkpoints" / "step-3"
    (step3 / "adapter_model.safetensors").rename(step3 / "adapter.safetensors")
    for name in ("adapter_config.json", "sfp_config.json"):
        (step3 / name).unlink()
    train(config, resume=True, show_progress=False)
    np.testing.assert_allclose(encode(tmp_path / "old"), encode(out), atol=1e-5)  # the same run, resumed


def _interrupt_at(step: int, at: int) -> None:
    if step == at:
        raise KeyboardInterrupt


def test_resume_continues_the_same_loss_curve(tiny_model_dir, data_file, tmp_path):
    straight = []
    train(
        _config(tiny_model_dir, data_file, tmp_path / "a", lora_dropout=0.1),
        callback=lambda s, loss: straight.append(loss),
        show_progress=False,
    )

    resumed = []

    def crash_after_step_4(step, loss):
        resumed.append(loss)
        if step == 4:
            raise KeyboardInterrupt  # killed after the step-3 checkpoint

    config = _config(tiny_model_dir, data_file, tmp_path / "b", lora_dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=crash_after_step_4, show_progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "step-3"
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, show_progress=False)
    resumed = resumed[:3]
    train(config, resume=True, callback=lambda s, loss: resumed.append(loss), show_progress=False)
    np.testing.assert_allclose(resumed, straight, rtol=1e-5)
    log = read_log(tmp_path / "b" / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # no duplicate lines from the interrupted run


def test_nan_loss_stops_with_a_clear_message(tiny_model_dir, data_file, tmp_path, monkeypatch):
    import sfp_rag.training.trainer as training

    real = training.info_nce
    calls = {"n": 0}

    def nan_at_fifth(*args, **kw):
        calls["n"] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(training, "info_nce", nan_at_fifth)
    monkeypatch.setattr(training, "_check_memory", lambda *args: None)  # its probes' losses would shift the count
    with pytest.raises(TrainingDiverged, match=r"became nan at step 5.*step-3"):
        train(_config(tiny_model_dir, data_file, tmp_path / "out"), show_progress=False)
    assert latest_checkpoint(tmp_path / "out").name == "step-3"


def test_nf4_failure_falls_back_to_plain_lora(tiny_model_dir, data_file, tmp_path, monkeypatch, caplog):
    import sfp_rag.training.trainer as training

    real = training.build_peft_model

    def no_nf4(config, device, quantization):
        if quantization == "nf4":
            raise RuntimeError("gemm_4bit is not implemented for this device")
        return real(config, device, quantization)

    monkeypatch.setattr(training, "build_peft_model", no_nf4)
    with caplog.at_level(logging.WARNING):
        train(
            _config(tiny_model_dir, data_file, tmp_path / "out", quantization="nf4", max_steps=1), show_progress=False
        )
    assert "falling back to plain LoRA" in caplog.text and "gemm_4bit is not implemented" in caplog.text
    saved = json.loads((tmp_path / "out" / "sfp_config.json").read_text())
    assert saved["training"]["quantization"] == "none"


def test_config_validation(tmp_path):
    base = {"data": "x", "output_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainConfig(**base, objective="three-pass")
    with pytest.raises(ValueError, match="two-stage template"):
        TrainConfig(**base, template="eol")
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TrainConfig(**base, batch_size=1)
    with pytest.raises(ValueError, match="eval_data"):
        TrainConfig(**base, eval_every=10)
    with pytest.raises(ValueError, match="lora_dropout"):
        TrainConfig(**base, lora_dropout=1.5)
    assert TrainConfig(**base, objective="two-pass-dropout").template == "eol"


def test_batch_order_is_a_deterministic_permutation_per_epoch():
    order = BatchOrder(10, 4, seed=1)
    epoch0 = np.concatenate([order(0), order(1)])
    assert len(set(epoch0.tolist())) == 8 and (order(0) == BatchOrder(10, 4, seed=1)(0)).all()
    assert not (order(2) == order(0)).all()  # a new epoch reshuffles
    with pytest.raises(ValueError, match="batch_size"):
        BatchOrder(3, 4, 0)


# --- multi-process (gloo) --------------------------------------------------------------------------------------


def test_two_process_gathered_loss_equals_single_process():
    import torch.multiprocessing as mp

    from tests._dist_workers import gathered_loss

    torch.manual_seed(0)
    anchor, positive = torch.randn(8, 6), torch.randn(8, 6)
    a, p = anchor.clone().requires_grad_(True), positive.clone().requires_grad_(True)
    full = info_nce(a, p, 0.05)
    full.backward()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(gathered_loss, args=(2, _free_port(), anchor, positive, out), nprocs=2, start_method="spawn")
    results = sorted(out.get(timeout=60) for _ in range(2))
    for rank, loss, a_grad, p_grad in results:
        assert loss == pytest.approx(full.item(), rel=1e-6)
        np.testing.assert_allclose(a_grad, a.grad[rank * 4 : (rank + 1) * 4].numpy(), atol=1e-6)
        np.testing.assert_allclose(p_grad, p.grad[rank * 4 : (rank + 1) * 4].numpy(), atol=1e-6)


def test_two_process_training_matches_single_process(tiny_model_dir, data_file, tmp_path):
    import torch.multiprocessing as mp

    from tests._dist_workers import train_run

    settings = dict(
        data=str(data_file),
        model=str(tiny_model_dir),
        quantization="none",
        batch_size=8,
        max_steps=3,
        lr=1e-3,
        warmup_steps=0,
        save_every=10,
        device="cpu",
        dtype="float32",
        lora_dropout=0.0,
    )
    single = []
    train(
        TrainConfig(**settings, output_dir=str(tmp_path / "one")),
        callback=lambda s, loss: single.append(loss),
        show_progress=False,
    )
    out = mp.get_context("spawn").Queue()
    mp.start_processes(
        train_run,
        args=(2, _free_port(), {**settings, "output_dir": str(tmp_path / "two")}, out),
        nprocs=2,
        start_method="spawn",
    )
    results = dict(out.get(timeout=120) for _ in range(2))
    np.testing.assert_allclose(results[0], single, rtol=1e-4)
    np.testing.assert_allclose(results[1], single, rtol=1e-4)
    assert (tmp_path / "two" / "adapter_model.safetensors").exists()


# --- training data ----------------------------------------------------------------------------------------------


def test_text_gzip_and_jsonl_sources(tmp_path, data_file):
    assert load_texts(data_file) == SENTENCES  # the trailing empty lines are skipped
    gz = tmp_path / "s.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write("one line\n\ntwo line\n")
    assert load_texts(gz) == ["one line", "two line"]
    jl = tmp_path / "s.jsonl"
    jl.write_text('{"sentence": "a b c"}\n\n{"sentence": "d e f"}\n')
    assert load_texts(jl, text_field="sentence") == ["a b c", "d e f"]


def test_bad_training_data(tmp_path):
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TrainingDataError, match="is empty"):
        load_texts(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    with pytest.raises(TrainingDataError, match="only empty lines"):
        load_texts(tmp_path / "blank.txt")
    (tmp_path / "bin.txt").write_bytes(b"ok\n\x00\x01\x02\n")
    with pytest.raises(TrainingDataError, match=r"bin.txt:2: binary data"):
        load_texts(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(TrainingDataError, match=r"latin.txt:2: not UTF-8"):
        load_texts(tmp_path / "latin.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(TrainingDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_texts(tmp_path / "bad.jsonl")
    (tmp_path / "field.jsonl").write_text('{"body": "ok"}\n')
    with pytest.raises(TrainingDataError, match="--text-field"):
        load_texts(tmp_path / "field.jsonl")
    (tmp_path / "fake.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TrainingDataError, match="not a valid gzip"):
        load_texts(tmp_path / "fake.gz")


def test_corpora_are_split_into_sentences(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    with gzip.open(beir / "corpus.jsonl.gz", "wt") as f:
        f.write(
            json.dumps({"_id": "1", "title": "Cell biology", "text": "Dr. Smith studied cells. They divide often."})
        )
        f.write("\n")
    sentences = load_texts(beir)
    assert sentences == ["Dr. Smith studied cells.", "They divide often."]  # the 2-word title is dropped
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Title\n\nThe first sentence is here. And the second one is here too!")
    assert load_texts(docs) == ["# Title The first sentence is here.", "And the second one is here too!"]
    # cropping objectives take whole documents (title and text, whitespace-normalised)
    assert load_texts(beir, units="documents") == ["Cell biology. Dr. Smith studied cells. They divide often."]
    whole = "# Title The first sentence is here. And the second one is here too!"
    assert load_texts(docs, units="documents") == [whole]
    with pytest.raises(ValueError, match="units"):
        load_texts(docs, units="paragraphs")


def test_titled_units_keep_the_title_apart(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    records = [
        {"_id": "1", "title": " Cell  biology ", "text": "Dr. Smith studied cells.\nThey divide often."},
        {"_id": "2", "title": "", "text": "No title on this one at all."},
        {"_id": "3", "title": "A title alone", "text": "too short"},  # a title needs a passage: dropped
        {"_id": "4", "title": None, "text": "The title field may be null too."},
    ]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    titled = load_texts(beir, units="titled")
    assert titled == [
        "Cell biology\nDr. Smith studied cells. They divide often.",  # whitespace-normalised, one break
        "No title on this one at all.",
        "The title field may be null too.",
    ]
    assert load_texts(beir, units="documents")[0] == "Cell biology. Dr. Smith studied cells. They divide often."
    jsonl = tmp_path / "passages.jsonl"
    jsonl.write_text(json.dumps({"title": "T", "text": "a b c d"}) + "\n" + json.dumps({"text": "e f g h"}) + "\n")
    assert load_texts(jsonl, units="titled") == ["T\na b c d", "e f g h"]
    assert load_texts(jsonl, units="documents") == ["a b c d", "e f g h"]  # unchanged: the text field only
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Title\n\nThe first sentence is here.")
    assert load_texts(docs, units="titled") == ["# Title The first sentence is here."]  # files carry no title


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a b c", "", "d e f"]}).save_to_disk(str(tmp_path / "ds"))
    assert load_texts(tmp_path / "ds") == ["a b c", "d e f"]
    with pytest.raises(TrainingDataError, match="columns"):
        load_texts(tmp_path / "ds", text_field="body")


@pytest.mark.gpu
def test_qlora_step_on_gpu(tiny_model_dir, data_file, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (QLoRA with bitsandbytes on the GPU)")
    pytest.importorskip("bitsandbytes")
    result = train(
        _config(
            tiny_model_dir, data_file, tmp_path / "gpu", quantization="nf4", device="cuda", dtype="auto", max_steps=2
        ),
        show_progress=False,
    )
    saved = json.loads((tmp_path / "gpu" / "sfp_config.json").read_text())
    assert saved["training"]["quantization"] == "nf4" and np.isfinite(result.final_loss)


def test_training_continues_from_a_trained_adapter(tiny_model_dir, data_file, tmp_path):
    first = tmp_path / "first"
    first_config = _config(
        tiny_model_dir, data_file, first, max_steps=4, save_every=10, lora_r=4, lora_alpha=8,
        query_template="question-sum",
    )  # fmt: skip
    train(first_config, show_progress=False)
    config = _config(tiny_model_dir, data_file, tmp_path / "second", max_steps=2, save_every=10)
    config = TrainConfig(**{**config.to_dict(), "model": str(first), "template": None})
    assert config.init_adapter == str(first.resolve()) and config.model == str(tiny_model_dir.resolve())
    assert config.template == "eol-sum" and config.query_template == "question-sum"  # from the adapter's config
    losses = []
    train(config, callback=lambda s, loss: losses.append(loss), show_progress=False)
    fresh = []
    train(
        _config(tiny_model_dir, data_file, tmp_path / "fresh", max_steps=1, save_every=10),
        callback=lambda s, loss: fresh.append(loss),
        show_progress=False,
    )
    assert losses[0] < fresh[0]  # it starts from the trained weights, not from zero
    saved = json.loads((tmp_path / "second" / "sfp_config.json").read_text())
    assert saved["encoder"]["model"] == str(tiny_model_dir.resolve())
    assert saved["encoder"]["query_template"] == "question-sum"  # searched as the adapter it continues was
    # the continued adapter keeps its rank, and the saved settings say so (not the defaults)
    assert (saved["training"]["lora_r"], saved["training"]["lora_alpha"]) == (4, 8)
    assert json.loads((tmp_path / "second" / "adapter_config.json").read_text())["r"] == 4


def test_export_adapter_in_fp16_keeps_the_embeddings(tiny_model_dir, data_file, tmp_path):
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.training.checkpoints import export_adapter

    train(_config(tiny_model_dir, data_file, tmp_path / "out", max_steps=3), show_progress=False)
    exported = export_adapter(tmp_path / "out", tmp_path / "shipped")
    size = (exported / "adapter_model.safetensors").stat().st_size
    assert size < 0.6 * (tmp_path / "out" / "adapter_model.safetensors").stat().st_size
    texts = SENTENCES[:4]
    a = SFPEncoder.from_pretrained(str(tmp_path / "out"), device="cpu", dtype="float32").encode(texts)
    b = SFPEncoder.from_pretrained(str(exported), device="cpu", dtype="float32").encode(texts)
    assert np.sum(a * b, axis=1).min() > 0.9999
    with pytest.raises(FileNotFoundError, match="not a trained adapter"):
        export_adapter(tmp_path, tmp_path / "x")


def test_random_crops_are_spans_of_the_text_and_reproducible():
    from sfp_rag.training.trainer import random_crop

    text = " ".join(f"w{i}" for i in range(100))
    rng = np.random.default_rng(1)
    for _ in range(200):
        crop = random_crop(text, rng, 0.1, 0.5)
        n = len(crop.split())
        assert 10 <= n <= 50 and crop in text  # a contiguous span of 10-50% of the words
    again = [random_crop(text, np.random.default_rng(7)) for _ in range(2)]
    assert again[0] == again[1]
    assert random_crop("too short here", rng) == "too short here"


def test_inverse_cloze_takes_one_sentence_out_of_its_passage():
    from sfp_rag.training.trainer import inverse_cloze

    sentences = ["The first sentence is here.", "A second one follows it.", "And a third ends the text."]
    text = " ".join(sentences)
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(60):
        query, passage = inverse_cloze(text, rng, keep=0.0)
        assert query in sentences and query not in passage
        assert passage == " ".join(s for s in sentences if s != query)  # the rest, in order
        seen.add(query)
    assert seen == set(sentences)  # every sentence can be the query
    kept = [inverse_cloze(text, rng, keep=1.0) for _ in range(10)]
    assert all(q in sentences and p == text for q, p in kept)  # keep=1: the passage stays whole
    assert inverse_cloze(text, np.random.default_rng(9)) == inverse_cloze(text, np.random.default_rng(9))
    words = " ".join(f"w{i}" for i in range(40))  # one "sentence": a span of words is the query
    query, passage = inverse_cloze(words, rng, keep=0.0)
    assert 4 <= len(query.split()) <= 12 and query in words and query not in passage
    assert len(query.split()) + len(passage.split()) == 40
    assert inverse_cloze("too short", rng) == ("too short", "too short")


def test_title_pairs_are_title_and_text_or_two_crops():
    from sfp_rag.training.trainer import title_pair

    rng = np.random.default_rng(3)
    assert title_pair("Cell biology\nDr. Smith studied cells.", rng) == ("Cell biology", "Dr. Smith studied cells.")
    text = " ".join(f"w{i}" for i in range(100))
    for _ in range(50):  # no title: two independent crops, as two-pass-crops cuts them
        a, b = title_pair(text, rng, 0.1, 0.5)
        assert a in text and b in text and 10 <= len(a.split()) <= 50 and 10 <= len(b.split()) <= 50
    assert title_pair(text, np.random.default_rng(8)) == title_pair(text, np.random.default_rng(8))


@pytest.mark.parametrize("objective", ["two-pass-crops", "two-pass-ict", "two-pass-title"])
def test_document_views_resume_the_same_loss_curve(tiny_model_dir, tmp_path, objective):
    """Crops, inverse-cloze and title pairs depend on (seed, step), so an interrupted run resumes exactly."""
    passages = tmp_path / "passages.jsonl"  # half of them titled
    passages.write_text(
        "".join(
            json.dumps({"title": f"Topic {i}" if i % 2 else "", "text": " ".join(SENTENCES[i : i + 3])}) + "\n"
            for i in range(0, 48, 3)
        )
    )
    kw = {"objective": objective, "crop_min": 0.3, "ict_keep": 0.5}
    straight = []
    config = _config(tiny_model_dir, passages, tmp_path / "a", **kw)
    train(config, callback=lambda s, loss: straight.append(loss), show_progress=False)
    resumed = []

    def crash(step, loss):
        resumed.append(loss)
        if step == 4:
            raise KeyboardInterrupt

    config = _config(tiny_model_dir, passages, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=crash, show_progress=False)
    resumed = resumed[:3]
    train(config, resume=True, callback=lambda s, loss: resumed.append(loss), show_progress=False)
    np.testing.assert_allclose(resumed, straight, rtol=1e-5)
    with pytest.raises(ValueError, match="crop_min"):
        _config(tiny_model_dir, passages, tmp_path / "c", crop_min=0.6, crop_max=0.5)
    with pytest.raises(ValueError, match="ict_keep"):
        _config(tiny_model_dir, passages, tmp_path / "c", ict_keep=1.5)
