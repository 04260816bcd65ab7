"""Write indexes: ``build_index`` (sync an index with a folder of documents) and ``update_index`` (add, replace or
delete single sources: files or texts with metadata); ``searcher`` answers queries over the result.

Every write is incremental: sources whose content hash (and metadata) is unchanged keep their chunks and vectors,
new and changed ones are read, chunked and embedded, removed ones are dropped. It is safe to interrupt: vectors are
saved in shards as they are computed (``vector_store``), so the next run resumes, and the index folder is replaced in
one rename only once the new one is complete. A lock file keeps a second writer out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import (
    atomic_directory,
    atomic_write_json,
    check_texts,
    ensure_writable_dir,
    package_versions,
    progress_bar,
)
from .centering import CENTERING_FILE, CenteredRows, Centering, fit_corpus
from .chunking import chunk_sources, make_splitter
from .documents import (
    DEFAULT_MAX_FILE_MB,
    Chunk,
    DocumentError,
    ScanResult,
    SourceFile,
    file_sha256,
    read_text,
    scan_folder,
)
from .faiss_index import AUTO, DEFAULT_FACTORY, FaissIndex, build_ondisk, choose_factory, search_defaults
from .index_folder import (
    BM25_DIR,
    DOCSTORE,
    FAISS_FILE,
    FILES,
    FORMAT,
    MANIFEST,
    VECTORS,
    Collection,
    IndexFolderError,
    IndexMismatchError,
    check_build_target,
    describe_difference,
    encoder_section,
)
from .vector_store import ShardedVectorStore, embed_with_store

logger = logging.getLogger(__name__)

REFIT_CHANGE = 0.1  # refit the centering when the corpus has grown or shrunk by more than this fraction
EMBED_GROUP = 1024  # chunks embedded (and saved for resuming) at a time; larger groups sort by length better


class IndexBusyError(RuntimeError):
    """Another process is writing the same index."""


@dataclass
class BuildReport:
    path: str
    files: int = 0
    chunks: int = 0
    embedded: int = 0  # chunks embedded by this run
    reused: int = 0  # chunks kept from the previous index
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    index_type: str = ""  # the FAISS factory string used (what "auto" chose)
    centering_s: float = 0.0  # fitting (or reusing) the corpus centering, pseudo-query embedding included
    seconds: float = 0.0  # the write (reading, chunking, embedding, indexing), without loading the model
    command_seconds: float | None = None  # set by the CLI: the whole command, the model load included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- what to index -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One item to index under a unique id (``source``): a file of a documents folder, a file given by path, or a
    text. ``read`` returns its text or raises ``SkipFile`` with the reason it cannot be indexed."""

    source: str
    sha256: str
    size: int
    read: Callable[[], str]
    metadata: dict[str, Any] | None = None


def folder_sources(scan: ScanResult) -> list[Source]:
    return [Source(f.relpath, f.sha256, f.size, functools.partial(read_text, f)) for f in scan.files]


def text_sources(
    texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict[str, Any] | None] | None = None
) -> list[Source]:
    """Texts as sources; ``ids`` default to ``text:<sha256 prefix>`` (the same text gets the same id)."""
    texts = check_texts(texts)
    ids = list(ids) if ids is not None else [f"text:{hashlib.sha256(t.encode()).hexdigest()[:16]}" for t in texts]
    metadata = list(metadata) if metadata is not None else [None] * len(texts)
    if not len(ids) == len(metadata) == len(texts):
        raise ValueError(f"got {len(texts)} texts, {len(ids)} ids and {len(metadata)} metadata entries; give one each")
    _check_ids(ids)
    return [
        Source(i, hashlib.sha256(t.encode()).hexdigest(), len(t.encode()), functools.partial(str, t), _meta(m))
        for i, t, m in zip(ids, texts, metadata)
    ]


def file_sources(paths: Sequence[str | Path], metadata: Sequence[dict[str, Any] | None] | None = None) -> list[Source]:
    """Files given one by one; each is known by its absolute path."""
    metadata = list(metadata) if metadata is not None else [None] * len(paths)
    if len(metadata) != len(paths):
        raise ValueError(f"got {len(paths)} files and {len(metadata)} metadata entries; give one each")
    out = []
    for path, meta in zip(paths, metadata):
        real = Path(path).expanduser().resolve()
        if not real.is_file():
            raise DocumentError(f"{path} is not a file")
        f = SourceFile(real, str(real), real.stat().st_size, file_sha256(real))
        out.append(Source(f.relpath, f.sha256, f.size, functools.partial(read_text, f), _meta(meta)))
    _check_ids([s.source for s in out])
    return out


def _check_ids(ids: Sequence[str]) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise ValueError(f"source ids must be unique; repeated: {dupes[:5]}")
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"source ids must be non-empty strings, got {bad[:5]!r}")


def _meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise TypeError(f"metadata must be a dict (JSON-serialisable), got {type(meta).__name__}")
    _check_keys(meta, "metadata")
    try:  # a copy that is sure to round-trip through the docstore, as standard JSON (no NaN or Infinity)
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as err:
        reason = "numbers must be finite (NaN and Infinity are not JSON)" if "JSON compliant" in str(err) else err
        raise ValueError(f"metadata must be JSON-serialisable: {reason}") from None


def _check_keys(value: Any, where: str) -> None:
    """JSON would turn a key 1 into "1" (and True into "true"): keys that are not strings are refused instead."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, got {key!r} ({type(key).__name__}); use str({key!r})")
            _check_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_keys(item, f"{where}[{i}]")


# --- building ---------------------------------------------------------------------------------------------------


def build_index(
    docs_dir: str | Path,
    encoder,
    out_dir: str | Path,
    *,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    factory: str = DEFAULT_FACTORY,
    rebuild: bool = False,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    batch_size: int = 32,
    hybrid: bool = True,
    centering: bool = True,
    ondisk: bool = False,
    embedder: Callable[[list[str]], np.ndarray] | None = None,
    show_progress: bool | None = None,
) -> BuildReport:
    """Index the files under ``docs_dir`` into ``out_dir`` (created or updated in place, atomically): afterwards the
    index holds exactly the folder's files (new and changed ones embedded, deleted ones dropped).

    Args:
        docs_dir: folder of documents (read recursively; see ``documents.py`` for formats).
        encoder: an ``SFPEncoder``.
        out_dir: the index folder, e.g. ``indexes/docs``.
        chunk_size, chunk_overlap: chunk length and overlap in tokens of the encoder's tokenizer.
        factory: FAISS index factory string (``Flat``, ``HNSW32``, ``IVF256,PQ32``, ...) or ``auto`` (by corpus
            size; the report says what it chose).
        ondisk: keep an IVF index's inverted lists on disk (``index.ivfdata``), built in shards: for corpora whose
            index does not fit in memory.
        embedder: ``texts -> vectors`` to use instead of ``encoder.encode_documents`` (e.g. a
            ``distributed.ray_engine.RayEmbedder``); it must produce the encoder's vectors. If it has a
            ``chunk_sources(sources, chunk_size, chunk_overlap)`` method, documents are read and chunked by it too
            (it must return what ``chunking.chunk_sources`` returns).
        rebuild: ignore an existing index instead of updating it (needed to switch encoder or index type).
        max_file_mb: skip files larger than this.
        hybrid: also build a BM25 index over the chunks, for ``hybrid`` (the default search, measured best) and
            ``bm25`` search; False builds a dense-only index.
        centering: center the dense side on the corpus's own statistics (``centering.py``; measured better on the
            tuning split); skipped for corpora under ``centering.MIN_CHUNKS`` chunks.

    Raises:
        IndexFolderError: ``out_dir`` cannot be used (see ``index_folder.check_build_target``).
        IndexMismatchError: ``out_dir`` holds an index of another encoder and ``rebuild`` is False.
        IndexBusyError: another process is writing ``out_dir``.
    """
    docs = Path(docs_dir)
    check_build_target(Path(out_dir), docs)
    scan = scan_folder(docs, max_file_mb=max_file_mb)
    options = dict(chunk_size=chunk_size, chunk_overlap=chunk_overlap, factory=factory, batch_size=batch_size)
    return _locked_write(
        Path(out_dir), encoder, folder_sources(scan), dict(scan.skipped), sync=True, delete=(), docs=docs,
        rebuild=rebuild, hybrid=hybrid, centering=centering, ondisk=ondisk, embedder=embedder,
        show_progress=show_progress, **options,
    )  # fmt: skip


def update_index(
    out_dir: str | Path,
    encoder,
    *,
    add: Sequence[Source] = (),
    delete: Sequence[str] = (),
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    factory: str | None = None,
    batch_size: int = 32,
    hybrid: bool | None = None,
    centering: bool | None = None,
    embedder: Callable[[list[str]], np.ndarray] | None = None,
    show_progress: bool | None = None,
    rebuild: bool = False,
) -> BuildReport:
    """Add (or replace) ``add`` and drop the sources in ``delete``; every other source stays as it is. An index that
    does not exist yet is created from ``add``. Unset options keep the index's own (chunking, factory, hybrid,
    centering). ``rebuild``: replace the index with one that holds ``add`` alone (atomically, as every write)."""
    out = Path(out_dir)
    check_build_target(out)
    delete = list(delete)
    if rebuild and delete:
        raise ValueError("rebuild replaces the whole index: there is nothing to delete from it")
    old = Collection.open(out) if (out / MANIFEST).exists() and not rebuild else None
    if old is None and delete:
        raise IndexFolderError(f"no index at {out} to delete from")
    if old is not None:
        unknown = sorted(set(delete) - set(old.files))
        if unknown:
            raise KeyError(f"not in {out}: {unknown[:5]}; list the sources with Index.info()['sources']")
    recorded = old.manifest if old is not None else {}
    chunking = recorded.get("chunking", {})
    kept = recorded.get("index", {})
    options = dict(
        chunk_size=chunk_size or chunking.get("chunk_size", 256),
        chunk_overlap=chunking.get("chunk_overlap", 32) if chunk_overlap is None else chunk_overlap,
        factory=factory or kept.get("requested", kept.get("factory", DEFAULT_FACTORY)),
        batch_size=batch_size,
        ondisk=bool(kept.get("ondisk")),
    )
    hybrid = bool(recorded.get("hybrid", True)) if hybrid is None else hybrid  # a new index: hybrid, the default
    if centering is None:  # a new index: centered, the default; one from before centering existed stays as it is
        centering = bool((recorded.get("centering") or {}).get("enabled")) if old is not None else True
    docs = recorded.get("docs_dir")
    return _locked_write(
        out, encoder, list(add), {}, sync=rebuild, delete=delete, docs=Path(docs) if docs else None, rebuild=rebuild,
        hybrid=hybrid, centering=centering, embedder=embedder, show_progress=show_progress, **options,
    )  # fmt: skip


def _locked_write(out: Path, encoder, sources, skipped, **kw) -> BuildReport:
    from filelock import FileLock, Timeout

    started = time.perf_counter()
    ensure_writable_dir(out.parent, "the index")
    lock = FileLock(str(out.parent / f".{out.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise IndexBusyError(
            f"another process is writing {out} (lock {lock.lock_file}); wait for it to finish and run again"
        ) from None
    try:
        report = _write(out, encoder, sources, skipped, **kw)
    finally:
        lock.release()
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _write(
    out: Path,
    encoder,
    sources: list[Source],
    skipped: dict[str, str],
    *,
    sync: bool,
    delete: Sequence[str],
    docs: Path | None,
    chunk_size: int,
    chunk_overlap: int,
    factory: str,
    batch_size: int,
    rebuild: bool,
    hybrid: bool,
    centering: bool = True,
    ondisk: bool = False,
    embedder: Callable[[list[str]], np.ndarray] | None = None,
    show_progress: bool | None,
) -> BuildReport:
    """The one writer behind every change. ``sync``: the index ends up holding exactly ``sources`` (a folder run);
    otherwise ``sources`` are added or replaced, ``delete`` dropped and the rest kept."""
    chunking = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
    old = None if rebuild else _open_previous(out, encoder)
    hybrid = hybrid or bool(old is not None and old.manifest.get("hybrid"))  # an update keeps the BM25 index
    if old is not None and old.manifest.get("chunking") != chunking:
        if not sync:
            raise IndexFolderError(f"{out} was chunked with {old.manifest.get('chunking')}; update it with the same")
        logger.info("chunking changed (%s -> %s): re-chunking every file", old.manifest.get("chunking"), chunking)
        old = None
    if old is not None and old.manifest["index"].get("requested", old.manifest["index"]["factory"]) != factory:
        logger.info("index type changed to %s: the index is rebuilt from the stored vectors", factory)
    old_files = old.files if old is not None else {}
    given = {s.source: s for s in sources}
    if sync:
        order = list(given)
    else:  # old order, replaced sources in place, new ones at the end
        order = [r for r in old_files if r not in delete] + [r for r in given if r not in old_files]

    def unchanged(rel: str) -> bool:
        entry = old_files.get(rel)
        if entry is None:
            return False
        s = given.get(rel)
        return s is None or (entry["sha256"] == s.sha256 and entry.get("metadata") == s.metadata)

    report = BuildReport(path=str(out), skipped=dict(skipped))
    reuse = {r for r in order if unchanged(r)}
    todo = [given[r] for r in order if r not in reuse]
    report.removed = sorted(set(old_files) - set(order))
    report.changed = sorted(s.source for s in todo if s.source in old_files)
    report.added = sorted(s.source for s in todo if s.source not in old_files)

    if hasattr(embedder, "chunk_sources"):  # e.g. Ray: documents are read and chunked on the workers
        chunked = embedder.chunk_sources(todo, chunk_size, chunk_overlap)
    else:
        splitter = make_splitter(
            lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), chunk_size, chunk_overlap
        )
        chunked = chunk_sources(todo, splitter)
    new_chunks: dict[str, list[Chunk]] = {}
    for s in todo:
        result = chunked[s.source]
        if isinstance(result, str):
            report.skipped[s.source] = result
            logger.info("skipping %s: %s", s.source, result)
        else:
            new_chunks[s.source] = result
    report.added = [r for r in report.added if r in new_chunks]
    report.changed = [r for r in report.changed if r in new_chunks]
    texts = [c.text for cs in new_chunks.values() for c in cs]
    work = out.parent / f".{out.name}.partial"
    store = ShardedVectorStore(work, encoder.dim)
    progress = progress_bar(len(set(texts)), "embedding chunks", "chunk", show_progress, logger)
    if embedder is None:
        embedder = functools.partial(encoder.encode_documents, batch_size=batch_size, show_progress_bar=False)
    vectors = embed_with_store(
        texts,
        embedder,
        store,
        encoder.fingerprint(),
        group_size=getattr(embedder, "group_size", EMBED_GROUP),
        progress=progress,
    )
    progress.close()
    report.embedded = len(texts)

    indexed = [r for r in order if r in reuse or r in new_chunks]
    if not indexed:
        if not sync and old is not None:
            raise IndexFolderError(f"this would leave {out} empty; delete the index instead (sfp-rag indexes delete)")
        where = docs if docs is not None else "the given sources"
        raise IndexFolderError(f"nothing to index in {where}: every file was skipped ({len(report.skipped)} files)")
    new_rows = {}
    pos = 0
    for rel, cs in new_chunks.items():
        new_rows[rel] = vectors[pos : pos + len(cs)]
        pos += len(cs)
    with atomic_directory(out) as tmp:
        n = sum(len(new_chunks[r]) if r in new_chunks else old_files[r]["chunks"] for r in indexed)
        matrix = np.lib.format.open_memmap(tmp / VECTORS, mode="w+", dtype=np.float32, shape=(n, encoder.dim))
        old_vectors = old.vectors() if old is not None else None
        files_table: dict[str, Any] = {}
        row = 0
        with open(tmp / DOCSTORE, "wb") as docstore:
            for rel in indexed:
                if rel in new_chunks:
                    cs, s = new_chunks[rel], given[rel]
                    matrix[row : row + len(cs)] = new_rows[rel]
                    lines = [_docstore_line(c, s.metadata) for c in cs]
                    entry = {"sha256": s.sha256, "size": s.size}
                    if s.metadata is not None:
                        entry["metadata"] = s.metadata
                else:
                    entry = dict(old_files[rel])
                    first, count = entry["first_row"], entry["chunks"]
                    matrix[row : row + count] = old_vectors[first : first + count]
                    lines = [old._docstore_lines()[i] for i in range(first, first + count)]
                    report.reused += count
                docstore.write(b"\n".join(lines) + b"\n")
                files_table[rel] = {**entry, "first_row": row, "chunks": len(lines)}
                row += len(lines)
        matrix.flush()
        chunk_texts = functools.cache(lambda: _all_texts(tmp))  # the docstore is read once, by whichever needs it
        started = time.perf_counter()
        fitted, fitted_on = (
            _centering(tmp, matrix, chunk_texts, encoder, old, batch_size) if centering else (None, None)
        )
        report.centering_s = round(time.perf_counter() - started, 2)
        centered = {"enabled": centering, "fitted": fitted_on}
        searchable = CenteredRows(matrix, fitted.documents) if fitted is not None else matrix
        if ondisk:
            chosen = choose_factory(n, encoder.dim) if factory == AUTO else factory
            faiss_index = build_ondisk(searchable, chosen, tmp)
        else:
            faiss_index = FaissIndex.build(searchable, factory)
            faiss_index.save(tmp / FAISS_FILE)
        report.index_type = faiss_index.factory
        if factory == AUTO:
            logger.info("index type auto: %s for %d vectors", faiss_index.factory, n)
        del matrix, searchable
        atomic_write_json(tmp / FILES, files_table)
        if hybrid:
            from .bm25 import BM25Index

            BM25Index.build(chunk_texts()).save(tmp / BM25_DIR)
        report.files, report.chunks = len(indexed), n
        atomic_write_json(
            tmp / MANIFEST,
            _manifest(docs, encoder, faiss_index, chunking, report, hybrid, old, factory, ondisk, centered),
        )
    shutil.rmtree(work, ignore_errors=True)
    return report


def _centering(
    tmp: Path,
    matrix: np.ndarray,
    chunk_texts: Callable[[], list[str]],
    encoder,
    old: Collection | None,
    batch_size: int,
):
    """The index's centering, saved into ``tmp``, and what the manifest records of it: the previous index's when it
    was fitted on a corpus within ``REFIT_CHANGE`` of this one's size (a small update does not re-embed the
    pseudo-queries nor read the chunk texts), else one fitted anew (None, None: the corpus is too small to fit one)."""
    n = matrix.shape[0]
    recorded = (old.manifest.get("centering") or {}) if old is not None else {}
    before = recorded.get("fitted")
    if recorded.get("enabled") and before is None and n == old.ntotal:
        return None, None  # too small to fit last time and still the same size: decided (and said) then
    close = before is not None and abs(n - before["chunks"]) <= REFIT_CHANGE * before["chunks"]
    if close and (old.path / CENTERING_FILE).exists():
        fitted, info = Centering.load(old.path / CENTERING_FILE), before
    else:
        embed = functools.partial(encoder.encode_queries, batch_size=batch_size, show_progress_bar=False)
        fitted = fit_corpus(chunk_texts(), matrix, embed)
        info = None if fitted is None else {"chunks": n, "components": fitted.components}
    if fitted is not None:
        fitted.save(tmp / CENTERING_FILE)
    return fitted, info


def _open_previous(out: Path, encoder) -> Collection | None:
    if not (out / MANIFEST).exists():  # check_build_target refused a non-empty folder that is not an index
        return None
    old = Collection.open(out)
    if old.fingerprint != encoder.fingerprint():
        raise IndexMismatchError(
            f"{out} was built by another encoder "
            f"({describe_difference(old.manifest['encoder']['identity'], encoder)}); "
            "update it with the same --model/--adapter/--template/--pooling, or pass --rebuild to re-embed everything"
        )
    return old


def _docstore_line(c: Chunk, metadata: dict[str, Any] | None = None) -> bytes:
    record = {"source": c.source, "chunk": c.index, "start": c.start, "end": c.end, "text": c.text}
    if metadata is not None:
        record["metadata"] = metadata
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def _all_texts(folder: Path) -> list[str]:
    return [json.loads(line)["text"] for line in (folder / DOCSTORE).read_bytes().splitlines()]


def _manifest(
    docs: Path | None,
    encoder,
    faiss_index: FaissIndex,
    chunking,
    report: BuildReport,
    hybrid: bool,
    old: Collection | None,
    factory: str,
    ondisk: bool,
    centering: dict[str, Any],
) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {
        "format": FORMAT,
        "created": old.manifest.get("created", now) if old is not None else now,
        "updated": now,
        "docs_dir": str(docs.resolve()) if docs is not None else None,
        "fingerprint": encoder.fingerprint(),
        "encoder": encoder_section(encoder),
        "index": {
            "factory": faiss_index.factory,
            "requested": factory,
            "search": search_defaults(faiss_index.factory),
            "ondisk": ondisk,
            "metric": "inner_product",
            "ntotal": faiss_index.ntotal,
            "dim": faiss_index.dim,
        },
        "chunking": chunking,
        "hybrid": hybrid,
        "centering": centering,  # enabled: asked for; fitted: on how many chunks (None: not centered)
        "corpus": {"files": report.files, "chunks": report.chunks, "skipped": report.skipped},
        "versions": package_versions(
            "sfp-rag", "torch", "transformers", "faiss-cpu", "faiss-gpu-cu12", "llama-index-core", "peft", "openvino"
        ),
    }
