"""Training text for unsupervised contrastive learning: load sentences from files, datasets or corpora.

Accepted sources (``load_texts``):

- a text file, one sentence per line (``.gz`` is decompressed); empty lines are skipped;
- a JSONL file (``.jsonl``, ``.jsonl.gz``) with the text in ``text_field``;
- a Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk``, or ``hf:NAME`` for ``load_dataset``;
- a BEIR folder (``corpus.jsonl[.gz]``): title and text of every document, split into sentences;
- any other folder: its documents (see ``documents.py``), split into sentences.

Folders give sentences by default; ``units="documents"`` keeps each document whole (whitespace-normalised), the
text that ``two-pass-crops`` and ``two-pass-ict`` cut their views from. ``units="titled"``
(``two-pass-title``) keeps the title apart: ``"title\ntext"`` (``TITLE_BREAK``; whitespace-normalised text holds no
newline) for a document with a title (a BEIR corpus's ``title`` field, a JSONL record's ``title``), its text alone
otherwise (a plain folder, a text file).

Sentences are split with nltk's pretrained Punkt model, the one llama-index-core ships (no download). Malformed input
raises ``TrainingDataError`` naming the file and line. No labels, queries or test sentences are ever read.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._utils import require_regular_file

logger = logging.getLogger(__name__)

MIN_SENTENCE_WORDS = 3  # shorter "sentences" from corpus splitting (headings, numbers) carry no meaning


class TrainingDataError(ValueError):
    """Training text cannot be read: missing, empty, binary or malformed."""


UNITS = ("sentences", "documents", "titled")
TITLE_BREAK = "\n"  # between a title and its text in "titled" units


def load_texts(
    source: str | Path, text_field: str = "text", split: str = "train", units: str = "sentences"
) -> list[str]:
    """All training texts from ``source`` (see the module docstring), in file order; ``units`` says what a folder
    of documents gives: its sentences, its whole documents, or its whole documents with their titles apart."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    name = str(source)
    if name.startswith("hf:"):
        return _from_datasets(name[3:], text_field, split)
    path = Path(name).expanduser()
    if not path.exists():
        raise TrainingDataError(f"training data {path} does not exist (for a hub dataset write hf:NAME)")
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "state.json").exists()
            or (path / "dataset_dict.json").exists()
        ):
            return _from_datasets(str(path), text_field, split)
        corpus = _beir_corpus(path)
        pairs = _beir_documents(corpus) if corpus is not None else _folder_documents(path)
        if units == "titled":
            return titled_documents(pairs)
        documents = (". ".join(part for part in pair if part) for pair in pairs)
        return split_sentences(documents) if units == "sentences" else whole_documents(documents)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        records = _jsonl_records(path, text_field)
        if units == "titled":
            return titled_documents(records)
        texts = [text for _, text in records if text]
    else:
        texts = list(_lines(path))
    if not texts:
        raise TrainingDataError(f"{path} holds no text (only empty lines)")
    return texts


# --- files ----------------------------------------------------------------------------------------------------


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, gzip-decompressed when it ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    require_regular_file(path, "training data")
    if path.stat().st_size == 0:
        raise TrainingDataError(f"{path} is empty")
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if b"\x00" in raw:
                    raise TrainingDataError(f"{path}:{lineno}: binary data (NUL byte); pass a UTF-8 text file")
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise TrainingDataError(f"{path}:{lineno}: not UTF-8 ({err.reason}); convert the file") from None
    except (gzip.BadGzipFile, EOFError) as err:
        raise TrainingDataError(f"{path} is not a valid gzip file ({err})") from None


def _lines(path: Path) -> Iterator[str]:
    skipped = 0
    for _, line in _open_text(path):
        line = line.strip()
        if line:
            yield line
        else:
            skipped += 1
    if skipped:
        logger.info("%s: skipped %d empty lines", path, skipped)


def _jsonl_records(path: Path, field: str) -> Iterator[tuple[str, str]]:
    """(its ``title`` or "", its ``field``) of every record, both stripped."""
    for lineno, line in _open_text(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TrainingDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise TrainingDataError(f"{path}:{lineno}: no string field {field!r} (choose it with --text-field)")
        title = record.get("title")
        yield (title.strip() if isinstance(title, str) else ""), record[field].strip()


def _from_datasets(name: str, field: str, split: str) -> list[str]:
    from .._utils import require

    require("datasets", "Reading a Hugging Face dataset", "pip install 'sfp-rag[train]'")
    import datasets

    try:
        if Path(name).is_dir():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        raise TrainingDataError(f"cannot load dataset {name!r}: {err}") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise TrainingDataError(f"dataset {name!r} has splits {list(ds)}, not {split!r} (choose with --split)")
        ds = ds[split]
    if field not in ds.column_names:
        raise TrainingDataError(f"dataset {name!r} has columns {ds.column_names}, not {field!r} (use --text-field)")
    return [t.strip() for t in ds[field] if isinstance(t, str) and t.strip()]


# --- corpora split into sentences --------------------------------------------------------------------------------


def _beir_corpus(folder: Path) -> Path | None:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _beir_documents(corpus: Path) -> Iterator[tuple[str, str]]:
    """(title, text) of every document."""
    for lineno, line in _open_text(corpus):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise TrainingDataError(f"{corpus}:{lineno}: not valid JSON ({err.msg})") from None
        yield (doc.get("title") or "").strip(), (doc.get("text") or "").strip()


def _folder_documents(folder: Path) -> Iterator[tuple[str, str]]:
    """("", text) of every readable document: files carry no title."""
    from ..retrieval.documents import SkipFile, read_text, scan_folder

    scan = scan_folder(folder)
    for f in scan.files:
        try:
            yield "", read_text(f)
        except SkipFile as reason:
            logger.info("skipping %s: %s", f.relpath, reason)


def whole_documents(documents: Iterable[str], min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """Each document as one whitespace-normalised text (very short ones dropped)."""
    out = [" ".join(doc.split()) for doc in documents if len(doc.split()) >= min_words]
    if not out:
        raise TrainingDataError("the corpus yielded no document of at least 3 words")
    return out


def titled_documents(pairs: Iterable[tuple[str, str]], min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """``"title\ntext"`` for each (title, text) with a title, the text alone without one (both whitespace-
    normalised); documents whose text has fewer than ``min_words`` words are dropped (a title needs a passage)."""
    out = []
    for title, text in pairs:
        title, text = " ".join(title.split()), " ".join(text.split())
        if len(text.split()) >= min_words:
            out.append(f"{title}{TITLE_BREAK}{text}" if title else text)
    if not out:
        raise TrainingDataError("the corpus yielded no document of at least 3 words")
    return out


def split_sentences(documents: Iterable[str], min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """Sentences of ``documents`` (Punkt), whitespace-normalised, without very short fragments."""
    from ..retrieval.chunking import sentences_of

    out = [sentence for doc in documents for sentence in sentences_of(doc, min_words)]
    if not out:
        raise TrainingDataError("the corpus yielded no sentences of at least 3 words")
    return out
