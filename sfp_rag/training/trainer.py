"""Unsupervised contrastive training of an SFP embedder: QLoRA/LoRA, one loop for six objectives.

Objectives (same data order, optimizer and schedule, so their costs and scores compare fairly):

- ``single-pass`` (CSE-SFP): one forward pass of a two-stage prompt; InfoNCE with Rep2 as anchor, Rep1 as positive.
- ``two-pass-dropout`` (SimCSE on an LLM): the same single-stage prompt twice; dropout (LoRA dropout plus attention
  dropout ``dropout``) makes the two views differ.
- ``two-pass-prompts``: two different single-stage prompts (``template`` and ``second_template``), one pass each.
- ``two-pass-crops``, ``two-pass-ict`` and ``two-pass-title``: two views cut from one document (see
  ``ObjectiveStep``).

The loop is written out instead of subclassing ``transformers.Trainer``: resuming must reproduce the uninterrupted
loss curve exactly (data order follows from the step number and seed alone, RNG state is checkpointed), and the
multi-process loss gathers embeddings across ranks, both of which are plain here and awkward through Trainer hooks.

Multi-GPU/multi-process: run under ``torchrun``; each rank embeds its slice of the global batch, embeddings are
all-gathered for the negatives (``losses.gather_with_grad``), and the loss is scaled by the world size so that the
gradient average over ranks equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import (
    ensure_writable_dir,
    is_available,
    package_versions,
    progress_bar,
    require,
    resolve_device,
    seed_everything,
)
from ..embedding.config import INFERENCE_MAX_TEXT_TOKENS, EncoderConfig
from ..embedding.tokenization import PromptTokenizer
from ..retrieval.chunking import sentences_of
from .checkpoints import (
    append_log,
    check_output_dir,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    promote_best,
    run_settings,
    save_adapter,
    save_checkpoint,
    truncate_log,
)
from .config import DOCUMENT_OBJECTIVES, QUERY_OBJECTIVES, TrainConfig
from .data import TITLE_BREAK, TrainingDataError, load_texts
from .hard_negatives import mine_hard_negatives, text_of
from .losses import info_nce, matryoshka_info_nce
from .memory import PROBE_ROWS, measure_step, memory_advice
from .sampling import BatchOrder, TopicBatchOrder, cluster_sizes, kmeans_labels, load_topics, save_topics

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    final_loss: float
    seconds: float  # the training loop's; pseudo-query generation is apart
    best_dev: float | None = None
    pseudo_queries: str | None = None  # what generation kept and rejected, and its time (GenerationResult.summary)


# --- model --------------------------------------------------------------------------------------------------------


def _attention_dropout(model: torch.nn.Module, p: float) -> None:
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = p


def build_peft_model(config: TrainConfig, device: str, quantization: str):
    """Backbone (optionally NF4) with LoRA adapters on the chosen linear layers."""
    require("peft", "Training", "pip install 'sfp-rag[train]'")
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    from ..embedding.backbones import load_backbone

    model, tokenizer = load_backbone(
        config.model, device=device, dtype=torch.float32, load_in_4bit=quantization == "nf4"
    )
    if quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    if config.objective == "two-pass-dropout":
        _attention_dropout(model, config.dropout)
    target = "all-linear" if config.lora_target == "all-linear" else [t.strip() for t in config.lora_target.split(",")]
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        bias="none",
        task_type=TaskType.FEATURE_EXTRACTION,
    )
    if config.init_adapter:
        from peft import PeftModel

        from ..embedding.encoder import check_adapter_dir  # safetensors only: a pickled adapter is refused

        model = PeftModel.from_pretrained(model, str(check_adapter_dir(config.init_adapter)), is_trainable=True)
    else:
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    return model, tokenizer


def resolve_train_autocast(dtype: str, device: str):
    """bf16 autocast for "auto" on bf16-capable CUDA GPUs and on CPUs with AMX/AVX512-BF16 (there it measured 1.45x
    faster per step than fp32: benchmarks/train_cost.py); LoRA weights and optimizer state stay fp32."""
    from .._utils import cpu_has_fast_bf16

    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
    return None


def autocast_context(device: str, dtype):
    """``torch.autocast`` on ``device`` to ``dtype`` (from ``resolve_train_autocast``), or a no-op for None."""
    return torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None)


# --- the loss of one batch ----------------------------------------------------------------------------------------


def random_crop(text: str, rng: np.random.Generator, low: float = 0.1, high: float = 0.5, min_words: int = 4) -> str:
    """A random span of ``text`` covering a ``low``..``high`` share of its words (Contriever's independent cropping);
    texts of ``min_words`` words or fewer are returned whole."""
    words = text.split()
    if len(words) <= min_words:
        return text
    length = min(len(words), max(min_words, round(rng.uniform(low, high) * len(words))))
    start = int(rng.integers(0, len(words) - length + 1))
    return " ".join(words[start : start + length])


def inverse_cloze(text: str, rng: np.random.Generator, keep: float = 0.1) -> tuple[str, str]:
    """(query, passage) for the inverse cloze task (Lee et al., ACL 2019): one random sentence of ``text`` and the
    text around it, with the sentence removed unless a ``keep`` chance says otherwise. A text of one sentence is
    split by words instead: a 10-30% span is the query."""
    sentences = sentences_of(text)
    if len(sentences) >= 2:
        i = int(rng.integers(len(sentences)))
        rest = sentences if rng.random() < keep else sentences[:i] + sentences[i + 1 :]
        return sentences[i], " ".join(rest)
    words = text.split()
    if len(words) < 8:
        return text, text
    length = max(2, round(rng.uniform(0.1, 0.3) * len(words)))
    start = int(rng.integers(0, len(words) - length + 1))
    rest = words if rng.random() < keep else words[:start] + words[start + length :]
    return " ".join(words[start : start + length]), " ".join(rest)


def title_pair(text: str, rng: np.random.Generator, low: float = 0.1, high: float = 0.5) -> tuple[str, str]:
    """(anchor, positive) of ``two-pass-title`` for one ``"title\ntext"`` unit (``data.TITLE_BREAK``): the title and
    the text; a document without a title gives two independent crops (as ``two-pass-crops``)."""
    title, found, body = text.partition(TITLE_BREAK)
    if found:
        return title, body
    return random_crop(text, rng, low, high), random_crop(text, rng, low, high)


class ObjectiveStep:
    """Compute the loss of one batch of texts for the configured objective, and its gradient.

    - ``single-pass``: one pass; Rep2 is the anchor and Rep1 (end of stage one) the positive (CSE-SFP).
    - ``two-pass-dropout``: the same prompt twice, different dropout masks; Rep2 of each (SimCSE).
    - ``two-pass-prompts``: two prompts of the same text; Rep2 of each (PromptEOL-style).
    - ``two-pass-crops``: two independent random crops of the same text, one pass each; Rep2 of each (Contriever's
      cropping; harder positives for passages than two views of one short sentence).
    - ``two-pass-ict``: inverse cloze: a sentence of the text, embedded with the *query* prompt, is the anchor, and the
      rest of the text, embedded with the document prompt, its positive: the asymmetric query -> passage match that
      search makes, with the prompts search uses.
    - ``two-pass-title``: a document's title, with the query prompt, is the anchor and its text, with the document
      prompt, the positive (title -> passage: a short query-like text written about the passage by its author);
      documents without a title give two crops instead. ``negatives`` (texts, document prompt) are extra columns
      of the loss for a title batch: the BM25-mined hard negatives of ``training.hard_negatives``.

    With ``config.grad_cache`` = N > 0, ``backward`` embeds the batch N rows at a time without keeping activations,
    takes the loss over the whole batch, then re-embeds each sub-batch with the same random state (dropout masks)
    and backpropagates the cached embedding gradients into it (GradCache: Gao et al., RepL4NLP 2021, arXiv
    2101.06983). The gradient is the full batch's; activation memory is that of N rows; compute is one extra
    forward without a graph. Forwards run under ``autocast`` (a dtype, or None for none); the loss is fp32.
    """

    def __init__(self, config: TrainConfig, tokenizer, device: str, distributed: bool, autocast=None) -> None:
        self.config, self.device, self.distributed, self.autocast = config, device, distributed, autocast
        first = config.template
        if config.objective in QUERY_OBJECTIVES:
            first = config.query_template or config.template
        self.first = PromptTokenizer(tokenizer, first, max_text_tokens=config.max_text_tokens)
        second = config.second_template if config.objective == "two-pass-prompts" else config.template
        self.second = PromptTokenizer(tokenizer, second, max_text_tokens=config.max_text_tokens)

    def __call__(
        self, model, texts: list[str], rng: np.random.Generator | None = None, negatives: list[str] | None = None
    ) -> tuple[torch.Tensor, int]:
        """Loss (global-batch InfoNCE, with its graph) and the number of tokens processed by this rank; ``rng``
        draws the crops; ``negatives`` join a title batch's loss (a crop batch of ``title_share`` < 1 ignores them)."""
        first, second, query_side = self._views(texts, rng)
        anchor, positive, tokens = self._embed(model, first, second, query_side)
        extra = None
        if negatives and query_side and self.config.objective == "two-pass-title":
            extra, more = self._embed_texts(model, negatives)
            tokens += more
        return self._loss(anchor, positive, extra), tokens

    def backward(
        self,
        model,
        texts: list[str],
        rng: np.random.Generator | None = None,
        scale: float = 1.0,
        negatives: list[str] | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Accumulate the gradient of ``scale`` x the batch loss into the model; returns the loss (detached) and the
        number of tokens processed. Uses GradCache when ``config.grad_cache`` is below the batch size (not with
        ``negatives``: the config refuses the two together)."""
        chunk = self.rows_at_once(len(texts))
        if chunk == len(texts):
            loss, tokens = self(model, texts, rng, negatives)
            (loss * scale).backward()
            return loss.detach(), tokens
        first, second, query_side = self._views(texts, rng)
        spans = [(s, min(s + chunk, len(texts))) for s in range(0, len(texts), chunk)]
        states, anchors, positives, tokens = [], [], [], 0
        with torch.no_grad():  # pass 1: embeddings only, no activations kept
            for s, e in spans:
                states.append(self._rng_state())
                a, p, t = self._embed(model, first[s:e], second[s:e], query_side)
                anchors.append(a.float())
                positives.append(p.float())
                tokens += t
        anchor = torch.cat(anchors).requires_grad_(True)  # (B, D) leaves: the loss's gradient lands here
        positive = torch.cat(positives).requires_grad_(True)
        loss = self._loss(anchor, positive)
        (loss * scale).backward()
        for (s, e), state in zip(spans, states):  # pass 2: each sub-batch again, same dropout, with its graph
            self._set_rng_state(state)
            a, p, _ = self._embed(model, first[s:e], second[s:e], query_side)
            torch.autograd.backward([a.float(), p.float()], [anchor.grad[s:e], positive.grad[s:e]])
        return loss.detach(), tokens

    def rows_at_once(self, batch: int) -> int:
        """How many of a batch's rows ``backward`` embeds with their graph at once: GradCache's sub-batch where
        ``config.grad_cache`` is below the batch size, else the whole batch."""
        chunk = self.config.grad_cache
        return chunk if 0 < chunk < batch else batch

    def _views(self, texts: list[str], rng: np.random.Generator | None) -> tuple[list[str], list[str], bool]:
        """(anchors, positives, whether the anchors take the first prompt) of one batch. The first prompt is the
        query prompt for the query objectives; a crop batch of ``two-pass-title`` (``title_share`` < 1) embeds both
        crops with the document prompt, as ``two-pass-crops`` does."""
        if self.config.objective not in DOCUMENT_OBJECTIVES:
            return texts, texts, True
        rng = rng if rng is not None else np.random.default_rng(0)
        if self.config.objective == "two-pass-ict":
            pairs = [inverse_cloze(t, rng, self.config.ict_keep) for t in texts]
            return [q for q, _ in pairs], [p for _, p in pairs], True
        lo, hi = self.config.crop_min, self.config.crop_max
        if self.config.objective == "two-pass-title":
            # the draw only where batches mix, so that runs without a mix keep their crops
            if self.config.title_share >= 1 or rng.random() < self.config.title_share:
                pairs = [title_pair(t, rng, lo, hi) for t in texts]
                return [a for a, _ in pairs], [p for _, p in pairs], True
            texts = [t.partition(TITLE_BREAK)[2] or t for t in texts]  # a crop batch: the texts without titles
        first = [random_crop(t, rng, lo, hi) for t in texts]
        second = [random_crop(t, rng, lo, hi) for t in texts]
        return first, second, False  # both crops under the document prompt

    def _embed(
        self, model, first: list[str], second: list[str], query_side: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(anchor (B, D), positive (B, D), tokens) of one (sub-)batch; ``query_side``: the anchors take the first
        prompt (the query prompt of the query objectives), else the positives' prompt."""
        with autocast_context(self.device, self.autocast):
            if self.config.objective == "single-pass":
                batch = self.first(first).to(self.device)
                out = model(batch)
                return out.rep2, out.rep1, batch.num_tokens
            a = (self.first if query_side else self.second)(first).to(self.device)
            b = self.second(second).to(self.device)
            return model(a).rep2, model(b).rep2, a.num_tokens + b.num_tokens  # two passes

    def _embed_texts(self, model, texts: list[str]) -> tuple[torch.Tensor, int]:
        """Rep2 of ``texts`` under the document prompt (the positives' side), and the tokens processed."""
        with autocast_context(self.device, self.autocast):
            batch = self.second(texts).to(self.device)
            return model(batch).rep2, batch.num_tokens

    def _loss(self, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None):
        extra = None if negatives is None else negatives.float()
        if self.config.matryoshka_dims:
            return matryoshka_info_nce(anchor.float(), positive.float(), self.config.matryoshka_dims,
                                       self.config.temperature, self.distributed, negatives=extra)  # fmt: skip
        return info_nce(anchor.float(), positive.float(), self.config.temperature, self.distributed, negatives=extra)

    def _rng_state(self):
        cuda = self.device.startswith("cuda")
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None

    def _set_rng_state(self, state) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)


# --- the loop ----------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    resume: bool = False,
    callback: Callable[[int, float], None] | None = None,
    show_progress: bool | None = None,
) -> TrainResult:
    """Train an adapter; returns where it was saved. See the module docstring for the objectives.

    Args:
        config: the run's settings.
        resume: continue from the newest complete checkpoint in ``config.output_dir``.
        callback: called as ``callback(step, loss)`` after every optimizer step (e.g. for custom logging).
        show_progress: progress bar (None: when this module logs at INFO and stderr is a terminal; otherwise a log
            line per ``log_every`` steps gives step, loss, steps/s and ETA).

    Raises:
        TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
    """
    from transformers import get_scheduler

    from ..embedding.modeling import SFPModel

    dist = _init_distributed()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes ({world})")
    device = _rank_device(config.device, dist)
    output = Path(config.output_dir)
    if not resume and latest_checkpoint(output) is not None:
        raise FileExistsError(f"{output} already holds checkpoints; pass --resume to continue, or another --output")
    if resume and latest_checkpoint(output) is None:
        kept = " (the pseudo-queries written so far are kept and reused)" if config.pseudo_queries else ""
        raise FileNotFoundError(
            f"--resume: no complete checkpoint in {output / 'checkpoints'}; run the same command without --resume to "
            f"start it{kept}"
        )
    check_output_dir(output, config)
    ensure_writable_dir(output, "the training run")
    seed_everything(config.seed)
    nf4 = config.quantization == "nf4" and _nf4_installed()  # said now, before the data and the model load

    units = "sentences"
    if config.objective in DOCUMENT_OBJECTIVES:  # views cut from whole documents (the title apart for title views)
        units = "titled" if config.objective == "two-pass-title" else "documents"
    texts = load_texts(config.data, text_field=config.text_field, units=units)
    if config.max_train_texts:
        texts = texts[: config.max_train_texts]
    generation = None
    if config.pseudo_queries:  # (query -> passage) units beside the (title -> text) ones, before the model loads
        generation = _pseudo_query_units(config, device, output, rank, dist)
        texts = texts + [f"{query}{TITLE_BREAK}{passage}" for query, passage in generation.pairs]
    mined = None
    if config.hard_negatives:  # deterministic from the texts: a resumed run mines the same candidates again
        if dist is not None:
            raise ValueError("hard negatives train in one process: their columns are not gathered across ranks")
        mined = mine_hard_negatives(texts, config.hard_negative_depth, config.hard_negative_guard)
        if not mined.stats()["with_negatives"]:
            logger.warning("hard negatives: BM25 found none for any title (no titles in the data?); in-batch only")
    model, tokenizer, quantization = _model_with_fallback(config, device, nf4)
    autocast = resolve_train_autocast(config.dtype, device)
    sfp = SFPModel(model)
    if any(d >= sfp.hidden_size for d in config.matryoshka_dims):
        raise ValueError(
            f"matryoshka_dims {config.matryoshka_dims}: every width must be below the model's {sfp.hidden_size} "
            "(the full width is always trained)"
        )
    order = _batch_order(texts, config, sfp, tokenizer, device, output, dist, resume)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.schedule, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.max_steps
    )
    step_loss = ObjectiveStep(config, tokenizer, device, distributed=dist is not None, autocast=autocast)
    if device == "cpu" and dist is None:  # said before the first step, which is where a run too big is killed
        _check_memory(step_loss, sfp, texts, config)

    start, best = 0, None
    log_path = output / "train_log.jsonl"
    if resume:
        ckpt = latest_checkpoint(output)  # checked above: there is one
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        check_resumable(state, config, ckpt)
        start, best = state["step"], state.get("best_dev")
        truncate_log(log_path, start)
        logger.info("resuming from %s (step %d)", ckpt, start)
    elif rank == 0:
        log_path.unlink(missing_ok=True)

    bar = progress_bar(
        config.max_steps, f"train {config.objective}", "step", show_progress if rank == 0 else False, logger,
        initial=start,
    )  # fmt: skip
    window: list[float] = []
    t0 = time.perf_counter()
    window_start, window_examples, window_tokens = t0, 0, 0
    last = float("nan")
    for step in range(start + 1, config.max_steps + 1):
        sfp.train()
        step_value = 0.0
        for micro in range(config.grad_accum):
            rows = order((step - 1) * config.grad_accum + micro)
            local = rows[rank * len(rows) // world : (rank + 1) * len(rows) // world]
            crops = np.random.default_rng([config.seed, step, micro, rank])  # the same on resume
            negatives = None
            if mined is not None:  # their own generator: the crops of a run stay those of the same run without them
                draw = np.random.default_rng([config.seed, step, micro, rank, 1])
                drawn = mined.sample(local, config.hard_negatives, draw)
                negatives = [text_of(texts[j]) for j in drawn]
            loss, tokens = step_loss.backward(
                sfp, [texts[i] for i in local], crops, scale=world / config.grad_accum, negatives=negatives
            )
            if not torch.isfinite(loss):
                ckpt = latest_checkpoint(output)
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {step} (lr {scheduler.get_last_lr()[0]:.2e}); the last "
                    f"good checkpoint is {ckpt or 'none'}. Lower --lr, raise --warmup-steps or use --dtype float32, "
                    "then --resume."
                )
            step_value += loss.item() / config.grad_accum
            window_examples += len(rows)
            window_tokens += tokens * world
        if dist:
            _average_gradients(trainable, dist, world)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        last = step_value
        window.append(step_value)
        bar.update(1)
        bar.set_postfix(loss=f"{step_value:.4f}")
        if callback is not None:
            callback(step, step_value)
        if rank == 0 and (step % config.log_every == 0 or step == config.max_steps):
            now = time.perf_counter()
            append_log(
                log_path,
                {
                    "step": step,
                    "loss": round(float(np.mean(window)), 6),
                    "lr": scheduler.get_last_lr()[0],
                    "examples_per_s": round(window_examples / (now - window_start), 3),
                    "tokens_per_s": round(window_tokens / (now - window_start), 1),
                    "elapsed_s": round(now - t0, 2),
                },
            )
            if bar.disable:  # no bar (a log file, a pipe): a line per log interval says how the run goes
                rate = (step - start) / (now - t0)
                logger.info(
                    "step %d/%d  loss %.4f  %.2f steps/s  ETA %s",
                    step, config.max_steps, np.mean(window), rate, _clock((config.max_steps - step) / rate),
                )  # fmt: skip
            window, window_start, window_examples, window_tokens = [], now, 0, 0
        if config.eval_every and step % config.eval_every == 0:
            dev = _dev_score(sfp, tokenizer, config, device)
            if rank == 0:
                append_log(log_path, {"step": step, "stsb_dev": round(dev, 4)})
                if config.select_best and (best is None or dev > best):
                    best = dev
                    _save_adapter(model, output / "best", config, {"step": step, "stsb_dev": dev})
        if rank == 0 and (step % config.save_every == 0 or step == config.max_steps):
            save_checkpoint(
                output,
                step,
                model,
                optimizer,
                scheduler,
                {"loss": step_value, "best_dev": best, "run": run_settings(config)},
                config.keep_checkpoints,
                _inference_config(config, adapter=None),
                {**config.to_dict(), "step": step, "loss": step_value},
            )
        if dist:
            dist.barrier()
    bar.close()
    seconds = time.perf_counter() - t0
    if rank == 0:
        summary = {
            "steps": config.max_steps,
            "final_loss": last,
            "seconds": round(seconds, 1),
            "texts": len(texts),
            "quantization": quantization,
            "device": device,
            "world_size": world,
            "best_stsb_dev": best,
            **({"pseudo_queries": generation.stats()} if generation is not None else {}),
            **({"hard_negative_stats": mined.stats()} if mined is not None else {}),
            "versions": package_versions("sfp-rag", "torch", "transformers", "peft", "bitsandbytes"),
        }
        if config.select_best and (output / "best").exists():
            promote_best(output, summary)
        else:
            _save_adapter(model, output, config, summary)
    if dist:
        dist.barrier()
    return TrainResult(
        str(output), config.max_steps, last, seconds, best, generation.summary() if generation is not None else None
    )


def _batch_order(texts: list[str], config: TrainConfig, sfp, tokenizer, device: str, output: Path, dist, resume):
    """Random batches, or (``topic_clusters``) TAS-B batches from k-means clusters of the starting model's
    embeddings of the texts; the clusters are computed once (rank 0) and saved with the run for resumes."""
    if not config.topic_clusters:
        return BatchOrder(len(texts), config.batch_size, config.seed)
    from ..embedding.encoder import SFPEncoder

    labels = load_topics(output, len(texts)) if resume else None  # a new run clusters afresh
    if labels is None and (dist is None or dist.get_rank() == 0):
        t0 = time.perf_counter()
        encoder = SFPEncoder(sfp, tokenizer, _inference_config(config, adapter=None, max_text_tokens=True), device)
        with autocast_context(device, resolve_train_autocast(config.dtype, device)):
            vectors = encoder.encode(texts, batch_size=64)  # (n, D), normalised; eval mode, no dropout
        sfp.train()
        labels = kmeans_labels(vectors, config.topic_clusters, seed=config.seed)
        save_topics(output, labels)
        logger.info(
            "topic batches: %s from %d texts in %.0f s", cluster_sizes(labels), len(texts), time.perf_counter() - t0
        )
    if dist is not None:
        dist.barrier()
        labels = load_topics(output, len(texts))
    return TopicBatchOrder(labels, config.batch_size, config.seed)


def _check_memory(step_loss: ObjectiveStep, sfp, texts: list[str], config: TrainConfig) -> None:
    """Measure a forward and backward of the longest of the first texts (``training.memory``), log the step's
    estimated memory and warn where it comes near what this process can reach. Leaves no gradient and the random
    state as it was."""
    largest = max(PROBE_ROWS)
    sample = sorted(texts[:2000], key=len)[-largest:]
    if len(sample) < largest:
        return
    rows = step_loss.rows_at_once(config.batch_size)
    rows = rows * (2 + config.hard_negatives) // 2  # hard negatives: a third pass of that many texts per row

    def probe(n: int) -> None:  # the n longest texts, forward and backward; a zero loss scale adds no gradient
        step_loss.backward(sfp, sample[-n:], np.random.default_rng(0), scale=0.0)

    state = torch.get_rng_state()
    try:
        memory = measure_step(probe, rows)
    finally:
        sfp.zero_grad(set_to_none=True)
        torch.set_rng_state(state)
    if memory is None:
        return
    logger.info("memory: %s (measured on %d and %d rows, scaled to %d)", memory.describe(), *PROBE_ROWS, rows)
    advice = memory_advice(memory, config.gradient_checkpointing, config.grad_cache)
    if advice:
        logger.warning(advice)


def _pseudo_query_units(config: TrainConfig, device: str, output: Path, rank: int, dist):
    """Generate (or take from an earlier start of this run) the pseudo-queries of ``config.pseudo_queries`` passages
    of the corpus into ``output/pseudo_queries.jsonl``; rank 0 writes, the other ranks read."""
    from .query_generation import PSEUDO_QUERIES_FILE, QueryGenerator, generate_pairs

    documents = load_texts(config.data, text_field=config.text_field, units="documents")
    path = output / PSEUDO_QUERIES_FILE
    if rank == 0:
        bar = progress_bar(config.pseudo_queries, "pseudo-queries", "passage", None, logger)
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)
            if bar.disable and (done % 320 < 32 or done == total):  # a log file: a line every 10 batches
                logger.info("pseudo-queries: %d/%d passages (%.0f s)", done, total, time.perf_counter() - t0)

        # passages drawn with seed 0, not the run's: every run on a corpus asks for the same ones (a reusable file)
        result = generate_pairs(
            documents, path, config.pseudo_queries, lambda: QueryGenerator.load(config.generator, device),
            seed=0, progress=progress, round_trip=config.pseudo_query_round_trip,
        )  # fmt: skip
        bar.close()
        logger.info("%s", result.summary())
    if dist:
        dist.barrier()
    if rank != 0:
        result = generate_pairs(
            documents, path, config.pseudo_queries, lambda: None, seed=0, round_trip=config.pseudo_query_round_trip
        )
    if not result.pairs:
        raise TrainingDataError(f"no generated query passed the checks ({result.summary()}); see {path}")
    return result


def _nf4_installed() -> bool:
    """Whether 4-bit NF4 can be tried here (bitsandbytes installed); says at once when it cannot."""
    if is_available("bitsandbytes"):
        return True
    logger.warning(
        "QLoRA needs bitsandbytes, which is not installed: this run trains plain LoRA over full-precision weights "
        "instead of 4-bit NF4 (more memory, same adapter format); for QLoRA: pip install 'sfp-rag[train]'"
    )
    return False


def load_model(config: TrainConfig, device: str):
    """The model to train, its tokenizer and the quantization it got: NF4 where ``config`` asks for it and it works
    here, plain LoRA otherwise (said with the reason)."""
    return _model_with_fallback(config, device, config.quantization == "nf4" and _nf4_installed())


def _model_with_fallback(config: TrainConfig, device: str, nf4: bool):
    """Load the model; if NF4 cannot train here, say what failed and fall back to plain LoRA."""
    if nf4:
        try:
            model, tokenizer = build_peft_model(config, device, "nf4")
            _smoke_step(model, tokenizer, config, device)
            return model, tokenizer, "nf4"
        except Exception as err:  # bitsandbytes fails in many backend-specific ways; all of them mean "no NF4 here"
            logger.warning(
                "4-bit NF4 training does not work on %s (%s: %s); falling back to plain LoRA",
                device,
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
    model, tokenizer = build_peft_model(config, device, "none")
    return model, tokenizer, "none"


def _smoke_step(model, tokenizer, config: TrainConfig, device: str) -> None:
    """One forward and backward on two short texts (no optimizer step), to find a backend that cannot train."""
    from ..embedding.modeling import SFPModel

    step = ObjectiveStep(config, tokenizer, device, distributed=False)
    rng = torch.get_rng_state()
    loss, _ = step(SFPModel(model), ["a test sentence.", "another one."])
    loss.backward()
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)  # the check must not change the run's random stream


def _dev_score(sfp, tokenizer, config: TrainConfig, device: str) -> float:
    from ..embedding.encoder import SFPEncoder
    from ..evaluation.sts import evaluate_sts

    encoder = SFPEncoder(sfp, tokenizer, _inference_config(config, adapter=None), device=device)
    with autocast_context(device, resolve_train_autocast(config.dtype, device)):
        score = evaluate_sts(encoder, config.eval_data, tasks=["STSBenchmark-dev"])["scores"]["STSBenchmark-dev"]
    sfp.train()
    return score


def _save_adapter(model, directory: Path, config: TrainConfig, extra: dict[str, Any]) -> None:
    save_adapter(model, directory, _inference_config(config, adapter=None), {**config.to_dict(), **extra})


def _inference_config(config: TrainConfig, adapter: str | None, max_text_tokens: bool = False) -> EncoderConfig:
    """The encoder a run saves (texts cut at the inference length), or with ``max_text_tokens`` the one that sees
    texts as training does (cut at ``config.max_text_tokens``)."""
    return EncoderConfig(
        model=config.model,
        adapter=adapter,
        template=config.template,
        query_template=config.query_template,
        pooling=config.pooling,
        max_text_tokens=config.max_text_tokens if max_text_tokens else INFERENCE_MAX_TEXT_TOKENS,
    )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _average_gradients(params: list[torch.nn.Parameter], dist, world: int) -> None:
    """Average gradients over ranks. Only the adapter trains, so one all-reduce per tensor is cheap, and unlike DDP
    it allows any number of forward passes before the backward (the two-pass objectives)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def _init_distributed():
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist


def _rank_device(device: str, dist) -> str:
    resolved = resolve_device(device)
    if dist is not None and resolved == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return resolved
