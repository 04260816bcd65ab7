"""Turn texts into padded prompt batches with the token positions of Rep1 and Rep2 for every row.

Positions come from the fast tokenizer's ``offset_mapping`` on the rendered prompt: Rep1 is the token that ends
where stage one ends, Rep2 the token that ends where the prompt ends. Nothing depends on the model's name or on a
distance measured once, so special tokens (a BOS, an appended EOS) and any merge behaviour are handled per row.

Only the text slot is truncated, to ``max_text_tokens`` tokens counted inside the rendered prompt; the template is
never cut. Simplification: a text that needs cutting is cut at a token boundary and tokenized again in context, which
can leave it one token off the limit when the cut changes how its last characters merge.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._utils import check_texts
from .prompts import PromptTemplate, RenderedPrompt, get_template, normalize_sentence

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PADDING_SIDES = ("right", "left")


@dataclass
class PromptBatch:
    """A padded batch of prompts and, per row, where to read Rep1 and Rep2."""

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long, 1 on real tokens
    rep1_index: torch.Tensor  # (B,) long, position of the last stage-one token
    rep2_index: torch.Tensor  # (B,) long, position of the last prompt token
    padding_side: str = "right"  # where the padding is: right padding needs no mask in a causal model

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(*(t.to(device, non_blocking=True) for t in self.tensors()), padding_side=self.padding_side)

    def pin_memory(self) -> PromptBatch:
        """The batch in page-locked memory, so that ``to(cuda)`` copies without blocking the host."""
        return PromptBatch(*(t.pin_memory() for t in self.tensors()), padding_side=self.padding_side)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.input_ids, self.attention_mask, self.rep1_index, self.rep2_index

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class TokenizedPrompt:
    """One prompt's token ids (unpadded) and the indices of its Rep1 and Rep2 tokens."""

    input_ids: list[int]
    rep1: int
    rep2: int
    truncated: bool = False


class PromptTokenizer:
    """Render texts into a template, tokenize them, and find Rep1/Rep2.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (offsets are required).
        template: a ``PromptTemplate``, a preset name or a template string.
        max_text_tokens: cut the text slot to this many tokens (None: never cut).
        normalize_text: apply ``prompts.normalize_sentence`` to every text first.
    """

    def __init__(
        self,
        tokenizer,
        template: str | PromptTemplate,
        *,
        max_text_tokens: int | None = 32,
        normalize_text: bool = True,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; Rep1/Rep2 positions need offset mappings. "
                "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if max_text_tokens is not None and max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be a positive integer or None, got {max_text_tokens}")
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.max_text_tokens = max_text_tokens
        self.normalize_text = normalize_text
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)

    # --- tokenizing -----------------------------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str]) -> list[TokenizedPrompt]:
        texts = check_texts(texts)
        if self.normalize_text:
            texts = [normalize_sentence(t) for t in texts]
        rendered = [self.template.render(t) for t in texts]
        out: list[TokenizedPrompt | None] = [None] * len(texts)
        redo: list[int] = []
        for i, (r, encoding) in enumerate(zip(rendered, self._encode(rendered))):
            item, cut = self._examine(r, encoding)
            if cut is None:
                out[i] = item
            else:
                texts[i] = texts[i][:cut]
                redo.append(i)
        if redo:
            again = [self.template.render(texts[i]) for i in redo]
            for i, r, encoding in zip(redo, again, self._encode(again)):
                item = self._examine(r, encoding, cut=False)[0]
                out[i] = TokenizedPrompt(item.input_ids, item.rep1, item.rep2, truncated=True)
            logger.debug("cut %d of %d texts to %s tokens", len(redo), len(texts), self.max_text_tokens)
        return out  # type: ignore[return-value]

    def _encode(self, rendered: list[RenderedPrompt]) -> list:
        """The Rust tokenizer's ``Encoding`` of each prompt (what the transformers call computes, without turning
        every offset into a Python tuple: positions are looked up in Rust, where most of the time went)."""
        backend = self.tokenizer.backend_tokenizer
        backend.no_padding()  # a transformers tokenizer keeps the padding and truncation of its last call
        backend.no_truncation()
        return backend.encode_batch([r.prompt for r in rendered], add_special_tokens=True)

    def _examine(self, r: RenderedPrompt, encoding, cut: bool = True) -> tuple[TokenizedPrompt | None, int | None]:
        """``(prompt, None)``, or ``(None, characters to keep)`` when the text slot is over ``max_text_tokens``.

        Rep1, Rep2 and the slot's token count are read with the encoding's character-to-token lookup; where that
        cannot answer (a character no token covers, e.g. a space a pre-tokenizer drops), the offsets are scanned
        instead (``_cut_point``, ``_locate``), which give the same positions, only slower."""
        n = len(encoding)

        def span(token: int) -> tuple[int, int] | None:
            return encoding.token_to_chars(token) if 0 <= token < n else None

        def last_token_ending_at(end: int) -> int | None:
            token = encoding.char_to_token(end - 1) if end > 0 else None
            if token is None:
                return None
            while (after := span(token + 1)) is not None and after[1] == end and after[1] > after[0]:
                token += 1  # one character split over several tokens: the last of them, as _locate reads it
            here = span(token)
            return token if here is not None and here[1] == end else None

        if cut and self.max_text_tokens is not None and r.text_end > r.text_start:
            first, last = encoding.char_to_token(r.text_start), encoding.char_to_token(r.text_end - 1)
            if first is None or last is None:
                return self._scan(r, encoding, cut)
            while (after := span(last + 1)) is not None and after[0] < r.text_end and after[1] > after[0]:
                last += 1
            if last - first + 1 > self.max_text_tokens:
                end = span(first + self.max_text_tokens - 1)[1]
                return None, max(0, min(end, r.text_end) - r.text_start)
        rep1, rep2 = last_token_ending_at(r.rep1_end), last_token_ending_at(len(r.prompt))
        if rep1 is None or rep2 is None:
            return self._scan(r, encoding, cut)
        return TokenizedPrompt(list(encoding.ids), rep1, rep2), None

    def _scan(self, r: RenderedPrompt, encoding, cut: bool) -> tuple[TokenizedPrompt | None, int | None]:
        """``_examine`` by scanning every token's offsets (the reference the lookups must agree with)."""
        offsets = encoding.offsets
        chars = self._cut_point(r, offsets) if cut else None
        return (None, chars) if chars is not None else (self._locate(r, encoding.ids, offsets), None)

    def _cut_point(self, r: RenderedPrompt, offsets: list[tuple[int, int]]) -> int | None:
        """Characters of text to keep when its slot holds more than ``max_text_tokens`` tokens, else None."""
        if self.max_text_tokens is None or r.text_end == r.text_start:
            return None
        in_text = [end for start, end in offsets if end > start and start < r.text_end and end > r.text_start]
        if len(in_text) <= self.max_text_tokens:
            return None
        return max(0, min(in_text[self.max_text_tokens - 1], r.text_end) - r.text_start)

    def _locate(self, r: RenderedPrompt, ids: list[int], offsets: list[tuple[int, int]]) -> TokenizedPrompt:
        rep1 = rep2 = None
        for i, (start, end) in enumerate(offsets):
            if end <= start:  # special tokens have empty spans
                continue
            if end == r.rep1_end:
                rep1 = i
            if end == len(r.prompt):
                rep2 = i
        if rep1 is None or rep2 is None:
            which = "stage one" if rep1 is None else "the prompt"
            at = r.rep1_end if rep1 is None else len(r.prompt)
            near = [r.prompt[s:e] for s, e in offsets if e > s and e > at - 8 and s < at + 8]
            raise ValueError(
                f"template {self.template.name!r} with {type(self.tokenizer).__name__}: no token ends where {which} "
                f"ends (character {at} of {r.prompt!r}); tokens there are {near}. Put a word boundary at that point, "
                "e.g. end the stage with a whole word."
            )
        return TokenizedPrompt(list(ids), rep1, rep2)

    # --- batching -----------------------------------------------------------------------------------------

    def collate(self, items: Sequence[TokenizedPrompt], padding_side: str = "right") -> PromptBatch:
        """Pad ``items`` into one batch; the Rep indices follow the padding."""
        import torch

        ids, mask, rep1, rep2 = self.collate_arrays(items, padding_side)
        tensors = (torch.from_numpy(a) for a in (ids, mask.astype(np.int64), rep1, rep2))
        return PromptBatch(*tensors, padding_side=padding_side)

    def collate_arrays(
        self, items: Sequence[TokenizedPrompt], padding_side: str = "right"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``collate`` in numpy: int64 ids (B, L), the bool mask of real tokens (B, L), Rep1 and Rep2 (B,)."""
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if not items:
            raise ValueError("cannot collate an empty list of prompts")
        lengths = np.fromiter((len(it.input_ids) for it in items), dtype=np.int64, count=len(items))  # (B,)
        length = int(lengths.max())
        columns = np.arange(length)  # (L,)
        shift = length - lengths if padding_side == "left" else np.zeros_like(lengths)  # (B,)
        real = (columns >= shift[:, None]) & (columns < (shift + lengths)[:, None])  # (B, L) bool
        ids = np.full((len(items), length), self.pad_token_id, dtype=np.int64)  # (B, L)
        ids[real] = np.fromiter(itertools.chain.from_iterable(it.input_ids for it in items), np.int64, lengths.sum())
        rep1 = np.fromiter((it.rep1 for it in items), np.int64, len(items)) + shift  # (B,)
        rep2 = np.fromiter((it.rep2 for it in items), np.int64, len(items)) + shift  # (B,)
        return ids, real, rep1, rep2

    def __call__(self, texts: str | Sequence[str], padding_side: str = "right") -> PromptBatch:
        return self.collate(self.tokenize(texts), padding_side=padding_side)


class RustTokenizer:
    """The subset of a transformers fast tokenizer that sfp_rag uses, over a bare ``tokenizers.Tokenizer``.

    Loading Gemma's tokenizer through transformers takes about 2 s, of which the Rust parse of ``tokenizer.json`` is
    0.85 s and can run in a thread while torch is imported; the wrapper adds the rest. Queries use this class to
    start fast; ``Searcher`` checks it against ids recorded with the transformers tokenizer and falls back if they
    differ.
    """

    is_fast = True

    def __init__(self, backend, pad_token_id: int | None, eos_token_id: int | None, bos_token_id: int | None) -> None:
        backend.no_padding()
        backend.no_truncation()
        self.backend_tokenizer = backend
        self.pad_token_id, self.eos_token_id, self.bos_token_id = pad_token_id, eos_token_id, bos_token_id

    def __call__(self, texts, add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_: object):
        single = isinstance(texts, str)
        encodings = self.backend_tokenizer.encode_batch(
            [texts] if single else list(texts), add_special_tokens=add_special_tokens
        )
        out = {"input_ids": [e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return {k: v[0] for k, v in out.items()} if single else out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)
