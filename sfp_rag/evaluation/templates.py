"""Template sensitivity as a tool (the paper's open question 2): score prompt templates on tuning data in one run.

Two sides, because queries are not documents:

- **symmetric** (STS-B dev): each template embeds both sentences of a pair; Spearman x100.
- **query side** (a BEIR split meant for tuning, e.g. NFCorpus ``train``): documents are embedded once with the
  encoder's own template (cached), and each template embeds only the queries; nDCG@10. This is what an asymmetric
  query prompt would change, at the cost of embedding the queries alone.

Every template is a preset name or a template string with ``{text}`` (two-stage ones mark Rep1 with ``{rep1}``);
the model's weights are the same for all of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..embedding.prompts import get_template

logger = logging.getLogger(__name__)


def evaluate_templates(
    encoder,
    templates: list[str],
    sts_data: str | Path | None = None,
    beir_data: str | Path | None = None,
    split: str = "train",
    max_queries: int | None = None,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    max_chunks: int | None = None,
    centering: bool = True,
) -> dict[str, Any]:
    """Score each template; returns ``{"rows": [{template, stsb_dev, ndcg10, recall100}], ...}`` ranked by the
    BEIR score when there is one, else by STS-B dev. ``centering``: center the BEIR runs on the corpus, as the
    index does (pseudo-queries under each candidate template)."""
    from .beir import dense_run, load_beir, score_run, subset_queries
    from .sts import evaluate_sts

    if not templates:
        raise ValueError("give at least one template (a preset name or a string with {text})")
    for t in templates:
        get_template(t)  # fails now, with the list of presets, before anything is embedded
    if sts_data is None and beir_data is None:
        raise ValueError("give STS data (STS-B dev) and/or a BEIR folder to score the templates on")
    data = subset_queries(load_beir(beir_data, split), max_queries) if beir_data is not None else None
    rows = []
    for template in templates:
        row: dict[str, Any] = {"template": template, "text": get_template(template).template}
        if sts_data is not None:
            variant = type(encoder)(encoder.model, encoder.tokenizer, encoder.config.replace(template=template),
                                    device=encoder.device)  # fmt: skip
            scores = evaluate_sts(variant, sts_data, tasks=["STSBenchmark-dev"])["scores"]
            row["stsb_dev"] = round(scores["STSBenchmark-dev"], 2)
        if data is not None:
            run, _ = dense_run(encoder, data, chunk_size, chunk_overlap, query_prompt=template, max_chunks=max_chunks,
                               centering=centering)  # fmt: skip
            scores = score_run(data.qrels, run)
            row["ndcg10"], row["recall100"] = round(scores["nDCG@10"], 2), round(scores["Recall@100"], 2)
        logger.info("template %s: %s", template, row)
        rows.append(row)
    key = "ndcg10" if data is not None else "stsb_dev"
    rows.sort(key=lambda r: -r[key])
    return {
        "kind": "templates",
        "document_template": encoder.config.template,
        "beir": {"dataset": data.name, "split": split, "queries": len(data.queries)} if data is not None else None,
        "chunking": {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "max_chunks": max_chunks},
        "centering": centering if data is not None else None,
        "rows": rows,
    }


def format_template_table(result: dict[str, Any]) -> str:
    cols = [c for c in ("stsb_dev", "ndcg10", "recall100") if c in result["rows"][0]]
    names = {"stsb_dev": "STS-B dev", "ndcg10": "nDCG@10 (queries)", "recall100": "Recall@100"}
    lines = ["| rank | template | " + " | ".join(names[c] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for i, r in enumerate(result["rows"], 1):
        lines.append(f"| {i} | `{r['template']}` | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)
