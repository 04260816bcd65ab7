"""Shared fixtures: tiny tokenizers and a tiny Llama model built in-process (no downloads, fixed seeds).

The session fixtures build each object once; tests that change a model get a ``deepcopy``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CORPUS = [
    'This sentence : "a man is playing a guitar." means in one word, it can be summarized as',
    'This sentence : "the cat sat on the mat." means something, it can also be summarized as',
    'This sentence : "dogs run in the park." means in one word:"',
    'This sentence : "stocks fell sharply today." can be summarized as',
    "A woman is slicing an onion. A man is riding a horse. Two kids play football on the beach.",
    "The quick brown fox jumps over the lazy dog. Markets rallied after the central bank decision.",
    "Retrieval augmented generation needs good embeddings of questions and passages.",
    "How do I reset my password? Open the settings page and choose security.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The capital of France is Paris, and the Seine flows through it.",
]


def _bpe_tokenizer(add_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS[:4] * 10 + CORPUS * 3, trainer)  # template words become whole tokens
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for line in CORPUS:
        for word, _ in pre.pre_tokenize_str(line):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """Byte-level BPE that prepends a BOS token; offsets include each token's leading space."""
    return _bpe_tokenizer(add_bos=True)


@pytest.fixture(scope="session")
def word_tokenizer():
    """Word-level tokenizer; offsets exclude spaces; unknown words map to [UNK]."""
    return _word_tokenizer()


def _tiny_llama(vocab_size: int, hidden_size: int = 32, num_hidden_layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaModel(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


@pytest.fixture(scope="session")
def _tiny_model_session(bpe_tokenizer):
    return _tiny_llama(len(bpe_tokenizer))


@pytest.fixture
def tiny_model(_tiny_model_session):
    """A 2-layer Llama (d=32) matching ``bpe_tokenizer``; a fresh copy per test."""
    return copy.deepcopy(_tiny_model_session)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, _tiny_model_session, bpe_tokenizer) -> Path:
    """The tiny model and tokenizer saved as a transformers directory (what --model accepts)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny_model_session.save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_encoder(tiny_model, bpe_tokenizer):
    from sfp_rag.embedding.config import EncoderConfig
    from sfp_rag.embedding.encoder import SFPEncoder

    config = EncoderConfig(model="tiny", template="eol-sum", device="cpu", dtype="float32")  # exact reference
    return SFPEncoder(tiny_model, bpe_tokenizer, config)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not present on this machine")
    return path
