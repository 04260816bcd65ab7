"""Read a folder of documents and split them into chunks, reporting every file that is skipped and why.

Files are found by walking the folder (recursive, hidden files left out; symlinks, unreadable folders and index
folders inside are reported, not silently dropped or followed out of the folder). Rich formats are read
by LlamaIndex's file readers (``llama-index-readers-file``, the ``docs`` extra): PDF, DOCX, PPTX, EPUB and notebooks;
without the extra those files are skipped with the hint to install it. HTML is read the same way by every install:
its text, with tags stripped by the standard library's parser and scripts, styles and other non-text elements
dropped (``html_text``). Every other file is read as UTF-8 text, strictly: a binary file (a NUL byte in its first
8 KiB), a file that is not valid UTF-8, an empty one or one over the size limit is skipped with a reason instead of
being indexed as garbage. Chunks come from LlamaIndex's ``SentenceSplitter`` with the embedder's own tokenizer
counting the tokens.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
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
}
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


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
    """The LlamaIndex reader for a rich format; raises ``SkipFile`` with the install hint without the extra."""
    name = _RICH_READERS[suffix]
    if suffix not in _reader_cache:
        try:
            with quiet_third_party():  # one of its reader modules calls logging.basicConfig at import
                import llama_index.readers.file as readers
        except ImportError:
            raise SkipFile(f"{suffix} files need the docs extra: pip install 'sfp-rag[docs]'") from None
        _reader_cache[suffix] = getattr(readers, name)()
    return _reader_cache[suffix]


# --- HTML ---------------------------------------------------------------------------------------------------------

_HIDDEN_TAGS = {"script", "style", "noscript", "template", "svg", "math", "head", "iframe", "object"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "td", "th", "tr", "ul", "title",
}  # fmt: skip


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML page: the <title>, then the body's text, a line break at each block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0  # depth inside elements whose content is not text (scripts, styles, <head>, ...)
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _HIDDEN_TAGS:
            self._hidden += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _HIDDEN_TAGS and self._hidden:
            self._hidden -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The readable text of an HTML page: tags stripped, scripts, styles and the <head> dropped (its <title> kept
    as the first line), entities decoded, one line per block element, runs of spaces collapsed."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    title = " ".join("".join(parser.title).split())
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    body = "\n".join(line for line in lines if line)
    return f"{title}\n\n{body}" if title and not body.startswith(title) else body


def read_text(file: SourceFile) -> str:
    """The text of one file; raises ``SkipFile`` with a reason when it cannot be indexed."""
    suffix = file.path.suffix.lower()
    if suffix in _RICH_READERS:
        reader = _rich_reader(suffix)
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
        text = _decode(raw)
        if suffix in HTML_SUFFIXES:
            text = html_text(text)
    if not visible(text):
        raise SkipFile("empty (no visible text)")
    return text


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _decode(raw: bytes) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 where the file starts with its byte-order mark."""
    if raw.startswith(_UTF16_BOMS):
        try:
            return raw.decode("utf-16")  # the BOM says the byte order and is dropped
        except UnicodeDecodeError as err:
            raise SkipFile(f"starts with a UTF-16 byte-order mark but is not valid UTF-16 ({err.reason}); "
                           "convert it to UTF-8") from err  # fmt: skip
    if b"\x00" in raw[:8192]:
        raise SkipFile("binary file (or UTF-16 without a byte-order mark: convert it to UTF-8)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SkipFile(f"not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); convert it to UTF-8") from err


def visible(text: str) -> bool:
    """Whether ``text`` holds anything a reader would see: not only whitespace, zero-width or other format and
    control characters (Unicode categories Z*, Cf, Cc, Cs, Co, Cn)."""
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "ZC" for ch in text)
