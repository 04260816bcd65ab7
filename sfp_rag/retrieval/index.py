"""``Index``: an sfp-rag index as a Python object that mirrors the CLI (like ``llm``'s ``Collection``).

    from sfp_rag import Index

    index = Index.create("notes", docs="./notes", hybrid=True)     # sfp-rag index ./notes --name notes --hybrid
    index = Index.open("notes")                                    # a name in the index home, or a path
    index.search(["how do I reset my password?", "refunds"], k=3)  # sfp-rag query ...
    index.add(["Our office is closed on Fridays."], ids=["memo-1"], metadata=[{"kind": "memo"}])
    index.update("./notes")                                        # sfp-rag index ./notes (sync with the folder)
    index.delete(["memo-1"])
    index.info()                                                   # sfp-rag indexes show notes

The encoder is the one the index records, built on first use (never for a BM25-only search); ``build_index``,
``update_index`` and ``Searcher`` do the work.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .builder import BuildReport, build_index, file_sources, text_sources, update_index
from .index_folder import (
    MANIFEST,
    Collection,
    Hit,
    IndexFolderError,
    index_home,
    is_index_folder,
    resolve_index_path,
)
from .searcher import Searcher

logger = logging.getLogger(__name__)

IF_EXISTS = ("error", "update", "rebuild")


class Index:
    """An index folder: search it, add/update/delete sources, describe it.

    Args:
        path: the index folder (use ``Index.open``/``Index.create`` to go by name).
        encoder: an ``SFPEncoder`` to use instead of the one the index records (it must be the same encoder).
        **encoder_overrides: ``device``/``dtype`` for the recorded encoder.
    """

    def __init__(self, path: str | Path, encoder=None, **encoder_overrides: Any) -> None:
        self.path = Path(path)
        self._encoder = encoder
        self._overrides = encoder_overrides
        self._searcher: Searcher | None = None

    # --- opening -----------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, index: str | Path | None = None, encoder=None, **encoder_overrides: Any) -> Index:
        """An existing index: a name in the index home, a path, or None for the only index there."""
        path = resolve_index_path(index)
        Collection.open(path)  # fail now, with the reason, rather than at the first search
        return cls(path, encoder, **encoder_overrides)

    @classmethod
    def create(
        cls,
        index: str | Path,
        docs: str | Path | None = None,
        texts: Sequence[str] | None = None,
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        encoder=None,
        model: str | None = None,
        if_exists: str = "error",
        **options: Any,
    ) -> Index:
        """Build a new index from a documents folder or from texts.

        Args:
            index: a name (in the index home) or a path.
            docs: a folder of documents; or ``texts`` (with optional ``ids`` and ``metadata``).
            encoder, model: the encoder, or the model to build one from (default: the shipped default).
            if_exists: what to do when an index is already there: ``"error"`` (the default: refuse, so that an
                index is never changed by mistake), ``"update"`` (add, re-embed changed and drop removed sources,
                with the encoder that built it) or ``"rebuild"`` (replace it).
            **options: ``build_index`` options (``hybrid``, ``chunk_size``, ``factory``, ...).

        Raises:
            IndexFolderError: an index exists at ``index`` and ``if_exists`` is ``"error"``.
        """
        if (docs is None) == (texts is None):
            raise ValueError("give either docs (a folder) or texts")
        if if_exists not in IF_EXISTS:
            raise ValueError(f"if_exists must be one of {IF_EXISTS}, got {if_exists!r}")
        path = resolve_index_path(index)
        if is_index_folder(path):  # a folder that is not an index is refused by the builder, with its reason
            if if_exists == "error":
                raise IndexFolderError(
                    f"an index already exists at {path}; open it with Index.open({str(index)!r}), or pass "
                    "if_exists='update' to update it or if_exists='rebuild' to replace it"
                )
            if if_exists == "rebuild":
                options["rebuild"] = True
        if encoder is None:
            from ..embedding.encoder import SFPEncoder

            encoder = SFPEncoder.from_pretrained(model)
        if docs is not None:
            build_index(docs, encoder, path, **options)
        else:
            update_index(path, encoder, add=text_sources(texts, ids, metadata), **options)
        return cls(path, encoder)

    # --- parts -------------------------------------------------------------------------------------------------

    @property
    def collection(self) -> Collection:
        return self.searcher.collection

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = Searcher(Collection.open(self.path), self._encoder, **self._overrides)
        return self._searcher

    @property
    def encoder(self):
        """The encoder that built the index (loaded on first use)."""
        return self.searcher.load_encoder()

    def _changed(self, report: BuildReport) -> BuildReport:
        encoder = self._searcher.encoder if self._searcher is not None else self._encoder
        self._encoder, self._searcher = encoder, None  # reopen the new files, keep the loaded model
        return report

    # --- the CLI's verbs ---------------------------------------------------------------------------------------

    def search(
        self, queries: str | Sequence[str], k: int = 5, mode: str | None = None, **fusion: Any
    ) -> list[Hit] | list[list[Hit]]:
        """Top ``k`` chunks for a query, or a list of lists for a list of queries (see ``Searcher.search``)."""
        return self.searcher.search(queries, k, mode, **fusion)

    def update(self, docs: str | Path, **options: Any) -> BuildReport:
        """Sync with a documents folder: new and changed files are embedded, files no longer there dropped."""
        return self._changed(build_index(docs, self.encoder, self.path, **options))

    def add(
        self,
        texts: Sequence[str] | None = None,
        *,
        files: Sequence[str | Path] | None = None,
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        **options: Any,
    ) -> BuildReport:
        """Add (or replace, by id) texts or files, with optional metadata (JSON dicts, returned with every hit)."""
        if (texts is None) == (files is None):
            raise ValueError("give either texts or files")
        sources = text_sources(texts, ids, metadata) if texts is not None else file_sources(files, metadata)
        return self._changed(update_index(self.path, self.encoder, add=sources, **options))

    def delete(self, sources: str | Sequence[str]) -> BuildReport:
        """Drop sources (file paths as listed by ``info()['sources']``, or text ids)."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        return self._changed(update_index(self.path, self.encoder, delete=sources))

    def info(self) -> dict[str, Any]:
        """What ``sfp-rag indexes show`` prints: name, path, sources, chunks, model, size, dates, options."""
        return describe(self.path, sources=True)

    def __len__(self) -> int:
        return Collection.open(self.path).ntotal

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r})"


# --- listing and deleting indexes ------------------------------------------------------------------------------


def describe(path: str | Path, sources: bool = False) -> dict[str, Any]:
    """A summary of the index folder at ``path`` (``sources``: also list every source)."""
    coll = Collection.open(Path(path))
    m = coll.manifest
    encoder = m["encoder"]["config"]
    out = {
        "name": coll.path.name,
        "path": str(coll.path),
        "documents": len(coll.files),
        "chunks": coll.ntotal,
        "model": encoder.get("model"),
        "adapter": encoder.get("adapter"),
        "template": encoder.get("template"),
        "query_template": encoder.get("query_template"),  # None: queries use the template
        "hybrid": coll.has_bm25,
        "centered": bool((m.get("centering") or {}).get("fitted")),
        "index_type": m["index"]["factory"],
        "bytes": sum(f.stat().st_size for f in coll.path.rglob("*") if f.is_file()),
        "created": m.get("created"),
        "updated": m.get("updated"),
        "docs_dir": m.get("docs_dir"),
        "chunking": m.get("chunking"),
    }
    if sources:
        out["sources"] = sorted(coll.files)
    return out


def list_indexes(home: str | Path | None = None) -> list[dict[str, Any]]:
    """Every index in the index home (damaged ones are listed with their error)."""
    home = Path(home) if home is not None else index_home()
    rows = []
    for child in sorted(home.iterdir()) if home.is_dir() else []:
        if not child.is_dir() or child.name.startswith(".") or not (child / MANIFEST).exists():
            continue
        try:
            rows.append(describe(child))
        except (IndexFolderError, OSError, ValueError) as err:
            rows.append({"name": child.name, "path": str(child), "error": str(err)})
    return rows


def delete_index(index: str | Path) -> Path:
    """Delete an index folder: only one that carries an sfp-rag manifest (a damaged index included). An entry that
    is a symbolic link is removed as a link: the folder it points to is never touched."""
    path = resolve_index_path(index)
    if not path.exists() and not path.is_symlink():
        raise IndexFolderError(f"no index at {path}")
    if path.is_symlink():  # a link to an index elsewhere: the link goes, the index it points to stays
        if path.exists() and not is_index_folder(path):
            raise IndexFolderError(f"{path} links to {os.readlink(path)}, which is not an sfp-rag index; left alone")
        path.unlink()
        return path
    if not path.is_dir() or not is_index_folder(path):
        raise IndexFolderError(f"{path} is not an sfp-rag index (no manifest of ours); it is left alone")
    shutil.rmtree(path)
    for leftover in (path.parent / f".{path.name}.partial", path.parent / f".{path.name}.lock"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return path
