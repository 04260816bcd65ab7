from __future__ import annotations

import pytest

from sfp_rag.embedding.prompts import PRESETS, get_template
from sfp_rag.embedding.tokenization import PromptTokenizer, TokenizedPrompt

# The word each preset's Rep1 and Rep2 tokens must decode to.
MARKERS = {
    "eol-sum": ("word", "as"),
    "sth-sum": ("something", "as"),
    "sth-also-sum": ("something", "as"),
    "eol": (':"', ':"'),
    "sth": ("something", "something"),
    "sum": ("as", "as"),
}


def _decoded(tok, ids, i):
    return tok.decode([ids[i]]).strip()


@pytest.mark.parametrize("fixture", ["bpe_tokenizer", "word_tokenizer"])
@pytest.mark.parametrize("preset", list(MARKERS))
def test_markers_decode_to_intended_words(request, fixture, preset):
    tok = request.getfixturevalue(fixture)
    pt = PromptTokenizer(tok, preset, max_text_tokens=32)
    for item in pt.tokenize(["a man is playing a guitar", 'he said "the cat sat"', "dogs run"]):
        rep1_word, rep2_word = MARKERS[preset]
        if fixture == "word_tokenizer" and preset == "eol":
            rep1_word = rep2_word = ':"'  # one punctuation run in the word-level vocabulary
        assert _decoded(tok, item.input_ids, item.rep1) == rep1_word
        assert _decoded(tok, item.input_ids, item.rep2) == rep2_word
        assert item.rep2 == len(item.input_ids) - 1
        if get_template(preset).two_stage:
            assert item.rep1 < item.rep2
        else:
            assert item.rep1 == item.rep2


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in MARKERS])
def test_other_presets_end_their_stages_on_the_right_tokens(bpe_tokenizer, preset):
    """Presets whose words the tiny vocabulary splits: Rep1 is the last token of stage one, Rep2 the last token."""
    template = get_template(preset)
    item = PromptTokenizer(bpe_tokenizer, preset, max_text_tokens=32).tokenize(["a man is playing a guitar"])[0]
    ids = list(item.input_ids)
    stage_one = template.stage_one("a man is playing a guitar.")
    assert bpe_tokenizer.decode(ids[: item.rep1 + 1], skip_special_tokens=True) == stage_one
    assert bpe_tokenizer.decode(ids, skip_special_tokens=True) == template.render("a man is playing a guitar.").prompt
    assert item.rep2 == len(ids) - 1 and (item.rep1 < item.rep2) == template.two_stage


def test_bos_token_is_kept_and_not_a_marker(bpe_tokenizer):
    item = PromptTokenizer(bpe_tokenizer, "eol-sum")("a cat")
    assert int(item.input_ids[0, 0]) == bpe_tokenizer.bos_token_id


def test_only_the_text_slot_is_truncated(bpe_tokenizer):
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum", max_text_tokens=8)
    long_text = "photosynthesis converts light energy into chemical energy in plants " * 20
    short, long_ = pt.tokenize(["a cat sits", long_text])
    assert not short.truncated and long_.truncated
    prompt = bpe_tokenizer.decode(long_.input_ids, skip_special_tokens=True)
    assert prompt.endswith('" means in one word, it can be summarized as')  # template intact
    text = prompt.split('"')[1]
    n_text_tokens = len(bpe_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert 7 <= n_text_tokens <= 9  # cut in context; may be one off when the cut changes a merge
    assert _decoded(bpe_tokenizer, long_.input_ids, long_.rep1) == "word"
    assert _decoded(bpe_tokenizer, long_.input_ids, long_.rep2) == "as"


def test_no_truncation_when_limit_is_none(bpe_tokenizer):
    pt = PromptTokenizer(bpe_tokenizer, "eol", max_text_tokens=None, normalize_text=False)
    text = "word " * 300
    (item,) = pt.tokenize([text])
    assert not item.truncated and len(item.input_ids) > 300


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_indices_follow_padding(bpe_tokenizer, side):
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum")
    texts = ["a", "a much longer sentence about the cat that sat on the mat"]
    items = pt.tokenize(texts)
    batch = pt.collate(items, padding_side=side)
    for row, item in enumerate(items):
        assert batch.input_ids[row, batch.rep1_index[row]] == item.input_ids[item.rep1]
        assert batch.input_ids[row, batch.rep2_index[row]] == item.input_ids[item.rep2]
        assert int(batch.attention_mask[row].sum()) == len(item.input_ids)
    short = 0
    pad_at = 0 if side == "left" else -1
    assert int(batch.attention_mask[short, pad_at]) == 0
    assert batch.input_ids[short, pad_at] == pt.pad_token_id


def test_normalisation_is_applied_before_templating(bpe_tokenizer):
    pt = PromptTokenizer(bpe_tokenizer, "eol")
    (item,) = pt.tokenize(['is "it" raining?'])
    prompt = bpe_tokenizer.decode(item.input_ids, skip_special_tokens=True)
    assert prompt == 'This sentence : "is \'it\' raining." means in one word:"'


def test_bad_inputs(bpe_tokenizer):
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        pt.tokenize(["ok", 3])
    with pytest.raises(TypeError, match="string or a list"):
        pt.tokenize(5)
    with pytest.raises(ValueError, match="padding_side"):
        pt.collate(pt.tokenize(["x"]), padding_side="middle")
    with pytest.raises(ValueError, match="empty list"):
        pt.collate([])
    with pytest.raises(ValueError, match="max_text_tokens"):
        PromptTokenizer(bpe_tokenizer, "eol-sum", max_text_tokens=0)


def test_slow_tokenizer_is_refused(bpe_tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="not a fast tokenizer"):
        PromptTokenizer(Slow(), "eol-sum")


def test_marker_inside_a_token_is_reported(word_tokenizer):
    # "word{rep1}able" renders as one word, so no token ends where stage one ends.
    pt = PromptTokenizer(word_tokenizer, 'This sentence : "{text}" means in one word{rep1}able, it can be')
    with pytest.raises(ValueError, match="no token ends where stage one ends"):
        pt.tokenize(["a cat"])


def test_rust_tokenizer_matches_transformers(tiny_model_dir, bpe_tokenizer):
    from sfp_rag.embedding.backbones import load_fast_tokenizer, prefetch_tokenizer

    prefetch_tokenizer(tiny_model_dir)
    fast = load_fast_tokenizer(tiny_model_dir)
    assert fast.pad_token_id == bpe_tokenizer.pad_token_id and fast.eos_token_id == bpe_tokenizer.eos_token_id
    texts = ["a man is playing a guitar", 'he said "no" twice?', "x" * 300, "", "déjà vu"]
    for preset in ("eol-sum", "eol"):
        a = PromptTokenizer(bpe_tokenizer, preset, max_text_tokens=16)(texts)
        b = PromptTokenizer(fast, preset, max_text_tokens=16)(texts)
        for x, y in zip(a.tensors(), b.tensors()):
            assert (x == y).all()
    assert fast.decode(fast.encode("a cat", add_special_tokens=False)) == "a cat"
    assert len(fast) == len(bpe_tokenizer)


@pytest.mark.parametrize("fixture", ["bpe_tokenizer", "word_tokenizer"])
@pytest.mark.parametrize("max_text_tokens", [3, 8, None])
def test_position_lookups_agree_with_the_offset_scan(request, fixture, max_text_tokens):
    """The fast path (the Rust encoding's char-to-token lookups) gives what scanning every offset gives: the same
    ids, Rep1/Rep2, cut points and truncation flags, on plain, long, multi-byte and odd texts, on a byte-level BPE
    (spaces inside tokens) and a word-level tokenizer (spaces in no token: the fallback)."""
    tokenizer = request.getfixturevalue(fixture)
    texts = [
        "A cat sits on the mat.", "The capital of France is Paris, and the Seine flows through it.", "x", "",
        "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u4e2d\u6587 \U0001f600 emoji", "  leading and trailing  ",
        "word " * 40, "\u00e9" * 12, "\u00e9\u00e9", "a\tb\nc", "\"quoted\" text 'here'",
    ]  # fmt: skip
    odd = 'Text: "{text}" in one \u00e9{rep1} so \u4e2d'  # stages that end inside a multi-byte character's tokens
    for template, normalize in (("eol-sum", True), ("question-sum", True), ("eol", True), (odd, False)):
        prompter = PromptTokenizer(tokenizer, template, max_text_tokens=max_text_tokens, normalize_text=normalize)

        def reference(text: str):
            from sfp_rag.embedding.prompts import normalize_sentence

            text = normalize_sentence(text) if normalize else text
            r = prompter.template.render(text)
            item, cut = prompter._scan(r, prompter._encode([r])[0], cut=True)
            if cut is None:
                return item
            r = prompter.template.render(text[:cut])
            item = prompter._scan(r, prompter._encode([r])[0], cut=False)[0]
            return TokenizedPrompt(item.input_ids, item.rep1, item.rep2, truncated=True)

        try:
            fast = prompter.tokenize(texts)
        except ValueError:  # a stage end no token ends at: the scan says the same
            with pytest.raises(ValueError, match="no token ends where"):
                [reference(t) for t in texts]
            continue

        assert fast == [reference(t) for t in texts], template
