"""The indexes a server answers for, reopened when a build replaces them on disk.

A build writes a complete index into a temporary folder and renames it into place, so the folder's inode and its
manifest change together: a request that finds them changed reopens the index (the new one, complete), and a
half-built index is never seen. Names from requests are index names (one path component, never a path), so a client
cannot reach outside the index home; indexes given as paths at startup are served under their folder's name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..retrieval.index import list_indexes
from ..retrieval.index_folder import (
    MANIFEST,
    Collection,
    IndexFolderError,
    IndexMismatchError,
    check_index_name,
    describe_difference,
    index_home,
    looks_like_path,
    resolve_index_path,
)
from ..retrieval.searcher import Searcher

logger = logging.getLogger(__name__)


class UnknownIndex(KeyError):
    """The request names an index this server does not serve."""


class IndexRegistry:
    """``get(name)`` -> an open ``Searcher`` over the current version of that index.

    Args:
        indexes: names or paths given at startup; empty: every index in the index home (also ones built later).
        encoder: the server's encoder; an index built by another one is refused.
    """

    def __init__(self, indexes: tuple[str, ...], encoder) -> None:
        self.encoder = encoder
        self.fixed: dict[str, Path] = {}
        for entry in indexes:
            path = resolve_index_path(entry)
            name = path.name if looks_like_path(entry) else entry
            if name in self.fixed:
                raise IndexFolderError(f"two served indexes are both called {name!r}; serve one of them")
            self.fixed[name] = path
        self._open: dict[str, tuple[tuple[int, int], Searcher]] = {}

    def names(self) -> list[str]:
        if self.fixed:
            return sorted(self.fixed)
        return [row["name"] for row in list_indexes() if "error" not in row]

    def path(self, name: str | None) -> tuple[str, Path]:
        if name is None:
            names = self.names()
            if len(names) != 1:
                raise UnknownIndex(f"name the index: this server has {len(names)} ({', '.join(names) or 'none'})")
            name = names[0]
        if self.fixed:
            if name not in self.fixed:
                raise UnknownIndex(f"no index {name!r} here; this server has: {', '.join(self.names())}")
            return name, self.fixed[name]
        try:
            return name, index_home() / check_index_name(name)
        except IndexFolderError as err:
            raise UnknownIndex(str(err)) from None

    def get(self, name: str | None) -> tuple[str, Searcher]:
        name, path = self.path(name)
        try:
            key = (os.stat(path).st_ino, os.stat(path / MANIFEST).st_mtime_ns)
        except OSError:
            self._open.pop(name, None)
            raise UnknownIndex(f"no index {name!r} here; this server has: {', '.join(self.names())}") from None
        cached = self._open.get(name)
        if cached is not None and cached[0] == key:
            return name, cached[1]
        collection = Collection.open(path)
        if self.encoder is not None and self.encoder.fingerprint() != collection.fingerprint:
            difference = describe_difference(collection.manifest["encoder"]["identity"], self.encoder)
            raise IndexMismatchError(
                f"index {name!r} was built by another encoder than this server's ({difference}); serve it from a "
                f"server of its own: sfp-rag serve --index {name} --port <another port>"
            )
        searcher = Searcher(collection, self.encoder)
        if cached is not None:
            logger.info("index %s changed on disk: reloaded", name)
        self._open[name] = (key, searcher)
        return name, searcher

    def check_all(self) -> tuple[list[str], dict[str, str]]:
        """Open every served index now (at startup): the names that can be served, and for each that cannot (built
        by another encoder, damaged) the reason. One odd index does not keep the others from being served."""
        served: list[str] = []
        unavailable = {} if self.fixed else {r["name"]: r["error"] for r in list_indexes() if "error" in r}
        for name in self.names():
            try:
                self.get(name)
                served.append(name)
            except (UnknownIndex, ValueError, OSError) as err:
                unavailable[name] = str(err.args[0] if isinstance(err, UnknownIndex) else err)
        return served, unavailable
