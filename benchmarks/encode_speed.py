"""Encoding speed: sfp_rag's encoder variants against the paths users take today, in one run, as ratios.

Every variant embeds the same sentences rendered in the same two-stage prompt, so the same prompt tokens are
processed; tokens/s counts real (non-padding) prompt tokens. Variants:

- ``plain``: what a user writes today: AutoModelForCausalLM(output_hidden_states=True), batches of 10 in input
  order, fp32, last hidden layer at the last token (the LM head runs too).
- ``sentence-transformers``: the same model in sentence-transformers with last-token pooling (batch 32).
- ``llamaindex-hf``: LlamaIndex's HuggingFaceEmbedding on the same model (it runs sentence-transformers, with
  mean pooling: it offers no last-token pooling, so its vectors differ; only its speed compares).
- ``sfp-fp32``: SFPEncoder in fp32 (no LM head, length-sorted batches, inference_mode).
- ``sfp-auto``: SFPEncoder with dtype="auto", the default (bf16 weights where the CPU has AMX/AVX512-BF16).
- ``sfp-bf16``: SFPEncoder with bf16 weights, explicitly.
- ``sfp-openvino``: SFPEncoder with ``runtime="openvino"`` (the default where OpenVINO is installed), precision
  from ``dtype="auto"``; ``sfp-openvino-f32``: the same in f32.
- ``sfp-openvino-int8w``: the OpenVINO model with int8 weights (NNCF ``compress_weights``, INT8_ASYM per channel;
  needs ``pip install nncf``; a lever measured, not shipped).
- ``sfp-openvino-int8``: the OpenVINO model fully quantized to int8 (NNCF ``quantize``, weights and activations,
  SmoothQuant alpha 0.5, calibrated on 128 Wikipedia passages from ``wiki_passages.jsonl.gz``, never on the texts it
  is timed on; needs ``pip install nncf``; a lever measured, not shipped; its quantization time is ``setup_s``).
- ``sfp-int8-dynamic``: PyTorch dynamic int8 quantization of every linear layer (a lever measured, not shipped).
- ``sfp-compile``: ``torch.compile`` (inductor, weights frozen and prepacked) of the bf16 backbone (a lever
  measured, not shipped; its compile time is ``setup_s``).

``--texts scifact`` embeds SciFact documents (title + abstract), the length of the chunks an index holds.

Each timing is the median of ``--repeats`` runs after a warm-up. With ``--quality`` every sfp variant is also
scored on STS-B test (Spearman x100) against fp32, the rule being: keep a variant only if it drops <= 0.5 points.

    python benchmarks/encode_speed.py                      # default model, CPU
    python benchmarks/encode_speed.py --quality            # + STS-B check per variant
    python benchmarks/encode_speed.py --device cuda --sentences 8192 --batch-size 256
    python benchmarks/encode_speed.py --texts scifact --sentences 128 --batch-size 32 --repeats 2 \
        --variants sfp-auto,sfp-openvino,sfp-openvino-f32,sfp-openvino-int8w,sfp-openvino-int8,sfp-int8-dynamic,\
sfp-compile --out benchmarks/results/encode_speed_runtimes_scifact.json

Writes benchmarks/results/encode_speed_<device>_<model>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, safe_name  # noqa: E402  (benchmarks/ is the script's folder)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_sentences(n: int) -> list[str]:
    with gzip.open(SHARED / "unsup_sentences.txt.gz", "rt", encoding="utf-8") as f:
        out = []
        for line in f:
            out.append(line.strip())
            if len(out) == n:
                return out
    return out


def load_documents(dataset: str, n: int) -> list[str]:
    out = []
    with gzip.open(SHARED / "beir" / dataset / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            out.append(f"{doc['title']}\n\n{doc['text']}")
            if len(out) == n:
                break
    return out


def openvino_int8(enc, calibration: int = 128) -> None:
    """Quantize ``enc``'s OpenVINO model to int8 (weights and activations) with NNCF, in place."""
    import nncf
    import openvino as ov

    texts = []
    with gzip.open(SHARED / "wiki_passages.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc['title']}\n\n{doc['text']}")
            if len(texts) == calibration:
                break
    inputs = [np.array([p.input_ids], dtype=np.int64) for p in enc.prompt_tokenizer.tokenize(texts)]
    backbone, core = enc.model.backbone, ov.Core()
    quantized = nncf.quantize(
        core.read_model(str(backbone.folder / "model.xml")),
        nncf.Dataset(inputs),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(inputs),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=0.5)
        ),
    )
    properties = {"INFERENCE_PRECISION_HINT": backbone.precision, "PERFORMANCE_HINT": "LATENCY"}
    backbone.compiled.request = core.compile_model(quantized, "CPU", properties).create_infer_request()
    backbone.precision = f"int8, {backbone.precision}"


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--template", default="eol-sum")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument(
        "--texts",
        choices=["wiki", "scifact"],
        default="wiki",
        help="wiki: Wikipedia sentences; scifact: SciFact documents (title + abstract: chunk-sized texts)",
    )
    parser.add_argument("--out", default=None, help="result file [default: encode_speed_<device>_<model>.json]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="plain,sentence-transformers,llamaindex-hf,sfp-fp32,sfp-auto,sfp-bf16")
    parser.add_argument("--quality", action="store_true", help="also score each sfp variant on STS-B test")
    args = parser.parse_args()

    from sfp_rag.embedding.backbones import resolve_model_dir
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.embedding.prompts import normalize_sentence

    sentences = load_sentences(args.sentences) if args.texts == "wiki" else load_documents("scifact", args.sentences)
    model_dir = resolve_model_dir(args.model)
    reference = SFPEncoder.from_pretrained(
        args.model, template=args.template, device=args.device, dtype="float32", runtime="torch"
    )
    prompts = [reference.prompt_tokenizer.template.render(normalize_sentence(s)).prompt for s in sentences]
    n_tokens = sum(len(p.input_ids) for p in reference.prompt_tokenizer.tokenize(sentences))
    ref_vectors = reference.encode(sentences, batch_size=args.batch_size)
    results: dict[str, dict] = {}

    def record(name: str, seconds: float, times: list[float], vectors: np.ndarray | None, **extra) -> None:
        entry = {
            "seconds": seconds,
            "times": times,
            "sentences_per_s": len(sentences) / seconds,
            "tokens_per_s": n_tokens / seconds,
            **extra,
        }
        if vectors is not None:
            v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            entry["min_cosine_to_fp32"] = float(np.min(np.sum(v * ref_vectors, axis=1)))
        results[name] = entry
        print(
            f"{name:22s} {entry['tokens_per_s']:8.0f} tok/s {entry['sentences_per_s']:7.1f} sent/s"
            + (f"  min cos {entry['min_cosine_to_fp32']:.4f}" if "min_cosine_to_fp32" in entry else ""),
            flush=True,
        )

    wanted = args.variants.split(",")
    if "plain" in wanted:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        lm = AutoModelForCausalLM.from_pretrained(model_dir).to(args.device).eval()
        tok.padding_side = "left"  # so that [:, -1] is the last prompt token of every row
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

        def plain():
            out = []
            with torch.no_grad():
                for i in range(0, len(prompts), 10):
                    batch = tok(prompts[i : i + 10], return_tensors="pt", padding=True).to(args.device)
                    hidden = lm(**batch, output_hidden_states=True).hidden_states[-1]
                    out.append(hidden[:, -1].float().cpu().numpy())
            return np.concatenate(out)

        seconds, times = timed(plain, args.repeats)
        record("plain", seconds, times, plain())
        del lm

    if "sentence-transformers" in wanted or "llamaindex-hf" in wanted:
        try:
            from sentence_transformers import SentenceTransformer, models

            word = models.Transformer(str(model_dir), max_seq_length=512)
            word.tokenizer.padding_side = "right"
            st = SentenceTransformer(
                modules=[word, models.Pooling(word.get_word_embedding_dimension(), "lasttoken")], device=args.device
            )
            if "sentence-transformers" in wanted:
                fn = lambda: st.encode(prompts, batch_size=32, show_progress_bar=False)  # noqa: E731
                seconds, times = timed(fn, args.repeats)
                record("sentence-transformers", seconds, times, fn())
            if "llamaindex-hf" in wanted:
                from llama_index.embeddings.huggingface import HuggingFaceEmbedding

                emb = HuggingFaceEmbedding(
                    model_name=str(model_dir), device=args.device, embed_batch_size=32, max_length=512
                )  # its default: mean pooling
                fn = lambda: np.asarray(emb.get_text_embedding_batch(prompts))  # noqa: E731
                seconds, times = timed(fn, args.repeats)
                record("llamaindex-hf", seconds, times, fn())
        except ImportError as err:
            print(f"peers skipped: {err}")

    quality = {}
    sfp_variants = {  # name: (dtype, runtime, what is done to the torch model after loading)
        "sfp-fp32": ("float32", "torch", None),
        "sfp-auto": ("auto", "torch", None),
        "sfp-bf16": ("bfloat16", "torch", None),
        "sfp-openvino": ("auto", "openvino", None),
        "sfp-openvino-f32": ("float32", "openvino", None),
        "sfp-openvino-int8w": ("auto", "openvino", "int8w"),
        "sfp-openvino-int8": ("auto", "openvino", "int8"),
        "sfp-int8-dynamic": ("float32", "torch", "int8"),
        "sfp-compile": ("auto", "torch", "compile"),
    }
    for name, (dtype, runtime, change) in sfp_variants.items():
        if name not in wanted:
            continue
        enc = (
            reference
            if name == "sfp-fp32"
            else SFPEncoder.from_pretrained(
                args.model, template=args.template, device=args.device, dtype=dtype, runtime=runtime
            )
        )
        setup = None
        if change == "int8" and runtime == "openvino":
            t = time.perf_counter()
            openvino_int8(enc)
            setup = time.perf_counter() - t
        elif change == "int8":  # PyTorch's dynamic quantization: int8 weights, activations quantized per batch
            enc.model.backbone = torch.ao.quantization.quantize_dynamic(
                enc.model.backbone, {torch.nn.Linear}, dtype=torch.qint8
            )
        elif change == "int8w":  # NNCF's int8 weight compression of the OpenVINO model (pip install nncf)
            import nncf
            import openvino as ov

            backbone, core = enc.model.backbone, ov.Core()
            model = nncf.compress_weights(
                core.read_model(str(backbone.folder / "model.xml")), mode=nncf.CompressWeightsMode.INT8_ASYM
            )
            properties = {"INFERENCE_PRECISION_HINT": backbone.precision, "PERFORMANCE_HINT": "LATENCY"}
            backbone.compiled.request = core.compile_model(model, "CPU", properties).create_infer_request()
            backbone.precision = f"int8 weights, {backbone.precision}"
        elif change == "compile":  # inductor with weight prepacking (freezing); its compile time is reported apart
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            enc.model.backbone.forward = torch.compile(enc.model.backbone.forward, dynamic=True)
            t = time.perf_counter()
            enc.encode(sentences[:64], batch_size=args.batch_size)
            setup = time.perf_counter() - t
        fn = lambda e=enc: e.encode(sentences, batch_size=args.batch_size)  # noqa: E731
        seconds, times = timed(fn, args.repeats)
        record(name, seconds, times, fn(), runtime=enc.runtime, setup_s=setup)
        if args.quality:
            from sfp_rag.evaluation.sts import evaluate_sts

            quality[name] = evaluate_sts(enc, SHARED / "senteval", ["STSBenchmark"])["scores"]["STSBenchmark"]
            print(f"{name:22s} STS-B test {quality[name]:.2f}", flush=True)

    base = results.get("plain", {}).get("tokens_per_s")
    ratios = {name: r["tokens_per_s"] / base for name, r in results.items()} if base else {}
    if "sfp-auto" in results:  # every variant against today's default path
        today = results["sfp-auto"]["tokens_per_s"]
        ratios.update({f"{n}/sfp-auto": r["tokens_per_s"] / today for n, r in results.items()})
    for peer in ("sentence-transformers", "llamaindex-hf"):
        if peer in results and "sfp-auto" in results:
            ratios[f"sfp-auto/{peer}"] = results["sfp-auto"]["tokens_per_s"] / results[peer]["tokens_per_s"]
    print("ratios to plain:", {k: round(v, 2) for k, v in ratios.items()})
    record_all = {
        "benchmark": "encode_speed",
        "model": args.model,
        "template": args.template,
        "device": args.device,
        "texts": args.texts,
        "sentences": len(sentences),
        "prompt_tokens": n_tokens,
        "batch_size": args.batch_size,
        "machine": machine(),
        "results": results,
        "ratios": ratios,
        "sts_b_test": quality,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    default = Path(__file__).parent / "results" / f"encode_speed_{args.device}_{safe_name(args.model)}.json"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record_all, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
