"""The documentation: the README stays a front door, and the MkDocs site builds with no warning (links, the CLI
reference generated from the click commands, the API reference generated from the docstrings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: guides and results belong in docs/"
    marker = lines.index("<!-- test-command -->")
    assert lines[marker + 1] == "```bash" and lines[marker + 2].endswith("python -m pytest")
    # every relative link points at a file that exists (the README is read on GitHub, outside the site)
    for target in re.findall(r"\]\((?!https?://)([^)#]+)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_mkdocs_build_is_strict_clean(tmp_path):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("mkdocs_click", reason="mkdocs-click is not installed (pip install -e '.[dev]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert all(f"sfp-rag {c}" in cli for c in ("index", "query", "ask", "serve", "train", "eval beir"))
    api = (tmp_path / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "if_exists" in api and "cosine" in api  # generated from today's docstrings
