"""Build an index from a folder of documents (``build_index``); ``searcher`` answers queries over the result.

``build_index`` is incremental: files whose content hash is unchanged keep their chunks and vectors, new and changed
files are read, chunked and embedded, deleted ones are dropped. It is safe to interrupt: vectors are saved in shards
as they are computed (``vector_store``), so the next run resumes, and the index folder is replaced in one rename
only once the new one is complete. A lock file keeps a second writer out.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_directory, atomic_write_json, ensure_writable_dir, package_versions
from .chunking import iter_chunks, make_splitter
from .documents import DEFAULT_MAX_FILE_MB, Chunk, scan_folder
from .faiss_index import DEFAULT_FACTORY, FaissIndex
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
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    hybrid: bool = False,
    show_progress: bool | None = None,
) -> BuildReport:
    """Index the files under ``docs_dir`` into ``out_dir`` (created or updated in place, atomically).

    Args:
        docs_dir: folder of documents (read recursively; see ``documents.py`` for formats).
        encoder: an ``SFPEncoder``.
        out_dir: the index folder, e.g. ``indexes/docs``.
        chunk_size, chunk_overlap: chunk length and overlap in tokens of the encoder's tokenizer.
        factory: FAISS index factory string (``Flat``, ``HNSW32``, ``IVF256,PQ32``, ...).
        rebuild: ignore an existing index instead of updating it (needed to switch encoder or index type).
        max_file_mb: skip files larger than this.
        hybrid: also build a BM25 index over the chunks, for ``--hybrid`` search.

    Raises:
        IndexMismatchError: ``out_dir`` holds an index of another encoder and ``rebuild`` is False.
        IndexBusyError: another process is writing ``out_dir``.
    """
    from filelock import FileLock, Timeout

    started = time.perf_counter()
    out = Path(out_dir)
    check_build_target(out, Path(docs_dir))
    ensure_writable_dir(out.parent, "the index")
    lock = FileLock(str(out.parent / f".{out.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise IndexBusyError(
            f"another process is writing {out} (lock {lock.lock_file}); wait for it to finish and run again"
        ) from None
    try:
        report = _build_locked(
            Path(docs_dir),
            encoder,
            out,
            chunk_size,
            chunk_overlap,
            factory,
            rebuild,
            max_file_mb,
            batch_size,
            hybrid,
            show_progress,
        )
    finally:
        lock.release()
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _build_locked(
    docs, encoder, out, chunk_size, chunk_overlap, factory, rebuild, max_file_mb, batch_size, hybrid, show_progress
) -> BuildReport:
    scan = scan_folder(docs, max_file_mb=max_file_mb)
    chunking = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
    old = None if rebuild else _open_previous(out, encoder)
    hybrid = hybrid or bool(old is not None and old.manifest.get("hybrid"))  # an update keeps the BM25 index
    if old is not None and old.manifest.get("chunking") != chunking:
        logger.info("chunking changed (%s -> %s): re-chunking every file", old.manifest.get("chunking"), chunking)
        old = None
    if old is not None and old.manifest["index"]["factory"] != factory:
        logger.info("index type changed to %s: the index is rebuilt from the stored vectors", factory)
    old_files = old.files if old is not None else {}

    report = BuildReport(path=str(out), skipped=dict(scan.skipped))
    reuse = {f.relpath for f in scan.files if old_files.get(f.relpath, {}).get("sha256") == f.sha256}
    todo = [f for f in scan.files if f.relpath not in reuse]
    current = {f.relpath for f in scan.files}
    report.removed = sorted(set(old_files) - current)
    report.changed = sorted(f.relpath for f in todo if f.relpath in old_files)
    report.added = sorted(f.relpath for f in todo if f.relpath not in old_files)

    splitter = make_splitter(
        lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), chunk_size, chunk_overlap
    )
    new_chunks: dict[str, list[Chunk]] = {}
    for f, chunks in iter_chunks(todo, splitter, report.skipped):
        if chunks:
            new_chunks[f.relpath] = chunks
        else:
            report.skipped[f.relpath] = "no text left after chunking"
    report.added = [r for r in report.added if r in new_chunks]
    report.changed = [r for r in report.changed if r in new_chunks]
    texts = [c.text for cs in new_chunks.values() for c in cs]
    work = out.parent / f".{out.name}.partial"
    store = ShardedVectorStore(work, encoder.dim)
    progress = _progress(len(set(texts)), show_progress, "embedding chunks")
    vectors = embed_with_store(
        texts,
        lambda t: encoder.encode_documents(t, batch_size=batch_size, show_progress_bar=False),
        store,
        encoder.fingerprint(),
        group_size=EMBED_GROUP,
        progress=progress,
    )
    progress.close()
    report.embedded = len(texts)

    indexed = [f for f in scan.files if f.relpath in reuse or f.relpath in new_chunks]
    if not indexed:
        raise IndexFolderError(f"nothing to index in {docs}: every file was skipped ({len(report.skipped)} files)")
    new_rows = {}
    pos = 0
    for rel, cs in new_chunks.items():
        new_rows[rel] = vectors[pos : pos + len(cs)]
        pos += len(cs)
    with atomic_directory(out) as tmp:
        n = sum(
            len(new_chunks[f.relpath]) if f.relpath in new_chunks else old_files[f.relpath]["chunks"] for f in indexed
        )
        matrix = np.lib.format.open_memmap(tmp / VECTORS, mode="w+", dtype=np.float32, shape=(n, encoder.dim))
        old_vectors = old.vectors() if old is not None else None
        files_table: dict[str, Any] = {}
        row = 0
        with open(tmp / DOCSTORE, "wb") as docstore:
            for f in indexed:
                if f.relpath in new_chunks:
                    cs = new_chunks[f.relpath]
                    matrix[row : row + len(cs)] = new_rows[f.relpath]
                    lines = [_docstore_line(c) for c in cs]
                else:
                    entry = old_files[f.relpath]
                    first, count = entry["first_row"], entry["chunks"]
                    matrix[row : row + count] = old_vectors[first : first + count]
                    lines = [old._docstore_lines()[i] for i in range(first, first + count)]
                    report.reused += count
                docstore.write(b"\n".join(lines) + b"\n")
                files_table[f.relpath] = {"sha256": f.sha256, "size": f.size, "first_row": row, "chunks": len(lines)}
                row += len(lines)
        matrix.flush()
        faiss_index = FaissIndex.build(np.asarray(matrix), factory)
        faiss_index.save(tmp / FAISS_FILE)
        del matrix
        atomic_write_json(tmp / FILES, files_table)
        if hybrid:
            from .bm25 import BM25Index

            BM25Index.build(_all_texts(tmp)).save(tmp / BM25_DIR)
        report.files, report.chunks = len(indexed), n
        atomic_write_json(tmp / MANIFEST, _manifest(docs, encoder, faiss_index, chunking, report, hybrid, old))
    shutil.rmtree(work, ignore_errors=True)
    return report


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


def _docstore_line(c: Chunk) -> bytes:
    import json

    return json.dumps(
        {"source": c.source, "chunk": c.index, "start": c.start, "end": c.end, "text": c.text}, ensure_ascii=False
    ).encode("utf-8")


def _all_texts(folder: Path) -> list[str]:
    import json

    return [json.loads(line)["text"] for line in (folder / DOCSTORE).read_bytes().splitlines()]


def _manifest(
    docs: Path, encoder, faiss_index: FaissIndex, chunking, report: BuildReport, hybrid: bool, old: Collection | None
) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {
        "format": FORMAT,
        "created": old.manifest.get("created", now) if old is not None else now,
        "updated": now,
        "docs_dir": str(docs.resolve()),
        "fingerprint": encoder.fingerprint(),
        "encoder": encoder_section(encoder),
        "index": {
            "factory": faiss_index.factory,
            "metric": "inner_product",
            "ntotal": faiss_index.ntotal,
            "dim": faiss_index.dim,
        },
        "chunking": chunking,
        "hybrid": hybrid,
        "corpus": {"files": report.files, "chunks": report.chunks, "skipped": report.skipped},
        "versions": package_versions(
            "sfp-rag", "torch", "transformers", "faiss-cpu", "faiss-gpu-cu12", "llama-index-core", "peft"
        ),
    }


def _progress(total: int, enabled: bool | None, desc: str):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = logger.isEnabledFor(logging.INFO)
    return tqdm(total=total, desc=desc, unit="chunk", disable=not enabled)
