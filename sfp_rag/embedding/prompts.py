"""Prompt templates: the two-stage prompts of CSE-SFP as data, and the paper's input normalisation.

A template is one string with a ``{text}`` slot and, for two-stage prompts, a ``{rep1}`` mark where stage one ends:

    'This sentence : "{text}" means in one word{rep1}, it can be summarized as'

Rep1 is read at the last token of stage one (``word``); Rep2 at the last token of the whole prompt (``as``). Under
causal attention Rep1 cannot see stage two, while Rep2 sees everything. A single-stage template has no ``{rep1}``;
then Rep1 and Rep2 are the same token. Positions are found later, from the tokenizer's offsets on the rendered
prompt (see ``tokenization.py``), so a template works with any fast tokenizer.

Simplifications: only ``{text}`` and ``{rep1}`` are fields; literal braces are not supported in templates.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

TEXT_FIELD = "{text}"
REP1_FIELD = "{rep1}"
_FIELD_RE = re.compile(r"\{[^{}]*\}")

# The paper's templates (CSE-SFP, code/settings.py) and the single-stage baselines it compares against.
PRESETS: dict[str, str] = {
    "eol-sum": 'This sentence : "{text}" means in one word{rep1}, it can be summarized as',
    "sth-sum": 'This sentence : "{text}" means something{rep1}, it can be summarized as',
    "sth-also-sum": 'This sentence : "{text}" means something{rep1}, it can also be summarized as',
    "eol": 'This sentence : "{text}" means in one word:"',
    "sth": 'This sentence : "{text}" means something',
    "sum": 'This sentence : "{text}" can be summarized as',
    # a query-side prompt (asymmetric search): chosen on NFCorpus train queries for the shipped default
    "question-sum": 'This question : "{text}" asks about{rep1}, the answer can be summarized as',
}


@dataclass(frozen=True)
class RenderedPrompt:
    """A template filled with one text, with the character positions the tokenizer needs."""

    prompt: str
    text_start: int  # first character of the inserted text
    text_end: int  # one past its last character
    rep1_end: int  # Rep1 is the token that ends at this character
    # Rep2 is the token that ends at len(prompt)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with a ``{text}`` slot and an optional ``{rep1}`` mark; validated on construction.

    Args:
        template: the prompt, e.g. ``'This sentence : "{text}" means in one word{rep1}, it can be summarized as'``.
        name: a label used in messages and manifests ("custom" for user templates).
    """

    template: str
    name: str = "custom"
    prefix: str = field(init=False, repr=False)
    stage_one_tail: str = field(init=False, repr=False)  # between {text} and {rep1} (or the end)
    stage_two: str = field(init=False, repr=False)  # after {rep1}; "" for single-stage templates

    def __post_init__(self) -> None:
        t = self.template
        if not isinstance(t, str):
            raise TypeError(f"template must be a string, got {type(t).__name__}")
        where = f"template {self.name!r} ({t!r})"
        fields = _FIELD_RE.findall(t)
        unknown = sorted({f for f in fields if f not in (TEXT_FIELD, REP1_FIELD)})
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}; only {TEXT_FIELD} and {REP1_FIELD} are allowed")
        if t.count(TEXT_FIELD) != 1:
            raise ValueError(f"{where} must contain {TEXT_FIELD} exactly once (found {t.count(TEXT_FIELD)})")
        if t.count(REP1_FIELD) > 1:
            raise ValueError(f"{where} may contain {REP1_FIELD} at most once (found {t.count(REP1_FIELD)})")
        stray = _FIELD_RE.sub("", t)
        if "{" in stray or "}" in stray:
            raise ValueError(
                f"{where} has an unmatched brace; braces are only allowed in {TEXT_FIELD} and {REP1_FIELD}"
            )
        prefix, rest = t.split(TEXT_FIELD)
        if REP1_FIELD in prefix:
            raise ValueError(f"{where}: {REP1_FIELD} must come after {TEXT_FIELD} (stage one ends after the text)")
        tail, _, stage_two = rest.partition(REP1_FIELD)
        if not tail.strip():
            raise ValueError(
                f"{where}: stage one needs template words after {TEXT_FIELD} (e.g. ' means in one word'), "
                "otherwise Rep1 would be read from the user's text"
            )
        if REP1_FIELD in rest and not stage_two.strip():
            raise ValueError(f"{where}: stage two after {REP1_FIELD} is empty; drop {REP1_FIELD} for one stage")
        if tail != tail.rstrip() or (stage_two and stage_two != stage_two.rstrip()) or t != t.rstrip():
            raise ValueError(f"{where}: a stage must not end with whitespace (the marker token would be a space)")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "stage_one_tail", tail)
        object.__setattr__(self, "stage_two", stage_two)

    @property
    def two_stage(self) -> bool:
        return bool(self.stage_two)

    def render(self, text: str) -> RenderedPrompt:
        """Fill the slot with ``text`` (used as given: normalise it first if wanted)."""
        text_start = len(self.prefix)
        text_end = text_start + len(text)
        rep1_end = text_end + len(self.stage_one_tail)
        prompt = self.prefix + text + self.stage_one_tail + self.stage_two
        return RenderedPrompt(prompt, text_start, text_end, rep1_end)

    def stage_one(self, text: str) -> str:
        """The stage-one prompt alone (what Rep1 sees under causal attention)."""
        return self.prefix + text + self.stage_one_tail

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "template": self.template}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """A preset by name, a template string containing ``{text}``, or a ``PromptTemplate`` as is."""
    if isinstance(template, PromptTemplate):
        return template
    if not isinstance(template, str):
        raise TypeError(f"template must be a preset name or a template string, got {type(template).__name__}")
    if template in PRESETS:
        return PromptTemplate(PRESETS[template], name=template)
    for name, preset in PRESETS.items():  # a preset's text given literally keeps its name
        if template == preset:
            return PromptTemplate(preset, name=name)
    if TEXT_FIELD in template:
        return PromptTemplate(template, name="custom")
    raise ValueError(
        f"unknown template {template!r}: use a preset ({', '.join(PRESETS)}) or a template string with "
        f"{TEXT_FIELD} (and {REP1_FIELD} where stage one ends), e.g. {PRESETS['eol-sum']!r}"
    )


def normalize_sentence(text: str) -> str:
    """The input normalisation PromptEOL and CSE-SFP apply before templating.

    Whitespace runs become one space (as SentEval's split/join does); a final period is added unless the text ends
    in ``. ? " '``; double quotes become single quotes (the template itself quotes the text); a final ``?`` becomes
    ``.``. Empty text stays empty.
    """
    s = " ".join(text.split())
    if s and s[-1] not in ".?\"'":
        s += "."
    s = s.replace('"', "'")
    if s and s[-1] == "?":
        s = s[:-1] + "."
    return s
