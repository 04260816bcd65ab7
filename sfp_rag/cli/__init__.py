"""The ``sfp-rag`` command line: parses options, calls the library, prints. No logic of its own.

User errors (bad paths, missing models, malformed data) become ``click.ClickException`` (exit 1) with the library's
message; logging is configured here and nowhere else. ``core`` holds the group and the shared options; each other
module registers a family of commands on it.
"""

from __future__ import annotations

from . import eval_commands, index_commands, serve_commands, train_commands  # noqa: F401  (registers the commands)
from .core import main

__all__ = ["main"]
