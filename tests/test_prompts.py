from __future__ import annotations

import pytest

from sfp_rag.embedding.prompts import PRESETS, PromptTemplate, get_template, normalize_sentence


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_render(name):
    t = get_template(name)
    assert t.name == name
    r = t.render("hello world.")
    assert r.prompt[r.text_start : r.text_end] == "hello world."
    assert r.prompt.startswith(('This sentence : "hello world."', 'This question : "hello world."'))
    assert r.prompt[: r.rep1_end] == t.stage_one("hello world.")
    assert "{" not in r.prompt
    assert t.two_stage == (name in ("eol-sum", "sth-sum", "sth-also-sum", "question-sum"))


def test_two_stage_split_points():
    t = get_template("eol-sum")
    r = t.render("x")
    assert r.prompt[: r.rep1_end].endswith("means in one word")
    assert r.prompt[r.rep1_end :] == ", it can be summarized as"
    single = get_template("eol")
    r1 = single.render("x")
    assert r1.rep1_end == len(r1.prompt)  # one stage: Rep1 and Rep2 coincide


@pytest.mark.parametrize(
    "bad, message",
    [
        ("no slot here", "unknown template"),  # not a preset and no {text}
        ("{text} and {text} means", "exactly once"),
        ('a "{text}" {sentence} means', "unknown field"),
        ('a "{text}" means{rep1}, b{rep1} c', "at most once"),
        ('{rep1}a "{text}" means', "must come after"),
        ('a "{text}{rep1}, then more', "stage one needs template words"),
        ('a "{text}" means{rep1}   ', "stage two"),
        ('a "{text}" means ', "whitespace"),
        ('a "{text}" means {rep1}, then', "whitespace"),
        ('a "{text}" means } odd', "unmatched brace"),
    ],
)
def test_bad_templates_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        get_template(bad)


def test_custom_template_and_type_errors():
    t = get_template('Query: "{text}" is about{rep1}; in short it is')
    assert t.name == "custom" and t.two_stage
    assert get_template(PRESETS["sth-sum"]).name == "sth-sum"  # a preset given literally keeps its name
    with pytest.raises(TypeError):
        get_template(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PromptTemplate(None)  # type: ignore[arg-type]


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError) as err:
        get_template("eol_sum")
    for name in PRESETS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a cat sits", "a cat sits."),
        ("a cat sits.", "a cat sits."),
        ("is it raining?", "is it raining."),
        ('he said "hi"', "he said 'hi'"),  # ends in a quote: no period; quotes become single
        ('say "no" now', "say 'no' now."),
        ("it's", "it's."),
        ("  spaced \n out\ttext ", "spaced out text."),
        ("", ""),
        ("   ", ""),
        ("?", "."),
    ],
)
def test_normalize_sentence(raw, expected):
    assert normalize_sentence(raw) == expected
