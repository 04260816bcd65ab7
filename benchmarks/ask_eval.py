"""How good are `sfp-rag ask` answers? 20 questions about examples/docs, each with the file that answers it and the
fact a right answer contains (benchmarks/data/ask_questions.jsonl, written for this purpose).

For each question: was the right file retrieved (among the k sources), did the answer cite it ([n] pointing at that
file), and does the answer contain the fact (a regex, case-insensitive)? Both answer modes of `sfp-rag ask`:
extractive (the default: cited sentences of the sources) and generated (a local LM, greedy decoding, so a rerun
gives the same).

    python benchmarks/ask_eval.py                        # both modes; generation with SmolLM2-135M-Instruct
    python benchmarks/ask_eval.py --mode extract
    python benchmarks/ask_eval.py --mode generate --llm path/to/model --k 3

Builds the index of `examples/docs` in a scratch home; writes benchmarks/results/ask_eval_extract.json and
ask_eval_generate_<llm>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine

HERE = Path(__file__).resolve().parent


def evaluate(questions, answer, label: str) -> tuple[dict, list[dict]]:
    """Run ``answer(question) -> result`` over the questions; the summary and one row per question."""
    rows = []
    for q in questions:
        started = time.perf_counter()
        result = answer(q["question"])
        seconds = time.perf_counter() - started
        sources = result["sources"]
        row = {
            **q,
            "answer": result["answer"],
            "truncated": result.get("truncated", False),
            "retrieved": any(s["source"] == q["file"] for s in sources),
            "top1": bool(sources) and sources[0]["source"] == q["file"],
            "cited_right_file": any(s["cited"] and s["source"] == q["file"] for s in sources),
            "cited_any": any(s["cited"] for s in sources),
            "fact": bool(re.search(q["fact"], result["answer"], re.IGNORECASE)),
            "seconds": round(seconds, 3),
        }
        rows.append(row)
        print(f"{label} [{'F' if row['fact'] else '-'}{'C' if row['cited_right_file'] else '-'}] {q['question']}")
        print(f"      {result['answer'][:200]!r}")
    n = len(rows)
    summary = {
        "questions": n,
        "right_file_retrieved": sum(r["retrieved"] for r in rows),
        "right_file_first": sum(r["top1"] for r in rows),
        "cites_right_file": sum(r["cited_right_file"] for r in rows),
        "cites_anything": sum(r["cited_any"] for r in rows),
        "contains_fact": sum(r["fact"] for r in rows),
        "fact_and_right_citation": sum(r["fact"] and r["cited_right_file"] for r in rows),
        "truncated": sum(r["truncated"] for r in rows),
        "median_seconds": sorted(r["seconds"] for r in rows)[n // 2],
    }
    return summary, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("both", "extract", "generate"), default="both")
    parser.add_argument("--llm", default=None, help="answering LM of --mode generate [default: smollm2-135m]")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=2, help="sentences of an extractive answer")
    parser.add_argument("--home", default=None, help="index home to build in [default: a temporary folder]")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()

    from sfp_rag import Index
    from sfp_rag.integrations.answering import DEFAULT_LLM, LocalLLM, answer_question
    from sfp_rag.integrations.extractive import extract_answer
    from sfp_rag.retrieval.searcher import Searcher

    questions = [json.loads(line) for line in (HERE / "data" / "ask_questions.jsonl").read_text().splitlines()]
    home = Path(args.home or tempfile.mkdtemp(prefix="sfp-ask-"))
    index = Index.create(home / "docs", docs=HERE.parent / "examples" / "docs", if_exists="update")
    searcher = Searcher(index.collection, index.encoder)
    modes = ("extract", "generate") if args.mode == "both" else (args.mode,)
    for mode in modes:
        if mode == "extract":
            summary, rows = evaluate(questions, lambda q: extract_answer(q, searcher, args.k, args.sentences), mode)
            extra, name = {"sentences": args.sentences}, "ask_eval_extract.json"
        else:
            llm = LocalLLM.load(args.llm)
            summary, rows = evaluate(questions, lambda q: answer_question(q, searcher, llm, args.k), mode)
            llm_name = Path(str(args.llm or DEFAULT_LLM)).name
            extra = {"llm": args.llm or DEFAULT_LLM, "max_new_tokens": llm.max_new_tokens}
            name = f"ask_eval_generate_{llm_name}.json"
        result = {
            "kind": "ask-eval",
            "mode": mode,
            **extra,
            "k": args.k,
            "embedder": index.info()["model"],
            "command": "python benchmarks/ask_eval.py --mode " + mode,
            "summary": summary,
            "rows": rows,
            "machine": machine(),
        }
        print(mode, json.dumps(summary, indent=2))
        out = Path(args.out_dir) / name
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
