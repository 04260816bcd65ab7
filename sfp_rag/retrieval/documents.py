"""Read a folder of documents and split them into chunks, reporting every file that is skipped and why.

Files are found by walking the folder (recursive, hidden files left out; symlinks, unreadable folders and index
folders inside are reported, not silently dropped or followed out of the folder). Rich formats are read
by LlamaIndex's file readers (``llama-index-readers-file``, the ``docs`` extra): PDF, DOCX, PPTX, EPUB, notebooks and
HTML (text of ``<body>``). Every other file is read as UTF-8 text, strictly: a binary file (a NUL byte in its first
8 KiB), a file that is not valid UTF-8, an empty one or one over the size limit is skipped with a reason instead of
being indexed as garbage. Chunks come from LlamaIndex's ``SentenceSplitter`` with the embedder's own tokenizer
counting the tokens.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._utils import quiet_third_party
from .index_folder import is_index_folder

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_MB = 20.0
_RICH_READERS = {  # suffix -> class name in llama_index.readers.file
    ".pdf": "PDFReader",
    ".docx": "DocxReader",
    ".pptx": "PptxReader",
    ".epub": "EpubReader",
    ".ipynb": "IPYNBReader",
    ".html": "HTMLTagReader",
    ".htm": "HTMLTagReader",
}


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    relpath: str  # relative to the docs folder, "/"-separated: the id used in the index
    size: int
    sha256: str


@dataclass(frozen=True)
class Chunk:
    source: str  # relpath of the file
    index: int  # position of the chunk within its file
    start: int | None  # character span in the file's extracted text
    end: int | None
    text: str


@dataclass
class ScanResult:
    files: list[SourceFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # relpath -> reason


class DocumentError(ValueError):
    """The documents folder cannot be used at all (missing, not a folder, nothing in it)."""


# --- finding files ---------------------------------------------------------------------------------------------


def scan_folder(folder: str | Path, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> ScanResult:
    """List the files under ``folder`` with their content hash; what is left out is listed with the reason.

    Hidden files and folders are left out silently (as LlamaIndex's ``SimpleDirectoryReader`` does). Everything else
    that is not indexed gets a reason: files over the size limit, unreadable files and folders, symlinks that lead
    outside ``folder`` or to a file already listed (each real file is indexed once), symlinked folders (not
    followed) and sfp-rag index folders inside ``folder``.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise DocumentError(f"documents folder {root} does not exist")
    if not root.is_dir():
        raise DocumentError(f"{root} is a file; pass the folder that holds the documents")
    real_root = root.resolve()
    result = ScanResult()
    limit = int(max_file_mb * 1024 * 1024)
    seen: dict[Path, str] = {}  # real path -> relpath it is indexed under
    candidates: list[tuple[str, Path]] = []

    def unreadable(err: OSError) -> None:
        rel = Path(err.filename).absolute().relative_to(root.absolute()).as_posix() if err.filename else "?"
        result.skipped[rel + "/"] = f"unreadable folder: {err.strerror or err}"

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        for d in sorted(dirnames):
            sub = here / d
            rel = sub.relative_to(root).as_posix()
            if d.startswith("."):
                dirnames.remove(d)
            elif sub.is_symlink():
                result.skipped[rel + "/"] = "symlink to a folder: not followed (index the real folder instead)"
            elif is_index_folder(sub):
                dirnames.remove(d)
                result.skipped[rel + "/"] = "an sfp-rag index folder: not indexed as documents"
        candidates.extend(((here / f).relative_to(root).as_posix(), here / f) for f in filenames if f[0] != ".")
    # plain files first, so that a symlink is the alias and the real file keeps its own name
    candidates.sort(key=lambda c: (c[1].is_symlink(), c[0]))
    for rel, path in candidates:
        try:
            real = path.resolve(strict=True)
            if real != real_root and real_root not in real.parents:
                result.skipped[rel] = "symlink to a file outside the documents folder: not followed"
                continue
            if not real.is_file():
                result.skipped[rel] = "not a regular file"
                continue
            if real in seen:
                result.skipped[rel] = f"alias of {seen[real]} (a symlink to a file already indexed)"
                continue
            size = real.stat().st_size
            if size > limit:
                result.skipped[rel] = f"{size / 2**20:.1f} MB is over the {max_file_mb:g} MB limit (--max-file-mb)"
                continue
            result.files.append(SourceFile(real, rel, size, file_sha256(real)))
            seen[real] = rel
        except OSError as err:
            result.skipped[rel] = f"unreadable: {err.strerror or err}"
    if not result.files and not result.skipped:
        raise DocumentError(f"documents folder {root} holds no (non-hidden) files")
    result.files.sort(key=lambda f: f.relpath)
    return result


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- reading -----------------------------------------------------------------------------------------------


class SkipFile(Exception):
    """Raised by ``read_text`` with the reason a file cannot be indexed."""


_reader_cache: dict[str, object] = {}


def _rich_reader(suffix: str):
    name = _RICH_READERS.get(suffix)
    if name is None:
        return None
    if suffix not in _reader_cache:
        try:
            with quiet_third_party():  # one of its reader modules calls logging.basicConfig at import
                import llama_index.readers.file as readers
        except ImportError:
            return None
        cls = getattr(readers, name)
        _reader_cache[suffix] = cls(tag="body") if name == "HTMLTagReader" else cls()
    return _reader_cache[suffix]


def read_text(file: SourceFile) -> str:
    """The text of one file; raises ``SkipFile`` with a reason when it cannot be indexed."""
    suffix = file.path.suffix.lower()
    reader = _rich_reader(suffix)
    if reader is not None:
        try:
            with quiet_third_party():  # a reader logs its own complaints; the reason is reported as a skip
                docs = reader.load_data(file.path)
        except Exception as err:  # a reader fails in its own ways (corrupt PDF, bad zip, ...)
            raise SkipFile(f"{suffix} reader failed: {type(err).__name__}: {err}") from err
        text = "\n\n".join(d.text for d in docs)
    else:
        try:
            raw = file.path.read_bytes()
        except OSError as err:
            raise SkipFile(f"unreadable: {err.strerror or err}") from err
        if b"\x00" in raw[:8192]:
            hint = " (install sfp-rag[docs] to read this format)" if suffix in _RICH_READERS else ""
            raise SkipFile(f"binary file{hint}")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise SkipFile(
                f"not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); convert it to UTF-8"
            ) from err
    if not text.strip():
        raise SkipFile("empty (no text)")
    return text
