"""Index a folder and search it from Python (what `sfp-rag index` and `sfp-rag query` do).

python examples/build_and_query.py
"""

from __future__ import annotations

from pathlib import Path

from sfp_rag import Searcher, SFPEncoder, build_index

HERE = Path(__file__).parent


def main() -> None:
    encoder = SFPEncoder.from_pretrained()  # the default model; dtype "auto" uses bf16 matmuls on AMX CPUs
    report = build_index(HERE / "docs", encoder, HERE.parent / "indexes" / "example-docs", hybrid=True)
    print(f"{report.files} files, {report.chunks} chunks ({report.embedded} embedded, {report.reused} reused)")

    searcher = Searcher.open(report.path, encoder=encoder)  # keep it around: queries are then fast
    for question in ["What happens to my other devices after a password reset?", "How fast do tectonic plates move?"]:
        print(f"\n{question}")
        for hit in searcher.search(question, k=2, mode="hybrid"):
            print(f"  [{hit.score:.3f}, cosine {hit.cosine:.3f}] {hit.source}: {' '.join(hit.text.split())[:90]}...")


if __name__ == "__main__":
    main()
