"""A text's vector does not depend on its batch: the batched path against one text at a time.

On an H200, fp32 batches of 256 once gave some texts (33-token prompts, padded by one) vectors with cosine 0.10 to
the same text alone, while batch 1 and bf16 were right (the project's GPU notes). These tests hold the invariant
where it can be checked without a GPU: batch 1 against large batches whose rows are padded by zero to many tokens,
in fp32 and bf16, on a Llama and on a Gemma-3 with sliding-window layers narrower than the prompts (so those layers
need a mask of their own); left padding (the masked path) against right padding; and, marked ``gpu``, the same on
CUDA in fp32 and bf16.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sfp_rag.embedding.config import EncoderConfig
from sfp_rag.embedding.encoder import SFPEncoder
from tests.conftest import CORPUS, _tiny_llama


def _texts(n: int = 160) -> list[str]:
    """Texts whose prompts span many lengths, with many of exactly the same length (as in the GPU finding)."""
    rng = np.random.default_rng(0)
    words = " ".join(CORPUS).split()
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 16)))) for _ in range(n)]


def _gemma3(vocab_size: int, head_dim: int = 64):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=8,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip  (5 sliding-window layers of 8 tokens, then a global one)
    model = Gemma3TextModel(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


def _llama(vocab_size: int):
    return _tiny_llama(vocab_size, hidden_size=64, num_hidden_layers=4)


def _encoder(model, tokenizer, device: str, dtype: str) -> SFPEncoder:
    config = EncoderConfig(model="tiny", template="eol-sum", device=device, dtype=dtype)
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    return SFPEncoder(model.to(device=device, dtype=torch_dtype), tokenizer, config, device=device)


def _check(encoder: SFPEncoder, texts: list[str], floor: float) -> None:
    alone = np.stack([encoder.encode(t) for t in texts])
    for batch_size in (16, len(texts)):
        batched = encoder.encode(texts, batch_size=batch_size)
        cos = (alone * batched).sum(1)
        assert cos.min() >= floor, (batch_size, float(cos.min()), int(cos.argmin()))


@pytest.mark.parametrize("backbone", [_llama, _gemma3])
@pytest.mark.parametrize(("dtype", "floor"), [("float32", 0.99999), ("bfloat16", 0.98)])
def test_a_vector_does_not_depend_on_its_batch_on_the_cpu(bpe_tokenizer, backbone, dtype, floor):
    texts = _texts()
    lengths = [len(p.input_ids) for p in _encoder(backbone(len(bpe_tokenizer)), bpe_tokenizer, "cpu", "float32")
               .prompt_tokenizer.tokenize(texts)]  # fmt: skip
    assert max(lengths) - min(lengths) > 30 and max(np.bincount(lengths)) >= 8  # padded by 0 to 30+ tokens
    _check(_encoder(backbone(len(bpe_tokenizer)), bpe_tokenizer, "cpu", dtype), texts, floor)


@pytest.mark.parametrize("backbone", [_llama, _gemma3])
def test_left_padding_with_a_mask_equals_right_padding_without_one(bpe_tokenizer, backbone):
    from sfp_rag.embedding.modeling import SFPModel

    model = SFPModel(backbone(len(bpe_tokenizer)))
    prompter = _encoder(model.backbone, bpe_tokenizer, "cpu", "float32").prompt_tokenizer
    prompts = prompter.tokenize(_texts(40))
    with torch.inference_mode():
        right, left = (model(prompter.collate(prompts, padding_side=side)) for side in ("right", "left"))
    torch.testing.assert_close(right.rep2, left.rep2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(right.rep1, left.rep1, atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("backbone", [_llama, functools.partial(_gemma3, head_dim=256)])  # Gemma-3-270M's heads
@pytest.mark.parametrize(("dtype", "floor"), [("float32", 0.9999), ("bfloat16", 0.98)])
def test_a_vector_does_not_depend_on_its_batch_on_cuda(bpe_tokenizer, backbone, dtype, floor):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _check(_encoder(backbone(len(bpe_tokenizer)), bpe_tokenizer, "cuda", dtype), _texts(), floor)
