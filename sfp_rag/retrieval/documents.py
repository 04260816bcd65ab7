"""Read a folder of documents and split them into chunks, reporting every file that is skipped and why.

Files are found with LlamaIndex's ``SimpleDirectoryReader`` (recursive, hidden files left out). Rich formats are read
by LlamaIndex's file readers (``llama-index-readers-file``, the ``docs`` extra): PDF, DOCX, PPTX, EPUB, notebooks and
HTML (text of ``<body>``). Every other file is read as UTF-8 text, strictly: a binary file (a NUL byte in its first
8 KiB), a file that is not valid UTF-8, an empty one or one over the size limit is skipped with a reason instead of
being indexed as garbage. Chunks come from LlamaIndex's ``SentenceSplitter`` with the embedder's own tokenizer
counting the tokens.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

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
    """List the files under ``folder`` with their content hash; oversized and unreadable files are skipped."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DocumentError(f"documents folder {root} does not exist")
    if not root.is_dir():
        raise DocumentError(f"{root} is a file; pass the folder that holds the documents")
    from llama_index.core import SimpleDirectoryReader

    try:
        paths = SimpleDirectoryReader(input_dir=str(root), recursive=True, exclude_hidden=True).input_files
    except ValueError as err:  # "No files found in ..."
        raise DocumentError(f"documents folder {root} holds no (non-hidden) files") from err
    result = ScanResult()
    limit = int(max_file_mb * 1024 * 1024)
    for path in sorted(Path(p) for p in paths):
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        try:
            size = path.stat().st_size
            if size > limit:
                result.skipped[rel] = f"{size / 2**20:.1f} MB is over the {max_file_mb:g} MB limit (--max-file-mb)"
                continue
            result.files.append(SourceFile(path.resolve(), rel, size, file_sha256(path)))
        except OSError as err:
            result.skipped[rel] = f"unreadable: {err.strerror or err}"
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
