"""Probe a sparse representation from the same pass (PromptReps, Zhuang et al., 2024, arXiv 2404.18424) as a third
retriever, before building anything around it.

The prompt asks for the text "in one word", so the LM head's next-token logits at Rep2 weigh the vocabulary for the
text. A chunk's sparse vector is ``log(1 + relu(logit))`` over a set of token ids: the tokens of its own words
(``own``, PromptReps' choice: stopwords and punctuation dropped), or those plus the ``--expand`` top-scoring tokens
(``own+topK``). A query's vector is the same under the query prompt. A document scores its best chunk's dot product.

No second pass: Rep2's hidden state is recovered exactly from the cached unit vector. Gemma's final RMSNorm gives
``h = n * (1 + w)`` with ``|n| = sqrt(d)``, so the unit vector ``v = h / |h|`` determines ``h = c v`` with
``c = sqrt(d) / |v / (1 + w)|`` (checked against a direct forward pass on a few texts; the largest relative error is
in the JSON). Logits are ``h @ E^T`` (Gemma ties its head to the input embeddings; the adapter does not touch them).

Scored alone, fused with BM25, and fused with the default hybrid (dense + BM25) by min-max at weights swept on the
tuning split:

    python benchmarks/promptreps_probe.py --data ../shared/data/beir/nfcorpus --split train

Writes benchmarks/results/promptreps_<dataset>_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine
from fusion_sweep import paired_bootstrap


def head_and_norm(encoder):
    """(the LM head's matrix E (V, d) as fp32, the final norm's weight w (d,)) of the encoder's backbone."""
    backbone = encoder.model.backbone
    E = backbone.get_input_embeddings().weight.detach().float()
    norms = [m for name, m in backbone.named_modules() if name.endswith("norm") and hasattr(m, "weight")]
    final = norms[-1]  # the last norm module registered is the model's final norm
    return E, final.weight.detach().float()


def hidden_from_unit(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rep2's hidden state from its unit vector, for Gemma's RMSNorm output ``n * (1 + w)``, ``|n| = sqrt(d)``."""
    scale = np.sqrt(v.shape[1]) / np.linalg.norm(v / (1.0 + w), axis=1, keepdims=True)
    return v * scale


def allowed_ids(tokenizer, texts: list[str], stop: set[str]) -> list[np.ndarray]:
    """Each text's own token ids (as written and lowercased), without special tokens, stopwords and punctuation."""
    import re

    keep_cache: dict[int, bool] = {}

    def keep(i: int) -> bool:
        if i not in keep_cache:
            piece = tokenizer.decode([i]).strip().lower()
            keep_cache[i] = bool(re.search(r"[a-z0-9]", piece)) and piece not in stop and i not in special
        return keep_cache[i]

    special = set(tokenizer.all_special_ids)
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += tokenizer(text.lower(), add_special_tokens=False)["input_ids"]
        out.append(np.array(sorted({i for i in ids if keep(i)}), dtype=np.int64))
    return out


def sparse_matrix(H: np.ndarray, E, own: list[np.ndarray], expand: int, batch: int = 256):
    """CSR (n, V) of log1p(relu(logits)) over each row's own ids, plus its top ``expand`` ids; and the seconds the
    head's matrix products took."""
    import scipy.sparse as sp
    import torch

    rows, cols, vals, head_s = [], [], [], 0.0
    for start in range(0, len(H), batch):
        t = time.perf_counter()
        logits = torch.from_numpy(H[start : start + batch]).float() @ E.T  # (b, V)
        head_s += time.perf_counter() - t
        top = torch.topk(logits, expand, dim=1).indices.numpy() if expand else None
        weights = torch.log1p(torch.relu(logits)).numpy()
        for j in range(len(logits)):
            ids = own[start + j]
            if top is not None:
                ids = np.union1d(ids, top[j])
            w = weights[j, ids]
            nz = w > 0
            rows.append(np.full(int(nz.sum()), start + j))
            cols.append(ids[nz])
            vals.append(w[nz])
    shape = (len(H), E.shape[0])
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    return m, head_s


def doc_run(scores: np.ndarray, doc_ids: list[str], qids: list[str], depth: int = 100) -> dict:
    """Per query, the top ``depth`` documents by their best chunk's score."""
    docs = sorted(set(doc_ids))
    col = {d: i for i, d in enumerate(docs)}
    index = np.array([col[d] for d in doc_ids])
    run = {}
    for qi, q in enumerate(qids):
        best = np.full(len(docs), -np.inf)
        np.maximum.at(best, index, scores[qi])
        top = np.argsort(-best)[:depth]
        run[q] = {docs[i]: float(best[i]) for i in top if best[i] > 0}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR dataset folder")
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument("--model", default=None, help="encoder [default: the shipped default]")
    parser.add_argument("--expand", type=int, nargs="*", default=[0, 32], help="top-K expansion sizes (0: own ids)")
    parser.add_argument("--weights", type=float, nargs="*", default=[0.6, 0.7, 0.8, 0.9], help="other side's weight")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, chunk_vectors, dense_run, fuse, load_beir, score_run, top_of
    from sfp_rag.retrieval.bm25 import _bm25s

    started = time.perf_counter()
    data = load_beir(args.data, args.split)
    encoder = SFPEncoder.from_pretrained(args.model, runtime="torch")  # the torch model holds the head
    E, w = head_and_norm(encoder)
    wn = w.numpy()
    # the recovery, checked against a direct forward pass (fp32): Rep2 from its unit vector alone
    probe = [data.doc_text(d)[:400] for d in list(data.corpus)[:8]]
    with torch.inference_mode():
        batch = encoder.prompt_tokenizer(probe).to(encoder.device)
        direct = encoder.model(batch).rep2.float().cpu().numpy()
    recovered = hidden_from_unit(direct / np.linalg.norm(direct, axis=1, keepdims=True), wn)
    recovery_error = float(np.max(np.linalg.norm(recovered - direct, axis=1) / np.linalg.norm(direct, axis=1)))
    print(f"hidden-state recovery: largest relative error {recovery_error:.2e} over {len(probe)} texts")

    sparse_bm25 = bm25_run(data)
    dense, _ = dense_run(encoder, data, args.chunk_size, 32, also=sparse_bm25, centering=True)
    hybrid = fuse(dense, sparse_bm25)
    doc_ids, texts, vectors, _ = chunk_vectors(encoder, data, args.chunk_size, 32)
    qids = list(data.queries)
    qvecs = encoder.encode([data.queries[q] for q in qids], prompt_name="query")
    stop = set(_bm25s().stopwords.STOPWORDS_EN)
    own_docs = allowed_ids(encoder.tokenizer, texts, stop)
    own_queries = allowed_ids(encoder.tokenizer, [data.queries[q] for q in qids], stop)
    Hd = hidden_from_unit(np.asarray(vectors, dtype=np.float32), wn)
    Hq = hidden_from_unit(qvecs.astype(np.float32), wn)
    rows = {
        "BM25": score_run(data.qrels, sparse_bm25),
        "dense": score_run(data.qrels, top_of(dense)),
        "hybrid (dense + BM25)": score_run(data.qrels, top_of(hybrid)),
    }
    runs, cost = {}, {}
    for k in args.expand:
        name = "own" if k == 0 else f"own+top{k}"
        D, head_s = sparse_matrix(Hd, E, own_docs, k)
        Q, _ = sparse_matrix(Hq, E, own_queries, 0)  # queries: their own ids
        cost[name] = {
            "head_ms_per_chunk": round(1000 * head_s / len(texts), 3),
            "terms_per_chunk": round(D.nnz / len(texts), 1),
            "terms_per_query": round(Q.nnz / len(qids), 1),
        }
        scores = (Q @ D.T).toarray()
        run = doc_run(scores, doc_ids, qids)
        runs[name] = run
        rows[f"sparse {name}"] = score_run(data.qrels, run)
        for a in args.weights:
            rows[f"BM25 + sparse {name}, minmax BM25 weight {a:.1f}"] = score_run(
                data.qrels, fuse(sparse_bm25, run, fusion="minmax", alpha=a)
            )
            fused = fuse(top_of(hybrid), run, fusion="minmax", alpha=a)
            runs[f"hybrid + sparse {name}, hybrid weight {a:.1f}"] = fused
            rows[f"hybrid + sparse {name}, minmax hybrid weight {a:.1f}"] = score_run(data.qrels, fused)
    three = [n for n in rows if n.startswith("hybrid + sparse")]
    best = max(three, key=lambda n: rows[n]["nDCG@10"])
    best_run = runs[best.replace(", minmax hybrid weight", ", hybrid weight")]
    comparison = paired_bootstrap(data.qrels, best_run, top_of(hybrid))
    comparison.update(a=best, b="hybrid (dense + BM25)")
    result = {
        "kind": "promptreps-probe",
        "dataset": data.name,
        "split": args.split,
        "queries": len(qids),
        "chunks": len(texts),
        "encoder": encoder.identity(),
        "recovery_max_relative_error": recovery_error,
        "scores": rows,
        "cost": cost,
        "best_three_way": best,
        "paired_bootstrap": comparison,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(f"{data.name} {args.split}: {len(qids)} queries, {len(texts)} chunks ({result['machine']['cpu']})")
    print("| run | nDCG@10 | Recall@100 |\n|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s['nDCG@10']:.2f} | {s['Recall@100']:.2f} |")
    print("cost:", cost)
    c = comparison
    print(f"{best} - hybrid: {c['mean']:+.2f} nDCG@10, 95% interval {c['low']:+.2f} to {c['high']:+.2f}")
    out = Path(args.out or RESULTS / f"promptreps_{data.name}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
