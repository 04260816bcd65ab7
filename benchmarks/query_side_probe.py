"""Probe a query-side adapter: train title -> passage on Wikipedia with the document side frozen at the shipped
default, so documents (and symmetric STS, which embeds both texts with the document prompt) keep today's vectors
and only the query prompt's path learns.

Titles trained on both sides lift retrieval but cost STS (docs: ablation, "Titles for the general default"). Here the
default's adapter is merged into the backbone (fp32), a fresh LoRA adapter is trained on top, and each title batch's
positives (the paragraphs, document prompt) are embedded with that adapter switched off and without a graph: the
document tower is exactly the default, the query tower is the default plus the new adapter. Scored on the
NFCorpus-train proxy (first 128-token chunk of each document, centered, `question-sum` queries) with documents
embedded by the default and queries by the query tower; STS is unchanged by construction and not re-run.

    python benchmarks/query_side_probe.py --steps 40 --out-dir runs/s17/qside40

Writes benchmarks/results/ablation/proxy_nfcorpus_train_query-side-<tag>_question-sum.json, and the merged backbone
(fp32, 1.1 GB) beside the run as <out-dir>-base, reused by a later run there. A probe, not a feature:
nothing in the library serves a second adapter for queries.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import RESULTS, machine

from sfp_rag.embedding.backbones import load_backbone, save_weights
from sfp_rag.embedding.encoder import SFPEncoder, attach_adapter
from sfp_rag.evaluation.templates import evaluate_templates
from sfp_rag.training import trainer as trainer_module
from sfp_rag.training.config import TrainConfig

DEFAULT = str(Path(__file__).resolve().parents[1] / "sfp_rag" / "default_model")


def frozen_document_embed(self, model, first, second, query_side=True):
    """``ObjectiveStep._embed`` with the positives (document prompt) embedded by the backbone without the new adapter
    and without a graph; crop batches (both sides documents) are not used by this probe."""
    if not query_side:
        raise ValueError("the query-side probe trains title batches only (--title-share 1)")
    with trainer_module.autocast_context(self.device, self.autocast):
        a = self.first(first).to(self.device)
        b = self.second(second).to(self.device)
        anchor = model(a).rep2
        with torch.no_grad(), model.backbone.disable_adapter():
            positive = model(b).rep2
    return anchor, positive, a.num_tokens + b.num_tokens


class RoutedEncoder:
    """Queries through ``query``, everything else through ``document`` (attributes come from ``document``)."""

    def __init__(self, document: SFPEncoder, query: SFPEncoder) -> None:
        self._document, self._query = document, query

    def encode(self, sentences, prompt_name=None, **kwargs):
        side = self._query if prompt_name == "query" else self._document
        return side.encode(sentences, prompt_name=prompt_name, **kwargs)

    def __getattr__(self, name):
        return getattr(self._document, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/wiki_passages.jsonl.gz")
    parser.add_argument("--beir", default="../shared/data/beir/nfcorpus")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--lora-alpha", type=int, default=8)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()

    merged = Path(args.out_dir).with_name(Path(args.out_dir).name + "-base")
    if not (merged / "sfp_source.json").exists():  # the default merged, with its tokenizer: the probe's backbone
        backbone, tokenizer = load_backbone("gemma3-270m", device="cpu", dtype=torch.float32)
        backbone = attach_adapter(backbone, DEFAULT, merge=True)
        save_weights(backbone, merged, {"model": "gemma3-270m", "adapter": DEFAULT}, extra=tokenizer.save_pretrained)
    config = TrainConfig(
        data=args.data, output_dir=args.out_dir, model=str(merged), objective="two-pass-title",
        template="eol-sum", query_template="question-sum", max_text_tokens=64, batch_size=32, lr=args.lr,
        warmup_steps=max(1, round(args.steps * 0.15)), max_steps=args.steps, quantization="none",
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, seed=42,
    )  # fmt: skip
    trainer_module.ObjectiveStep._embed = frozen_document_embed
    t0 = time.perf_counter()
    trainer_module.train(config, show_progress=False)
    train_s = time.perf_counter() - t0

    document = SFPEncoder.from_pretrained(runtime="torch")
    query = SFPEncoder.from_pretrained(args.out_dir, runtime="torch")
    result = evaluate_templates(
        RoutedEncoder(document, query), ["question-sum"], beir_data=args.beir, split="train", chunk_size=128,
        max_chunks=1, centering=True,
    )  # fmt: skip
    tag = args.tag or f"{args.steps}"
    out = RESULTS / "ablation" / f"proxy_nfcorpus_train_query-side-{tag}_question-sum.json"
    result.update(
        probe="query-side adapter (benchmarks/query_side_probe.py): documents by the shipped default, queries by "
        "the default merged + a LoRA adapter trained on Wikipedia titles against frozen default passage vectors",
        train={
            "data": args.data,
            "steps": args.steps,
            "lr": args.lr,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "seconds": round(train_s, 1),
        },  # fmt: skip
        machine=machine(),
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["rows"], indent=2), f"train {train_s:.0f} s ->", out)


if __name__ == "__main__":
    main()
