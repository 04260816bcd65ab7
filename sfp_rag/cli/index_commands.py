"""``sfp-rag index`` and ``sfp-rag query``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .core import USER_ERRORS, build_encoder, chunking_options, encoder_options, fail, main, printable


@main.command()
@click.argument("docs", type=click.Path(path_type=Path))
@click.option(
    "--name",
    "-n",
    default=None,
    help="Index name in the index home, indexes/ or $SFP_RAG_HOME (letters, digits, . _ -) [default: the folder's "
    "name].",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the index to this folder instead.")
@encoder_options
@chunking_options
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
    from ..retrieval.builder import build_index
    from ..retrieval.index_folder import MANIFEST, Collection, check_index_name, default_index_name, index_home

    if out is not None and name is not None:
        raise click.UsageError("give either --name (an index in the index home) or --out (a folder), not both")
    try:
        target = out or index_home() / (check_index_name(name) if name is not None else default_index_name(docs))
    except USER_ERRORS as err:
        raise fail(err) from err
    base = None
    if model is None and not rebuild and (target / MANIFEST).exists():
        try:  # keep updating with the encoder that built the index
            base = Collection.open(target).manifest["encoder"]["config"]
        except USER_ERRORS as err:
            raise fail(err) from err
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
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(
        f"indexed {report.files} files ({report.chunks} chunks: {report.embedded} embedded, "
        f"{report.reused} reused) into {printable(report.path)} in {report.seconds:.1f} s"
    )
    for label, files in (("added", report.added), ("changed", report.changed), ("removed", report.removed)):
        if files and (report.reused or label == "removed"):
            shown = printable(", ".join(files[:5]))
            click.echo(f"  {label}: {len(files)} ({shown}{', ...' if len(files) > 5 else ''})")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} files:")
        for path, reason in sorted(report.skipped.items()):
            click.echo(f"  {printable(path)}: {printable(reason)}")


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
    from ..retrieval.searcher import Searcher

    overrides = {key: v for key, v in {"device": device, "dtype": dtype}.items() if v is not None}
    try:
        hits = Searcher.open(index_name, **overrides).search(text, k=k, mode=mode)
    except USER_ERRORS as err:
        raise fail(err) from err
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
        click.echo(f"{rank}. [{h.score:.3f}] {printable(h.source)} (chunk {h.chunk})\n   {printable(snippet)}")
