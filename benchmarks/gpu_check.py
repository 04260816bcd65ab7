"""The GPU claims of this project, checked in one command on a machine with CUDA, with or without the model packages.

    python benchmarks/gpu_check.py                       # everything, about 6-8 minutes on an H200
    python benchmarks/gpu_check.py --skip faiss,train7b  # parts: encode, train, train7b, faiss
    python benchmarks/gpu_check.py --export-shapes benchmarks/gpu_shapes   # here, before going to a bare GPU box
    python benchmarks/gpu_check.py --dry                 # the whole script on the CPU with tiny shapes (a test)

Backbones. Where the default backbone's weights are installed (the gemma3-270m packages), the check uses them. On a
bare GPU box (no network, no model packages) it builds **random weights of the real shapes** and says so in its
output and JSON: speed and memory do not depend on weight values, quality is not measured. The Gemma-3-270M shape
comes from ``--shapes DIR`` (its config and tokenizer, written by ``--export-shapes`` on a machine with the packages
and carried along, 5.6 MB), or, without it, from the config below with a small byte-level tokenizer trained here
(token counts then differ from Gemma's). The paper's scale is a Mistral-7B shape (a Llama config: hidden 4096, MLP
14336, 32 layers, 32 heads / 8 KV heads, vocabulary 32,000) with such a tokenizer.

Parts:
1. ``encode``: throughput of the default embedder (the shipped adapter on the Gemma-3-270M backbone) in bf16 at
   batch 64, 256 and 1024, in prompt tokens/s, and the FLOP rate as a fraction of the GPU's dense bf16 peak,
   counted from the parameters that do matrix work (2 x non-embedding parameters x tokens: the embedding table is a
   lookup; attention adds a few percent at these lengths and is left out). A batch-of-one check says whether
   batched fp32 and bf16 vectors equal unbatched ones.
2. ``train``: a QLoRA step (NF4 weights, bf16 compute) at the Gemma-3-270M shape, single-pass against both
   two-pass objectives (``benchmarks/train_cost.py``: step time and peak CUDA memory as ratios).
3. ``train7b``: the same at the Mistral-7B shape, and the memory of batch 256 there with GradCache (64-row
   sub-batches) and gradient checkpointing, the reference setup's batch.
4. ``faiss``: FAISS on 1M vectors of the model's width, GPU against CPU (needs a FAISS GPU build).

Where no CUDA GPU is present it says so and exits 0 (``--dry`` runs the parts on the CPU instead). Writes one JSON,
benchmarks/results/gpu_check_<gpu>.json (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, machine

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}  # fmt: skip
# Gemma-3-270M's text config (the fields that set its shape), for a box that has neither the packages nor --shapes.
GEMMA3_270M = {
    "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    "tie_word_embeddings": True, "query_pre_attn_scalar": 256, "sliding_window": 512,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
}  # fmt: skip
MISTRAL_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0}  # fmt: skip
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}  # --dry


def peak_tflops(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def sentences(n: int) -> list[str]:
    path = SHARED / "unsup_sentences.txt.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [line.strip() for line, _ in zip(f, range(n))]
    words = "the of and a in to is was for on as with by at from his that an were are which this be".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 20)).capitalize() + "." for i in range(n)]


# --- backbones -------------------------------------------------------------------------------------------------


def export_shapes(out: Path) -> None:
    """Write the installed Gemma-3-270M's config and tokenizer (no weights) to ``out``, to carry to a GPU box."""
    from sfp_rag.embedding.backbones import resolve_model_dir

    source = Path(resolve_model_dir("gemma3-270m"))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", out / "config.json")
    shutil.copy(source / "tokenizer_config.json", out / "tokenizer_config.json")
    with open(source / "tokenizer.json", "rb") as f, gzip.open(out / "tokenizer.json.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    print(f"wrote {out} (config and tokenizer of {source.name}, no weights)")


def byte_level_tokenizer(out: Path, vocab_size: int) -> None:
    """A byte-level BPE tokenizer trained on the sentences here, for shapes whose real tokenizer is not at hand."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(sentences(20_000), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(out)


def build_backbone(kind: str, work: Path, shapes: Path | None, device: str, dry: bool) -> tuple[str, dict]:
    """A model folder for ``kind`` (gemma: Gemma-3-270M, 7b: the Mistral-7B shape), and what it is."""
    import torch
    from transformers import Gemma3TextConfig, Gemma3TextModel, LlamaConfig, LlamaModel

    if kind == "gemma" and not dry:
        try:
            from sfp_rag.embedding.backbones import resolve_model_dir

            return str(resolve_model_dir("gemma3-270m")), {"weights": "real (the installed gemma3-270m packages)"}
        except Exception:  # not installed: random weights of its shape
            pass
    out = work / f"{kind}-random"
    info = {"weights": "RANDOM, of the real shapes (speed and memory only; no quality is measured)"}
    if (out / "config.json").exists():
        return str(out), {**info, **json.loads((out / "sfp_shape.json").read_text())}
    out.mkdir(parents=True, exist_ok=True)
    if kind == "gemma":
        if shapes is not None and (shapes / "config.json").exists():
            config = json.loads((shapes / "config.json").read_text())
            config = {k: v for k, v in config.items() if k not in ("transformers_version", "architectures", "dtype")}
            shutil.copy(shapes / "tokenizer_config.json", out)
            with gzip.open(shapes / "tokenizer.json.gz", "rb") as f, open(out / "tokenizer.json", "wb") as g:
                shutil.copyfileobj(f, g)
            info["shape_from"] = f"{shapes} (the real config and tokenizer)"
        else:
            config = dict(GEMMA3_270M)
            byte_level_tokenizer(out, 8000 if not dry else 400)
            info["shape_from"] = "the config in gpu_check.py; a byte-level tokenizer trained here (not Gemma's)"
        if dry:
            config.update(TINY, layer_types=config["layer_types"][:2], vocab_size=512, head_dim=32)
        cfg, cls = Gemma3TextConfig(**config), Gemma3TextModel
    else:
        config = dict(MISTRAL_7B, **(TINY | {"vocab_size": 512} if dry else {}))
        byte_level_tokenizer(out, min(config["vocab_size"], 8000) if not dry else 400)
        info["shape_from"] = "a Mistral-7B shape (Llama config); a byte-level tokenizer trained here"
        cfg, cls = LlamaConfig(**config), LlamaModel
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(cfg).to(torch.bfloat16)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    info.update(parameters=total, embedding_parameters=embedding, matrix_parameters=total - embedding)
    model.save_pretrained(out, max_shard_size="20GB")
    (out / "sfp_shape.json").write_text(json.dumps({k: v for k, v in info.items() if k != "weights"}))
    del model
    return str(out), info


# --- parts ---------------------------------------------------------------------------------------------------------


def check_encode(torch, model: str, info: dict, device: str, n: int, batch_sizes: list[int]) -> dict:
    import numpy as np

    from sfp_rag import SFPEncoder
    from sfp_rag.embedding.encoder import resolve_config

    texts = sentences(n)
    shipped = resolve_config(None)  # the default's adapter and prompts, on this backbone (real or random)
    options = dict(adapter=shipped.adapter, template=shipped.template, query_template=shipped.query_template)
    try:
        encoder = SFPEncoder.from_pretrained(model, device=device, dtype="bfloat16", **options)
        adapter = str(shipped.adapter)
    except Exception as err:  # a --dry shape the adapter does not fit
        encoder, adapter = SFPEncoder.from_pretrained(model, device=device, dtype="bfloat16"), f"none ({err!s:.80})"
    params = sum(p.numel() for p in encoder.model.parameters())
    embedding = sum(p.numel() for name, p in encoder.model.named_parameters() if "embed_tokens" in name)
    tokens = sum(len(p.input_ids) for p in encoder.prompt_tokenizer.tokenize(texts))
    peak = peak_tflops(torch.cuda.get_device_name()) if device == "cuda" else None
    out = {"backbone": info, "adapter": adapter, "texts": n, "prompt_tokens": tokens, "parameters": params,
           "matrix_parameters": params - embedding}  # fmt: skip
    for batch_size in batch_sizes:
        encoder.encode(texts[: batch_size * 2], batch_size=batch_size)  # warm-up (kernels, allocator)
        runs = []
        for _ in range(3):
            _sync(torch, device)
            t = time.perf_counter()
            encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)
            _sync(torch, device)
            runs.append(time.perf_counter() - t)
        seconds = sorted(runs)[1]
        tflops = 2 * (params - embedding) * tokens / seconds / 1e12
        out[f"batch_{batch_size}"] = {
            "seconds_median_of_3": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds),
            "texts_per_s": round(n / seconds),
            "tflops_matrix_params": round(tflops, 2),
            "fraction_of_bf16_peak": round(tflops / peak, 4) if peak else None,
        }
        print(f"  encode batch {batch_size}: {out[f'batch_{batch_size}']}", flush=True)
    out["peak_bf16_tflops"] = peak
    if device == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    # a text's vector does not depend on its batch (the fp32 fault of the first GPU run)
    probe = texts[:512]
    for dtype in ("float32", "bfloat16"):
        enc = SFPEncoder.from_pretrained(model, device=device, dtype=dtype)
        alone = np.stack([enc.encode(t) for t in probe[:128]])
        batched = enc.encode(probe, batch_size=256)[:128]
        out[f"batch_invariance_{dtype}_min_cosine"] = round(float((alone * batched).sum(1).min()), 6)
        del enc
    return out


def check_train(model: str, batch_size: int, device: str, extra: list[str], timeout: float, work: Path) -> dict:
    data = work / "sentences.txt"
    if not data.exists():
        data.write_text("\n".join(sentences(4096)) + "\n")
    out = work / f"train_{Path(model).name}_{batch_size}.json"
    cmd = [sys.executable, str(HERE / "train_cost.py"), "--model", model, "--device", device, "--data", str(data),
           "--quantization", "nf4", "--dtype", "bfloat16", "--batch-size", str(batch_size), "--steps", "3",
           "--out", str(out), *extra]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout)[-2000:]}
    record = json.loads(out.read_text())
    out.unlink()
    return record


def check_faiss(dim: int, n: int, queries: int) -> dict:
    try:
        import faiss
    except ImportError:
        return {"skipped": "FAISS is not installed (pip install faiss-gpu==1.15.1; see the scaling guide)"}
    import numpy as np

    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return {"skipped": "this FAISS build has no GPU support (faiss-cpu); see the scaling guide's GPU install"}
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    data = centers[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    faiss.normalize_L2(data)
    q = data[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, dim)).astype(np.float32)
    faiss.normalize_L2(q)
    res = faiss.StandardGpuResources()
    out = {}
    truth = None
    for factory in ("Flat", "IVF4096,Flat"):
        for where in ("cpu", "gpu"):
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            if where == "gpu":
                index = faiss.index_cpu_to_gpu(res, 0, index)
            t = time.perf_counter()
            if not index.is_trained:
                index.train(data[:200_000])
            index.add(data)
            build = time.perf_counter() - t
            if factory.startswith("IVF"):
                faiss.ParameterSpace().set_index_parameter(index, "nprobe", 64)
            t = time.perf_counter()
            _, ids = index.search(q, 10)
            search = time.perf_counter() - t
            if factory == "Flat" and where == "cpu":
                truth = ids
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
            out[f"{factory} {where}"] = {"build_s": round(build, 3), "search_s": round(search, 4),
                                         "queries": queries, "recall_at_10": round(recall, 4)}  # fmt: skip
    for factory in ("Flat", "IVF4096,Flat"):
        cpu, gpu = out[f"{factory} cpu"], out[f"{factory} gpu"]
        out[f"{factory} speedup"] = {"build": round(cpu["build_s"] / gpu["build_s"], 1),
                                     "search": round(cpu["search_s"] / gpu["search_s"], 1)}  # fmt: skip
    return out


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- main ------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: encode, train, train7b, faiss")
    parser.add_argument("--texts", type=int, default=8192)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--shapes", type=Path, default=HERE / "gpu_shapes", help="config + tokenizer of Gemma-3-270M")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sfp-gpu-check"), help="random-weight backbones")
    parser.add_argument("--export-shapes", type=Path, default=None, help="write --shapes from the installed model")
    parser.add_argument("--dry", action="store_true", help="run every part on the CPU with tiny shapes (a test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.export_shapes:
        export_shapes(args.export_shapes)
        return 0
    import torch

    if not torch.cuda.is_available() and not args.dry:
        print("no CUDA GPU here: nothing to check (run this on a machine with one; see the scaling guide)")
        return 0
    device = "cpu" if args.dry else "cuda"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    gpu = "cpu (dry run)" if args.dry else torch.cuda.get_device_name()
    started = time.time()
    result: dict = {"kind": "gpu-check", "gpu": gpu, "dry": args.dry, "machine": machine()}
    if args.dry:
        args.texts, args.vectors = min(args.texts, 256), min(args.vectors, 20_000)
    out = args.out or RESULTS / f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"

    def save() -> None:
        result["seconds"] = round(time.time() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # after every part: a timeout keeps what was done

    shapes = args.shapes if args.shapes.exists() else None
    gemma, gemma_info = build_backbone("gemma", args.work, shapes, device, args.dry)
    print(f"Gemma-3-270M backbone: {gemma_info['weights']}", flush=True)
    result["backbones"] = {"gemma3-270m": gemma_info}
    if "encode" not in skip:
        sizes = [int(b) for b in args.batch_sizes.split(",")] if not args.dry else [16, 64]
        result["encode"] = check_encode(torch, gemma, gemma_info, device, args.texts, sizes)
        save()
        if device == "cuda":
            torch.cuda.empty_cache()
    if "train" not in skip:
        batch = args.train_batch_size if not args.dry else 8
        result["train"] = check_train(gemma, batch, device, [], timeout=240, work=args.work)
        print("train:", {k: v for k, v in result["train"].get("ratios", result["train"]).items()}, flush=True)
        save()
    if "train7b" not in skip:
        big, big_info = build_backbone("7b", args.work, None, device, args.dry)
        result["backbones"]["mistral-7b-shape"] = big_info
        batch = args.train_batch_size if not args.dry else 8
        result["train7b"] = check_train(big, batch, device, [], timeout=300, work=args.work)
        print("train7b:", result["train7b"].get("ratios", result["train7b"]), flush=True)
        save()
        big_batch = 256 if not args.dry else 16
        result["train7b_batch256"] = check_train(
            big, big_batch, device,
            ["--objectives", "single-pass", "--grad-cache", str(big_batch // 4), "--gradient-checkpointing",
             "--skip-plain"],
            timeout=300, work=args.work,
        )  # fmt: skip
        peaks = {name: r.get("peak_cuda_gib", r.get("peak_rss_gib"))
                 for name, r in result["train7b_batch256"].get("results", {}).items()}  # fmt: skip
        print("train7b batch 256, peak memory GiB:", peaks or result["train7b_batch256"], flush=True)
        save()
    if "faiss" not in skip:
        result["faiss"] = check_faiss(640, args.vectors, 10_000 if not args.dry else 100)
        print("faiss:", result["faiss"], flush=True)
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
