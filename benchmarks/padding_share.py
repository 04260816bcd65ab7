"""How much of an index build's compute is padding: the ceiling of what padding-free (packed) batches could save.

Reads the chunks of a built index, renders them in the encoder's prompt, and plans batches exactly as a build does
(groups of ``EMBED_GROUP`` chunks, length-sorted batches of ``--batch-size``); prints the share of padded positions.

    python benchmarks/index_query.py --dataset scifact           # builds indexes/bench-scifact
    python benchmarks/padding_share.py indexes/bench-scifact

Writes benchmarks/results/padding_share_<index name>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sfp_rag.embedding.backbones import load_fast_tokenizer, resolve_model_dir
    from sfp_rag.embedding.config import EncoderConfig
    from sfp_rag.embedding.encoder import plan_batches
    from sfp_rag.embedding.tokenization import PromptTokenizer
    from sfp_rag.retrieval.builder import EMBED_GROUP

    manifest = json.loads((args.index / "manifest.json").read_text())
    config = EncoderConfig.from_dict(manifest["encoder"]["config"])
    texts = [json.loads(line)["text"] for line in (args.index / "docstore.jsonl").open(encoding="utf-8")]
    prompter = PromptTokenizer(
        load_fast_tokenizer(resolve_model_dir(config.model)), config.template, max_text_tokens=config.max_text_tokens
    )
    lengths = [len(p.input_ids) for p in prompter.tokenize(texts)]
    real = padded = 0
    for start in range(0, len(lengths), EMBED_GROUP):
        group = lengths[start : start + EMBED_GROUP]
        for rows in plan_batches(group, args.batch_size):
            longest = max(group[i] for i in rows)
            real += sum(group[i] for i in rows)
            padded += longest * len(rows)
    result = {
        "benchmark": "padding_share",
        "index": args.index.name,
        "chunks": len(lengths),
        "mean_prompt_tokens": sum(lengths) / len(lengths),
        "batch_size": args.batch_size,
        "group": EMBED_GROUP,
        "padding_share": 1 - real / padded,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}))
    out = Path(__file__).parent / "results" / f"padding_share_{args.index.name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
