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
    assert {r["name"] for r in json.loads(result.output)} >= {"gemma3-270m", "smollm2-135m"}


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
