"""Regression tests for harm a hostile-but-realistic user found: each class of bad input or fault, and its cousins.

No command may delete what it did not create, run code it was handed, or write outside its home; bad input gets a
clear error that names what was wrong. Everything here runs on the tiny in-process model.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfp_rag.cli import main
from sfp_rag.retrieval.documents import scan_folder
from sfp_rag.retrieval.index_folder import IndexFolderError, resolve_index_path
from tests.test_pipeline import _build, write_docs

PACKAGE = Path(__file__).resolve().parent.parent / "sfp_rag"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    return tmp_path / "indexes"


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


def _index(docs, model_dir, *extra):
    args = ["-q", "index", str(docs), "--model", str(model_dir), "--device", "cpu", "--chunk-size", "64", *extra]
    return CliRunner().invoke(main, args)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. a rebuild replaces only an index --------------------------------------------------------------------------


def test_rebuild_never_deletes_a_folder_that_is_not_an_index(tmp_path, home, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    before = _tree(docs)
    precious = home / "notes"
    precious.mkdir(parents=True)
    (precious / "diary.txt").write_text("mine")
    (precious / "manifest.json").write_text('{"name": "a web app manifest"}')  # a manifest, but not ours
    result = _index(docs, tiny_model_dir, "--name", "notes", "--rebuild")
    assert result.exit_code == 1 and "not an sfp-rag index" in result.output
    assert (precious / "diary.txt").read_text() == "mine"
    # the documents being indexed, or a folder above them, are never the target
    for target in (docs, tmp_path):
        result = _index(docs, tiny_model_dir, "--out", str(target), "--rebuild")
        assert result.exit_code == 1 and "would replace the documents" in result.output, result.output
    assert _tree(docs) == before
    # the index home itself (it holds other indexes) is not an index either
    assert _index(docs, tiny_model_dir, "--name", "kb").exit_code == 0
    result = _index(docs, tiny_model_dir, "--out", str(home), "--rebuild")
    assert result.exit_code == 1 and "index home" in result.output
    assert (home / "kb" / "manifest.json").exists() and (precious / "diary.txt").exists()
    # a real index (a damaged one too) is rebuilt
    (home / "kb" / "manifest.json").write_text("{damaged")
    result = _index(docs, tiny_model_dir, "--name", "kb", "--rebuild")
    assert result.exit_code == 0, result.output


def test_a_file_in_the_way_is_left_alone(tmp_path, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "kb").write_text("a file")
    result = _index(docs, tiny_model_dir, "--out", str(tmp_path / "kb"), "--rebuild")
    assert result.exit_code == 1 and "is a file" in result.output
    assert (tmp_path / "kb").read_text() == "a file"


def test_an_index_inside_the_documents_is_not_indexed_as_documents(tmp_path, tiny_model_dir, encoder):
    docs = write_docs(tmp_path / "docs")
    _build(docs, encoder, docs / "idx")
    scan = scan_folder(docs)
    assert not any(f.relpath.startswith("idx/") for f in scan.files)
    assert "an sfp-rag index folder" in scan.skipped["idx/"]


# --- 2. names are names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", ".", "..", "a/b", "", "x.lock", "-rf", "a b", "é"])
def test_index_names_cannot_escape_the_home(tmp_path, home, tiny_model_dir, name):
    docs = write_docs(tmp_path / "docs")
    result = _index(docs, tiny_model_dir, "--name", name)
    assert result.exit_code == 1 and "not a valid index name" in result.output and "--out" in result.output
    assert not (home.exists() and any(home.iterdir())) and not (tmp_path / "x").exists()


def test_a_bare_name_always_means_the_index_home(tmp_path, home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()  # a folder of the same name in the current directory does not win
    assert resolve_index_path("docs") == home / "docs"
    assert resolve_index_path("./docs") == Path("./docs")
    assert resolve_index_path(str(tmp_path / "docs")) == tmp_path / "docs"
    with pytest.raises(IndexFolderError, match="not a valid index name"):
        resolve_index_path("bad name")


def test_default_name_from_an_awkward_folder_is_safe(tmp_path, home, tiny_model_dir):
    docs = write_docs(tmp_path / "My Docs (2024)")
    result = _index(docs, tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert (home / "My-Docs-2024" / "manifest.json").exists()


# --- 3. nothing is unpickled -----------------------------------------------------------------------------------


def _train_args(tmp_path, model_dir, steps="2"):
    from tests.test_training import SENTENCES

    data = tmp_path / "s.txt"
    data.write_text("\n".join(SENTENCES))
    return [
        "-q", "train", "--data", str(data), "-o", str(tmp_path / "run"), "--model", str(model_dir), "--steps", steps,
        "-b", "8", "--quantization", "none", "--device", "cpu", "--dtype", "float32", "--save-every", "1",
        "--warmup-steps", "0",
    ]  # fmt: skip


class _Exploit:
    """Unpickling this writes a file: the proof that a loader ran code it was handed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_resume_never_unpickles_and_refuses_old_pickled_checkpoints(tmp_path, tiny_model_dir):
    runner = CliRunner()
    args = _train_args(tmp_path, tiny_model_dir, steps="3")
    interrupted = [*args[:9], "2", *args[10:]]
    # a run of 2 steps written by "someone else", to be resumed to 3: only safetensors and JSON are in it
    result = runner.invoke(main, interrupted)
    assert result.exit_code == 0, result.output
    step = tmp_path / "run" / "checkpoints" / "step-2"
    assert sorted(p.name for p in step.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "sfp_config.json", "state.json", "trainer.json",
        "trainer.safetensors",
    ]  # fmt: skip
    run = json.loads((step / "state.json").read_text())["run"]
    run["max_steps"] = 3  # pretend it was interrupted on the way to 3 steps
    state = json.loads((step / "state.json").read_text())
    (step / "state.json").write_text(json.dumps({**state, "run": run}))
    assert runner.invoke(main, [*args, "--resume"]).exit_code == 0
    # a checkpoint in the old format (a pickle) is refused without being loaded
    old = tmp_path / "run" / "checkpoints" / "step-3"
    (old / "trainer.safetensors").unlink()
    marker = tmp_path / "marker"
    (old / "trainer.pt").write_bytes(pickle.dumps(_Exploit(marker)))
    result = runner.invoke(main, [*args[:9], "4", *args[10:], "--resume"])
    assert result.exit_code == 1 and "pickle" in result.output and "--model" in result.output
    assert not marker.exists()


def test_a_damaged_checkpoint_is_reported(tmp_path, tiny_model_dir):
    runner = CliRunner()
    args = _train_args(tmp_path, tiny_model_dir)
    assert runner.invoke(main, [*args[:9], "1", *args[10:]]).exit_code == 0
    step = tmp_path / "run" / "checkpoints" / "step-1"
    state = json.loads((step / "state.json").read_text())
    state["run"]["max_steps"] = 2
    (step / "state.json").write_text(json.dumps(state))
    (step / "trainer.json").write_text('{"format": "sfp-rag-trainer/1", "param_groups": "nonsense"}')
    result = runner.invoke(main, [*args, "--resume"])
    assert result.exit_code == 1 and "cannot be resumed from" in result.output and "step-1" in result.output


def _unsafe_calls(source: str) -> list[tuple[int, str]]:
    """Code (not prose) that can run what a file hands it: pickle-family imports, torch.load, yaml.load, eval/exec,
    and trust_remote_code/shell/allow_pickle set to anything but False."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in {"pickle", "cPickle", "dill", "shelve", "marshal"} for n in names):
                found.append((node.lineno, "imports a pickle-family module"))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(
                f, ast.Attribute) else "?"  # fmt: skip
            if name in {"eval", "exec", "torch.load", "yaml.load", "pickle.load", "pickle.loads"}:
                found.append((node.lineno, name))
            for kw in node.keywords:
                risky = kw.arg in {"trust_remote_code", "shell", "allow_pickle", "weights_only"}
                is_false = isinstance(kw.value, ast.Constant) and kw.value.value is False
                if risky and kw.arg != "weights_only" and not is_false:
                    found.append((node.lineno, f"{kw.arg}={ast.unparse(kw.value)}"))
    return found


def test_the_package_has_no_unsafe_loaders():
    """No pickle loads, no eval/exec, no remote code, no shell anywhere in the package: files we read are data."""
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, what in _unsafe_calls(path.read_text(encoding="utf-8"))
    ]
    assert not found, found


def test_the_unsafe_code_check_catches_what_it_should():
    bad = (
        "import pickle\nfrom dill import loads\nx = torch.load(p, weights_only=False)\neval(s)\n"
        "subprocess.run(c, shell=True)\nAutoModel.from_pretrained(m, trust_remote_code=flag)\n"
        "np.load(f, allow_pickle=True)\nyaml.load(t)\n"
    )
    assert len(_unsafe_calls(bad)) == 8
    fine = "model.eval()\nnp.load(f, allow_pickle=False)\n# torch.load( in a comment\ns = 'eval(x)'\n"
    assert _unsafe_calls(fine) == []


# --- 4. terminal injection ----------------------------------------------------------------------------------------


def test_query_escapes_terminal_controls_but_json_stays_exact(tmp_path, home, tiny_model_dir):
    docs = tmp_path / "docs"
    evil_text = "Cats \x1b[2J\x1b]0;pwned\x07 sleep \u202etxt.exe all day."
    evil_name = "evil\x1b[31m.txt"
    write_docs(docs, {evil_name: evil_text, "dogs.txt": "Dogs walk."})
    result = _index(docs, tiny_model_dir)
    assert result.exit_code == 0, result.output
    plain = CliRunner().invoke(main, ["-q", "query", "cats sleep", "-k", "2"])
    assert plain.exit_code == 0, plain.output
    assert "\x1b" not in plain.output and "\x07" not in plain.output and "\u202e" not in plain.output
    assert "evil\\x1b[31m.txt" in plain.output and "\\u202e" in plain.output
    data = json.loads(CliRunner().invoke(main, ["-q", "query", "cats sleep", "-k", "2", "--json"]).stdout)
    sources = {h["source"]: h["text"] for h in data["hits"]}
    assert sources[evil_name] == evil_text


def test_skipped_file_names_are_escaped(tmp_path, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    (docs / "bad\x1b]0;title\x07.bin").write_bytes(b"\x00\x01")
    result = _index(docs, tiny_model_dir, "--out", str(tmp_path / "kb"))
    assert result.exit_code == 0 and "\x1b" not in result.output and "bad\\x1b]0;title\\x07.bin" in result.output


# --- 5. the merged-weights cache is keyed on content ---------------------------------------------------------------


def test_two_backbones_in_folders_of_the_same_name_do_not_share_merged_weights(
    tmp_path, monkeypatch, _tiny_model_session, bpe_tokenizer
):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from sfp_rag.embedding.config import EncoderConfig
    from sfp_rag.embedding.encoder import merged_weights

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    dirs = []
    for i, sub in enumerate(("a", "b")):
        model = copy.deepcopy(_tiny_model_session)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * (i + 1))
        path = tmp_path / sub / "model"  # same folder name, different weights
        model.save_pretrained(path)
        bpe_tokenizer.save_pretrained(path)
        dirs.append(path)
    peft_model = get_peft_model(
        copy.deepcopy(_tiny_model_session), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = [
        merged_weights(EncoderConfig(model=str(d), adapter=str(tmp_path / "adapter")), torch.bfloat16) for d in dirs
    ]
    assert merged[0] != merged[1]
    from safetensors.torch import load_file

    a, b = (load_file(str(m / "model.safetensors")) for m in merged)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# --- 6. a resume that would do nothing is refused --------------------------------------------------------------------


def test_resuming_a_finished_run_is_refused_with_the_way_forward(tmp_path, tiny_model_dir):
    runner = CliRunner()
    args = _train_args(tmp_path, tiny_model_dir)
    assert runner.invoke(main, args).exit_code == 0
    adapter = (tmp_path / "run" / "adapter_model.safetensors").read_bytes()
    result = runner.invoke(main, [*args, "--resume"])
    assert result.exit_code == 1 and "already reached step 2" in result.output and "--model" in result.output
    result = runner.invoke(main, [*args[:9], "5", *args[10:], "--resume"])
    assert result.exit_code == 1 and "max_steps: 2 -> 5" in result.output
    result = runner.invoke(main, [*args[:9], "5", *args[10:-1], "3", "--resume"])  # another warmup too
    assert result.exit_code == 1 and "warmup_steps: 0 -> 3, max_steps: 2 -> 5" in result.output
    assert (tmp_path / "run" / "adapter_model.safetensors").read_bytes() == adapter


def test_training_never_writes_into_a_folder_it_did_not_make(tmp_path, tiny_model_dir):
    runner = CliRunner()
    args = _train_args(tmp_path, tiny_model_dir)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("mine")
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "thesis.tex" in result.output and "not a training run" in result.output
    (tmp_path / "run" / "thesis.tex").unlink()
    assert runner.invoke(main, args).exit_code == 0
    # continuing an adapter into its own folder would overwrite it while it is the starting point
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a finished run, cleaned up: still the adapter continued
    same = [*args]
    same[same.index("--model") + 1] = str(tmp_path / "run")
    result = runner.invoke(main, same)
    assert result.exit_code == 1 and "continues from" in result.output


# --- 7. symlinks ----------------------------------------------------------------------------------------------------


def test_symlinks_index_each_real_file_once_and_never_leave_the_folder(tmp_path, encoder):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "outside.txt").write_text("Secret text outside the folder.")
    (docs / "alias.txt").symlink_to(docs / "pets" / "cats.txt")
    (docs / "leak.txt").symlink_to(tmp_path / "outside.txt")
    (docs / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (docs / "linked-dir").symlink_to(docs / "pets")
    report = _build(docs, encoder, tmp_path / "kb")
    assert report.files == 5
    assert report.skipped["alias.txt"] == "alias of pets/cats.txt (a symlink to a file already indexed)"
    assert "outside the documents folder" in report.skipped["leak.txt"]
    assert "unreadable" in report.skipped["dangling.txt"]
    assert "not followed" in report.skipped["linked-dir/"]
    files = json.loads((tmp_path / "kb" / "files.json").read_text())
    rows = (tmp_path / "kb" / "docstore.jsonl").read_text().splitlines()
    assert sum(f["chunks"] for f in files.values()) == len(rows)
    assert "Secret" not in "".join(rows)


def test_an_unreadable_subfolder_is_listed_as_skipped(tmp_path, monkeypatch):
    """Permissions cannot be taken from root, so the walk's error is injected where os.walk reports it."""
    docs = write_docs(tmp_path / "docs")
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        for dirpath, dirnames, filenames in real_walk(top, onerror=onerror, **kw):
            if Path(dirpath).name == "finance":
                onerror(PermissionError(13, "Permission denied", dirpath))
                dirnames.clear()
                continue
            yield dirpath, dirnames, filenames

    monkeypatch.setattr("sfp_rag.retrieval.documents.os.walk", walk)
    scan = scan_folder(docs)
    assert scan.skipped["finance/"] == "unreadable folder: Permission denied"
    assert not any(f.relpath.startswith("finance/") for f in scan.files)


# --- 8. input types -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"a": 1}, TypeError, "unordered"),
        ({"a", "b"}, TypeError, "unordered"),
        (b"bytes", TypeError, "decode it first"),
        (bytearray(b"x"), TypeError, "decode it first"),
        (3, TypeError, "got int"),
        (["ok", 3], TypeError, r"texts\[1\] is int"),
        (["bad \udcff byte"], ValueError, "lone surrogate U\\+DCFF"),
    ],
)
def test_encode_accepts_only_text(tiny_encoder, value, error, message):
    with pytest.raises(error, match=message):
        tiny_encoder.encode(value)


def test_encode_still_takes_strings_lists_tuples_and_generators(tiny_encoder):
    assert tiny_encoder.encode("one").shape == (tiny_encoder.dim,)
    assert tiny_encoder.encode(("a", "b")).shape == (2, tiny_encoder.dim)
    assert tiny_encoder.encode(t for t in ["a", "b", "c"]).shape == (3, tiny_encoder.dim)


# --- also unclear before: each now a specific error ------------------------------------------------------------------


def test_unwritable_targets_say_so(tmp_path, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    (tmp_path / "afile").write_text("x")
    result = _index(docs, tiny_model_dir, "--out", str(tmp_path / "afile" / "kb"))
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    if Path("/proc/self").exists():  # a virtual filesystem: used to be reported as "another process is writing"
        result = _index(docs, tiny_model_dir, "--out", "/proc/sfp-rag-test/kb")
        assert result.exit_code == 1 and "cannot write the index" in result.output
        assert "another process" not in result.output


@pytest.mark.parametrize(
    ("part", "content", "message"),
    [
        ("manifest.json", "[1, 2]", "has format 'list'"),
        ("manifest.json", '{"format": "sfp-rag-index/1", "fingerprint": 3}', "fingerprint should be a str"),
        ("files.json", '{"a.txt": {"sha256": 1}}', "files.json is damaged"),
        ("files.json", "{oops", "files.json is damaged"),
    ],
)
def test_damaged_index_parts_name_the_file(tmp_path, encoder, tiny_model_dir, part, content, message):
    from sfp_rag.retrieval.index_folder import Collection

    docs = write_docs(tmp_path / "docs")
    _build(docs, encoder, tmp_path / "kb")
    (tmp_path / "kb" / part).write_text(content)
    with pytest.raises(IndexFolderError, match=message):
        Collection.open(tmp_path / "kb").files  # noqa: B018
    # an update over the damaged index says so too, instead of a traceback
    result = _index(docs, tiny_model_dir, "--out", str(tmp_path / "kb"), "--chunk-overlap", "8")
    assert result.exit_code == 1 and re.search(message.replace("'", "."), result.output), result.output


def test_a_damaged_bm25_index_names_its_folder(tmp_path, encoder):
    pytest.importorskip("bm25s")
    from sfp_rag.retrieval.index_folder import Collection
    from sfp_rag.retrieval.searcher import Searcher

    docs = write_docs(tmp_path / "docs")
    _build(docs, encoder, tmp_path / "kb", hybrid=True)
    for f in (tmp_path / "kb" / "bm25").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"BM25 index in .*bm25 is damaged"):
        Searcher(Collection.open(tmp_path / "kb"), encoder).search("cats", mode="hybrid")


def test_invalid_utf8_in_a_query_is_a_clear_error(tmp_path, home, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    assert _index(docs, tiny_model_dir).exit_code == 0
    result = CliRunner().invoke(main, ["-q", "query", "caf\udce9"])  # b"caf\xe9" decoded with surrogateescape
    assert result.exit_code == 1 and "lone surrogate" in result.output and "UTF-8" in result.output


def test_a_relative_adapter_path_in_a_manifest_is_explained(tmp_path, encoder):
    from sfp_rag.retrieval.searcher import Searcher

    docs = write_docs(tmp_path / "docs")
    _build(docs, encoder, tmp_path / "kb")
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    manifest["encoder"]["config"]["adapter"] = "runs/my-adapter"  # what older versions recorded
    (tmp_path / "kb" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFolderError, match="adapter 'runs/my-adapter', which does not exist here.*relative"):
        Searcher.open(tmp_path / "kb", device="cpu")


def test_adapter_paths_are_recorded_absolute(tmp_path, monkeypatch, tiny_model_dir):
    from sfp_rag.embedding.encoder import resolve_config

    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = resolve_config(str(tiny_model_dir), adapter="runs/a")
    assert config.adapter == str((tmp_path / "runs" / "a").resolve())


def test_report_on_a_file_that_is_not_a_result(tmp_path):
    for name, content in (("x.png", b"\x89PNG\r\n"), ("y.json", b'{"kind": "beir"}'), ("z.jsonl", b"[1]\n")):
        (tmp_path / name).write_bytes(content)
        result = CliRunner().invoke(main, ["report", str(tmp_path / name), "-o", str(tmp_path / "r")])
        assert result.exit_code == 1 and name in result.output and "result" in result.output, result.output


# --- round 3: no hang on parts that are not files; hints that act on the named path; links in the home ---------


@pytest.mark.parametrize("part", ["docstore.jsonl", "vectors.npy", "manifest.json", "index.faiss", "files.json"])
def test_an_index_part_that_is_not_a_regular_file_is_reported_not_opened(tmp_path, home, encoder, part):
    """A FIFO in place of a part would block any open() forever: query, list and show report it by name at once."""
    import subprocess
    import sys

    from sfp_rag.retrieval.index import list_indexes

    docs = write_docs(tmp_path / "docs")
    _build(docs, encoder, home / "kb")
    (home / "kb" / part).unlink()
    os.mkfifo(home / "kb" / part)
    code = (
        "import sys\nfrom sfp_rag.cli import main\n"
        "try:\n    main(['-q', 'query', 'cats', '--index', 'kb', '--bm25'])\nexcept SystemExit as e:\n"
        "    sys.exit(e.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"{part} is a named pipe (FIFO), not a regular file" in done.stderr, done.stderr
    (row,) = list_indexes()
    assert "named pipe" in row["error"] and "--name kb" in row["error"]
    shown = CliRunner().invoke(main, ["indexes", "show", "kb"])
    assert shown.exit_code == 1 and "not a regular file" in shown.output
    listed = CliRunner().invoke(main, ["indexes"])
    assert listed.exit_code == 0 and "damaged" in listed.output


def test_hints_act_on_the_path_the_user_named(tmp_path, home, monkeypatch):
    """Index.open("../x") suggests --out ../x, not --name x (which would build in the home); never a system folder."""
    from sfp_rag import Index

    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(IndexFolderError, match=re.escape("sfp-rag index <docs> --out ../x")):
        Index.open("../x")
    with pytest.raises(IndexFolderError, match="build one with: sfp-rag index <docs> --name kb$"):
        Index.open("kb")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "stuff.txt").write_text("x")
    with pytest.raises(IndexFolderError, match=re.escape("--out ../odd --rebuild")):
        Index.open("../odd")
    for system in ("/etc", "/", "/usr/lib", "~", "../" * 12 + "etc"):
        with pytest.raises(IndexFolderError) as err:
            Index.open(system)
        assert "system folder" in str(err.value) and "sfp-rag index <docs>" not in str(err.value), str(err.value)
    ask = CliRunner().invoke(main, ["ask", "why?", "-i", "../" * 12 + "etc"])
    assert ask.exit_code == 1 and "system folder" in ask.output and "--rebuild" not in ask.output


def test_a_link_in_the_home_is_deleted_as_a_link_and_rebuilt_through(tmp_path, home, tiny_model_dir):
    docs = write_docs(tmp_path / "docs")
    elsewhere = tmp_path / "disk" / "kb"
    assert _index(docs, tiny_model_dir, "--out", str(elsewhere)).exit_code == 0
    home.mkdir(parents=True, exist_ok=True)
    (home / "linked").symlink_to(elsewhere, target_is_directory=True)
    rebuilt = _index(docs, tiny_model_dir, "--name", "linked", "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (home / "linked").is_symlink() and (elsewhere / "manifest.json").exists()  # written where it points
    leftovers = [
        p.name for d in (home, elsewhere.parent) for p in d.iterdir() if ".old-" in p.name or ".tmp-" in p.name
    ]
    assert leftovers == []
    deleted = CliRunner().invoke(main, ["indexes", "delete", "linked", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert not (home / "linked").exists() and not (home / "linked").is_symlink()
    assert (elsewhere / "manifest.json").exists()  # the index it pointed to is never touched


def test_refusals_say_why_and_never_advise_unsafe_loading(tmp_path, home, encoder, tiny_model_dir):
    """A pickled adapter_model.bin or a vectors.npy of Python objects is refused with the reason; no message passes
    on a library's advice to load with weights_only=False or allow_pickle=True."""
    import shutil

    import numpy as np

    from sfp_rag import Index
    from sfp_rag.embedding.encoder import SFPEncoder

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["-q", "train", "--data", str(_sentences(tmp_path)), "--model",
                                       str(tiny_model_dir), "-o", str(run), "--steps", "1", "--batch-size", "4",
                                       "--warmup-steps", "0", "--quantization", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    adapter = tmp_path / "pickled"
    shutil.copytree(run, adapter, ignore=shutil.ignore_patterns("checkpoints"))
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))
    messages = []
    with pytest.raises(ValueError) as err:
        SFPEncoder.from_pretrained(str(adapter))
    messages.append(str(err.value))
    args = ["train", "--data", str(_sentences(tmp_path)), "--model", str(adapter), "-o", str(tmp_path / "more")]
    done = CliRunner().invoke(main, [*args, "--steps", "1", "--quantization", "none"])
    assert done.exit_code == 1
    messages.append(done.output)
    index = Index.create("kb", texts=["cats sleep", "dogs walk"], encoder=encoder, chunk_size=64, chunk_overlap=8,
                         show_progress=False)  # fmt: skip
    np.save(home / "kb" / "vectors.npy", np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    for mmap in (True, False):
        with pytest.raises(IndexFolderError) as err:
            Index.open("kb").collection.vectors(mmap=mmap)
        messages.append(str(err.value))
    for message in messages:
        assert "refused" in message and "can run code" in message, message
        assert not re.search(r"weights_only\s*(=|set to)\s*False|allow_pickle\s*=\s*True", message), message
    assert "adapter_model.bin" in messages[0] and "holds Python objects" in messages[2]
    assert index is not None


def _sentences(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(f"A short sentence number {i} about cats and dogs." for i in range(16)))
    return path


def _finishes(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; return what it raised (or None), failing if it is still running after ``seconds``."""
    import threading

    outcome: list = []

    def run():
        try:
            fn()
            outcome.append(None)
        except Exception as err:  # the error is what the test looks at
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} is still blocked after {seconds} s"
    return outcome[0]


def test_no_file_the_package_reads_can_hang_it_as_a_named_pipe(tmp_path, tiny_model_dir):
    """The class, beyond index parts: a model's config, an adapter's files, training data, BEIR files and vector
    shards are checked with stat before they are opened; each FIFO is named in a clear error (a shard is skipped)."""
    import shutil

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import load_beir
    from sfp_rag.retrieval.vector_store import ShardedVectorStore
    from sfp_rag.training.data import load_texts
    from tests.test_evaluation import make_beir

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "sfp_config.json").unlink(missing_ok=True)
    os.mkfifo(model / "sfp_config.json")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    os.mkfifo(adapter / "adapter_config.json")
    os.mkfifo(tmp_path / "sentences.txt")
    os.mkfifo(tmp_path / "records.jsonl")
    beir = make_beir(tmp_path / "beir", gz=False)
    (beir / "queries.jsonl").unlink()
    os.mkfifo(beir / "queries.jsonl")
    shards = tmp_path / "shards"
    shards.mkdir()
    os.mkfifo(shards / "shard-000000.npz")
    cases = {
        "the model config": lambda: SFPEncoder.from_pretrained(str(model)),
        "the adapter file": lambda: SFPEncoder.from_pretrained(str(tiny_model_dir), adapter=str(adapter)),
        "training data": lambda: load_texts(tmp_path / "sentences.txt"),
        "training data ": lambda: load_texts(tmp_path / "records.jsonl"),
        "BEIR file": lambda: load_beir(beir),
    }
    for what, fn in cases.items():
        err = _finishes(fn)
        assert err is not None and f"{what.strip()} " in str(err) and "named pipe (FIFO)" in str(err), (what, err)
    assert _finishes(lambda: ShardedVectorStore(shards, 32)) is None  # skipped with a warning, not opened
