"""``sfp-rag train``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from .core import USER_ERRORS, fail, main, parse_widths


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
    help="Domain adaptation on a BEIR or docs folder (instead of --data): unless set, starts from the shipped default "
    "with two-pass-title (titles against their documents; crops where there is no title), --max-text-tokens 64, "
    "--steps 40, --warmup-steps 6, no NF4.",
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
    type=click.Choice(
        ["single-pass", "two-pass-dropout", "two-pass-prompts", "two-pass-crops", "two-pass-ict", "two-pass-title"]
    ),
    default="single-pass",
    show_default=True,
    help="single-pass: CSE-SFP (Rep2 vs Rep1 of one pass); two-pass-crops: two random crops of each text; "
    "two-pass-ict: a sentence (under the query prompt, if one is set) against the rest of its text (inverse cloze); "
    "two-pass-title: a document's title (under the query prompt) against its text, two crops where it has none.",
)
@click.option("--template", "-t", default=None, help="Prompt [default: eol-sum; eol for two-pass-dropout/-prompts].")
@click.option("--query-template", default=None,
              help="Query prompt saved with the adapter [default: that of the adapter continued from].")  # fmt: skip
@click.option("--crop-min", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="two-pass-crops (and two-pass-title untitled): shortest crop, share of the words.")  # fmt: skip
@click.option("--crop-max", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="two-pass-crops (and two-pass-title untitled): longest crop, share of the words.")  # fmt: skip
@click.option("--ict-keep", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="two-pass-ict: chance that the query sentence is left in its passage.")  # fmt: skip
@click.option("--title-share", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="two-pass-title: share of the batches that train titles -> text; the rest train two crops of "
                   "each text under the document prompt (as two-pass-crops).")  # fmt: skip
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
@click.option("--topic-clusters", type=click.IntRange(min=0), default=0, show_default=True,
              help="TAS-B batches: cluster the texts into K topics (k-means of the starting model's embeddings) and "
                   "draw each batch from one topic (harder negatives); 0: random batches.")  # fmt: skip
@click.option("--hard-negatives", type=click.IntRange(min=0), default=0, show_default=True,
              help="two-pass-title: N hard negatives per title, drawn each step from the texts BM25 ranks high for "
                   "the title that are not its own (below 0.9 of its own text's score, against false negatives). "
                   "Not in the --corpus recipe: on NFCorpus train 1 per title scored 30.43 against 30.47 without, "
                   "at 1.7x the time (docs: domain adaptation). 0: in-batch negatives only.")  # fmt: skip
@click.option("--grad-cache", type=click.IntRange(min=0), default=0, show_default=True,
              help="GradCache: embed each batch N rows at a time and backpropagate through cached embeddings (the "
                   "whole batch's negatives at the activation memory of N rows); 0: off.")  # fmt: skip
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass instead of keeping them: less memory, more time "
              "(benchmarks/train_cost.py --gradient-checkpointing measures both).")  # fmt: skip
@click.option("--matryoshka-dims", default="", callback=lambda _ctx, _param, v: parse_widths(v, "--matryoshka-dims"),
              help="Also train these shorter widths, comma-separated (e.g. 64,128,256: InfoNCE on each prefix of "
                   "the vector, averaged with the full width's): truncated vectors then embed well. Empty: off."
              )  # fmt: skip
@click.option("--pseudo-queries", type=click.IntRange(min=0), default=0, show_default=True,
              help="two-pass-title: a local LM (--generator) writes a search query for N passages of the corpus, "
                   "and (query -> passage) pairs train beside the titles; the queries and why any were rejected "
                   "go to OUTPUT/pseudo_queries.jsonl (resumed with the run). Not in the --corpus recipe: on NFCorpus "
                   "train it did not add to titles (docs: domain adaptation). 0: off.")  # fmt: skip
@click.option("--generator", default=None,
              help="The causal LM that writes pseudo-queries (built-in name, .gguf, model dir or hub id) "
                   "[default: the backbone].")  # fmt: skip
@click.option("--pseudo-query-round-trip", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep a pseudo-query only if BM25 over the corpus's passages ranks a passage of its own document "
                   "within the top K (round-trip consistency, as in Promptagator); 0: keep every query that passes "
                   "the checks. On NFCorpus train (no titles) K=1 kept 314 of 966 checked queries and did not move "
                   "retrieval (docs: domain adaptation).")  # fmt: skip
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=2, show_default=True,
              help="How many of the newest checkpoints to keep; each is an adapter (--model RUN/checkpoints/"
                   "step-N), so keep more to pick one on tuning data.")  # fmt: skip
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
      sfp-rag train --data sentences.txt.gz -o runs/sfp --steps 2000    # one text per line, no labels
      sfp-rag train --corpus ./docs -o runs/docs-adapted    # domain adaptation: 8.5 min for 5k docs, 2 cores
      sfp-rag train --data sentences.txt -o runs/sfp --resume
    """
    from ..training.config import TrainConfig, domain_adaptation_defaults
    from ..training.data import TrainingDataError
    from ..training.trainer import TrainingDiverged
    from ..training.trainer import train as run_training

    if bool(data) == bool(corpus):
        raise click.UsageError("give exactly one of --data and --corpus")
    if corpus:  # the measured domain-adaptation recipe, for every option left at its default
        ctx = click.get_current_context()
        recipe = {
            key: value
            for key, value in domain_adaptation_defaults().items()
            if ctx.get_parameter_source(key) is ParameterSource.DEFAULT
        }
        options.update(recipe)
        if recipe:
            listed = ", ".join(f"{k}={v}" for k, v in recipe.items())
            click.echo(f"domain adaptation recipe: {listed} (any option overrides)", err=True)
    try:
        config = TrainConfig(data=str(data or corpus), output_dir=str(output), **options)
        result = run_training(config, resume=resume)
    except (TrainingDataError, TrainingDiverged, FileExistsError, *USER_ERRORS) as err:
        raise fail(err) from err
    best = f", best STS-B dev {result.best_dev:.2f}" if result.best_dev is not None else ""
    if result.pseudo_queries:
        click.echo(result.pseudo_queries)
    click.echo(
        f"trained {result.steps} steps in {result.seconds:.0f} s (final loss {result.final_loss:.4f}{best}); "
        f"adapter in {result.output_dir}"
    )
    click.echo(f"use it with: sfp-rag index DOCS --model {result.output_dir}")


@main.command("rotation")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--data", required=True, help="General text to fit on (a .txt/.jsonl[.gz] file or a folder), not a test set."
)
@click.option("--texts", "n_texts", type=click.IntRange(min=2), default=4000, show_default=True,
              help="Fit on the first N texts (at least the model's width).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
def rotation(model_dir, data, n_texts, batch_size) -> None:
    """Fit the principal directions that shorter vectors are cut onto; writes MODEL_DIR/rotation.npy.

    \b
    With it, truncate_dim=N (and /v1/embeddings dimensions=N) keeps the model's first N principal directions
    instead of its first N dimensions; full-width vectors, and so every index, do not change.
    Example:
      sfp-rag rotation runs/sfp --data ../shared/data/wiki_passages.jsonl.gz --texts 4000
    """
    import time

    from ..embedding.encoder import SFPEncoder
    from ..embedding.rotation import fit_model_rotation, save_rotation
    from ..training.data import TrainingDataError, load_texts

    if not (model_dir / "adapter_config.json").is_file():
        raise click.UsageError(f"{model_dir} holds no trained adapter; give the folder `sfp-rag train` wrote")
    try:
        texts = load_texts(data, units="documents")[:n_texts]
        encoder = SFPEncoder.from_pretrained(str(model_dir))
        if len(texts) < encoder.full_dim:
            raise click.UsageError(
                f"{len(texts)} texts; fitting {encoder.full_dim} directions needs at least that many"
            )
        t = time.perf_counter()
        path = save_rotation(model_dir, fit_model_rotation(encoder, texts, batch_size=batch_size))
    except (TrainingDataError, *USER_ERRORS) as err:
        raise fail(err) from err
    click.echo(f"wrote {path} from {len(texts)} texts in {time.perf_counter() - t:.0f} s")
