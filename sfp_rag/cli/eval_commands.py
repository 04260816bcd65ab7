"""``sfp-rag eval sts|beir|space`` and ``sfp-rag report``."""

from __future__ import annotations

from pathlib import Path

import click

from .core import (
    USER_ERRORS,
    build_encoder,
    check_engine_options,
    chunking_options,
    encoder_options,
    engine_options,
    fail,
    main,
    make_embedder,
    model_label,
    parse_widths,
    query_template_option,
    result_options,
    senteval_option,
    writable_output,
    write_result,
)

BASELINE_TEMPLATES = ("eol", "eol-sum", "sth-sum")

peer_option = click.option(
    "--peer",
    type=click.Choice(["minilm", "mpnet"]),
    default=None,
    help="Evaluate a reference encoder that is not an SFP model instead (all-MiniLM-L6-v2, all-mpnet-base-v2).",
)


max_queries_option = click.option(
    "--max-queries", type=click.IntRange(min=1), default=None, help="Tuning sweeps: a fixed subset of the queries."
)
max_chunks_option = click.option(
    "--max-chunks",
    type=click.IntRange(min=1),
    default=None,
    help="Tuning sweeps: embed only each document's first N chunks (cheaper; not comparable with full numbers).",
)
centering_option = click.option(
    "--centering/--no-centering",
    default=True,
    show_default=True,
    help="Center the dense side on the corpus (mean and top components per side), as `index` does by default.",
)


def _made_by(encoder) -> dict:
    """What a result file records of the encoder: its identity and what ran it (torch or OpenVINO, and the
    precision: the runtimes' vectors differ slightly, so scores compare best within one runtime)."""
    return {"encoder": encoder.identity(), "runtime": getattr(encoder, "runtime", None)}


def _encoder_or_peer(peer, model, adapter, template, pooling, device, dtype, runtime=None, query_template=None):
    if peer is None:
        return build_encoder(
            model, adapter, template, pooling, device, dtype, query_template=query_template, runtime=runtime
        )
    from ..evaluation.peers import MeanPoolEncoder

    try:
        return MeanPoolEncoder.peer(peer, device=device or "cpu")
    except FileNotFoundError as err:
        raise fail(err) from err


def _label_of(encoder) -> str:
    return encoder.name if hasattr(encoder, "name") else model_label(encoder)


@main.group(name="eval")
def eval_group() -> None:
    """Evaluate an embedder: STS, BEIR retrieval, semantic-space metrics."""


@eval_group.command("sts")
@encoder_options
@senteval_option
@click.option(
    "--tasks",
    default=None,
    help="Comma-separated tasks [default: STS12-16, STSBenchmark, SICKRelatedness]; "
    "STSBenchmark-dev / SICKRelatedness-dev for model selection.",
)
@peer_option
@result_options
def eval_sts(
    model, adapter, template, pooling, device, dtype, runtime, batch_size, data_dir, tasks, peer, output, label
) -> None:
    """Spearman x100 on STS12-16 (pooled subsets), STS-B and SICK-R, as SimCSE/PromptEOL/CSE-SFP report."""
    from ..evaluation.sts import STS_TASKS, evaluate_sts, format_table

    task_list = tuple(t.strip() for t in tasks.split(",")) if tasks else STS_TASKS
    if not data_dir.is_dir():
        raise click.ClickException(
            f"STS data folder {data_dir} does not exist; pass --data with SentEval's data folder "
            "(docs: guides/evaluation)"
        )
    encoder = _encoder_or_peer(peer, model, adapter, template, pooling, device, dtype, runtime)
    try:
        result = evaluate_sts(encoder, data_dir, task_list, batch_size=batch_size)
    except USER_ERRORS as err:
        raise fail(err) from err
    result.update({"kind": "sts", "label": label or _label_of(encoder), **_made_by(encoder)})
    click.echo(format_table({result["label"]: result["scores"]}))
    write_result(result, output)


@eval_group.command("beir")
@encoder_options
@query_template_option
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
    help="Comma-separated: bm25, eol, eol-sum (the untrained backbone with that prompt), minilm, mpnet; or none.",
)
@click.option("--hybrid", is_flag=True, help="Also fuse the model's run with BM25 (as `query` does by default).")
@click.option(
    "--hybrid-baselines",
    is_flag=True,
    help="Also fuse each dense baseline (peers, untrained templates) with BM25, by the same fusion and weight.",
)
@click.option(
    "--fusion",
    type=click.Choice(["convex", "minmax", "rrf"]),
    default="convex",
    show_default=True,
    help="How --hybrid fuses: convex (TM2C2, as `query` does), minmax (min-max scaled) or rrf (reciprocal rank).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=None,
    help="Dense weight of convex/minmax fusion [default: 0.7 convex, 0.3 minmax; tuned].",
)
@click.option(
    "--widths",
    default="",
    help="Also score the model's vectors cut to these widths, comma-separated (e.g. 64,128,256: truncate_dim, as "
    "`dimensions` in /v1/embeddings), from the same embeddings.",
)
@max_chunks_option
@max_queries_option
@centering_option
@chunking_options
@engine_options
@peer_option
@result_options
def eval_beir(
    model,
    adapter,
    template,
    pooling,
    device,
    dtype,
    runtime,
    batch_size,
    query_template,
    data_dir,
    split,
    baselines,
    hybrid,
    hybrid_baselines,
    fusion,
    alpha,
    widths,
    max_chunks,
    max_queries,
    centering,
    chunk_size,
    chunk_overlap,
    engine,
    ray_address,
    workers,
    peer,
    output,
    label,
) -> None:
    """nDCG@10, Recall@100, MAP@100, MRR@10 on a BEIR dataset, through the same chunking and FAISS path as `index`.

    With --peer, a reference encoder is the system under test instead of an SFP model (its rows without ours)."""
    from ..embedding.encoder import SFPEncoder, resolve_config
    from ..evaluation.beir import BeirDataError, evaluate_beir, format_beir_table

    check_engine_options(engine, ray_address, workers)
    if split == "test" and (max_chunks or max_queries):
        click.echo("warning: --max-chunks/--max-queries are for tuning sweeps; report test numbers in full", err=True)
    if peer is not None and widths:
        raise click.BadParameter("cuts an SFP model's vectors; a peer is scored at full width", param_hint="--widths")
    encoder = _encoder_or_peer(peer, model, adapter, template, pooling, device, dtype, runtime, query_template)
    systems: dict = {label or _label_of(encoder): encoder}
    for width in _widths(widths, encoder.dim):
        cut = SFPEncoder(encoder.model, encoder.tokenizer, encoder.config.replace(truncate_dim=width), encoder.device)
        systems[f"{next(iter(systems))}, {width}d"] = cut
    options = {k: v for k, v in {"adapter": adapter, "template": template}.items() if v is not None}
    backbone = resolve_config(model, **options).model
    for name in [b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"]:
        systems.update(_baseline(name, backbone, device, dtype, encoder.device))
    main_label = next(iter(systems))
    try:
        result = evaluate_beir(
            data_dir,
            systems,
            split=split,
            hybrid=([main_label] if hybrid else [])
            + (
                [name for name, system in systems.items() if name != main_label and system != "bm25"]
                if hybrid_baselines
                else []
            )
            or None,  # fmt: skip
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            batch_size=batch_size,
            fusion=fusion,
            alpha=alpha,
            max_chunks=max_chunks,
            max_queries=max_queries,
            centering=centering,
            engine=None
            if engine == "local"
            else lambda enc: make_embedder(engine, enc, ray_address, workers, batch_size),
        )
    except (BeirDataError, *USER_ERRORS) as err:
        raise fail(err) from err
    result.update({"label": main_label, **_made_by(encoder)})
    click.echo(f"{result['dataset']} ({split}, {result['queries']} queries, {result['documents']} documents)")
    click.echo(format_beir_table(result["scores"]))
    write_result(result, output)


def _widths(value: str, full: int) -> list[int]:
    """``--widths 64,128``: the widths below the model's ``full`` one (a bad one is a usage error)."""
    widths = parse_widths(value, "--widths")
    bad = [w for w in widths if w >= full]
    if bad:
        raise click.BadParameter(f"{bad}: each width must be below the model's {full}", param_hint="--widths")
    return widths


def _baseline(name: str, backbone: str, device, dtype, encoder_device: str) -> dict:
    """label -> system (built lazily, so only one model is in memory at a time)."""
    from ..embedding.encoder import SFPEncoder
    from ..evaluation.peers import PEERS, MeanPoolEncoder, peer_installed

    if name == "bm25":
        return {"BM25": "bm25"}
    if name in BASELINE_TEMPLATES:
        label = f"{Path(backbone).name} {name} (untrained)"
        return {
            label: lambda: SFPEncoder.from_pretrained(
                backbone, template=name, device=device or "auto", dtype=dtype or "auto"
            )
        }
    if name in PEERS:
        label, install = PEERS[name]
        if not peer_installed(name):
            click.echo(f"{label} is not installed ({install}); skipped", err=True)
            return {}
        return {label: lambda: MeanPoolEncoder.peer(name, device=encoder_device)}
    raise click.BadParameter(
        f"unknown baseline {name!r}; use bm25, {', '.join(BASELINE_TEMPLATES)}, {', '.join(PEERS)} or none",
        param_hint="--baselines",
    )


@eval_group.command("space")
@encoder_options
@senteval_option
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True)
@peer_option
@result_options
def eval_space(
    model, adapter, template, pooling, device, dtype, runtime, batch_size, data_dir, split, peer, output, label
) -> None:
    """Alignment and uniformity (Wang & Isola) on STS-B, and ratio = -uniformity / alignment (higher is better)."""
    from ..evaluation.space import evaluate_space

    encoder = _encoder_or_peer(peer, model, adapter, template, pooling, device, dtype, runtime)
    try:
        result = evaluate_space(encoder, data_dir, split=split, batch_size=batch_size)
    except USER_ERRORS as err:
        raise fail(err) from err
    result.update({"label": label or _label_of(encoder), **_made_by(encoder)})
    click.echo(
        f"{result['label']}: alignment {result['alignment']:.4f}  uniformity {result['uniformity']:.4f}  "
        f"ratio {result['ratio']:.3f}  ({result['positive_pairs']} positive pairs, {result['sentences']} "
        f"sentences, STS-B {split})"
    )
    write_result(result, output)


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True
)
@click.option("--title", default="sfp_rag report", show_default=True)
@click.option(
    "--system",
    "systems",
    multiple=True,
    help="Keep only this STS/BEIR system (repeatable, in this order); LABEL=NAME shows it as NAME.",
)
def report(results, out, title, systems) -> None:
    """Build a markdown report with plots from result JSON files (or folders) and train_log.jsonl files.

    \b
    Examples:
      sfp-rag report benchmarks/results -o report
      sfp-rag report benchmarks/results/beir_*.json --system BM25 --system "default, centered=sfp dense" -o head
    """
    from ..evaluation.report import build_report

    chosen = dict(s.split("=", 1) if "=" in s else (s, s) for s in systems)
    try:
        path = build_report(list(results), out, title=title, systems=chosen or None)
    except USER_ERRORS as err:
        raise fail(err) from err
    click.echo(f"wrote {path}")


@eval_group.command("templates")
@encoder_options
@click.argument("templates", nargs=-1, required=True)
@click.option("--sts-data", default=None, help="SentEval folder: score each template on STS-B dev (symmetric).")
@click.option(
    "--beir", "beir_dir", default=None, help="BEIR folder: score each template as the query prompt (documents once)."
)
@click.option("--split", default="train", show_default=True, help="BEIR qrels split; tune on train, never on test.")
@max_queries_option
@max_chunks_option
@centering_option
@chunking_options
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, callback=writable_output
)
def eval_templates(
    model, adapter, template, pooling, device, dtype, runtime, batch_size, templates, sts_data, beir_dir, split,
    max_queries, max_chunks, centering, chunk_size, chunk_overlap, output,
) -> None:  # fmt: skip
    """Rank prompt TEMPLATES (presets or strings with {text}) on tuning data: STS-B dev and/or BEIR queries.

    \b
    Examples:
      sfp-rag eval templates eol-sum sth-sum eol --sts-data ./senteval
      sfp-rag eval templates eol-sum 'This question : "{text}" means in one word:"' \\
          --beir ./beir/nfcorpus --split train --max-queries 500
    """
    from ..evaluation.templates import evaluate_templates, format_template_table

    if split == "test":
        click.echo("warning: choosing a template on test qrels makes the test number meaningless", err=True)
    encoder = build_encoder(model, adapter, template, pooling, device, dtype, runtime=runtime)
    try:
        result = evaluate_templates(
            encoder, list(templates), sts_data=sts_data, beir_data=beir_dir, split=split, max_queries=max_queries,
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, max_chunks=max_chunks, centering=centering,
        )  # fmt: skip
    except USER_ERRORS as err:
        raise fail(err) from err
    result.update(_made_by(encoder))
    click.echo(f"documents embedded with {result['document_template']!r}")
    click.echo(format_template_table(result))
    write_result(result, output)
