"""``sfp-rag index``, ``sfp-rag query`` and ``sfp-rag indexes`` (list, show, delete)."""

from __future__ import annotations

import json
import sys
import time
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
    printable,
    query_template_option,
    runtime_option,
)


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
@query_template_option
@chunking_options
@click.option(
    "--index-type",
    default="Flat",
    show_default=True,
    help="FAISS factory string: Flat (exact), HNSW32, IVF1024,Flat, IVF4096,PQ80, ...; or auto (by corpus size).",
)
@click.option(
    "--ondisk", is_flag=True, help="Keep an IVF index's lists on disk (built in shards): for indexes larger than RAM."
)
@click.option(
    "--hybrid/--dense-only",
    default=True,
    show_default=True,
    help="Also build a BM25 index (queries then fuse dense and BM25 rankings, the best mode measured).",
)
@click.option(
    "--centering/--no-centering",
    default=True,
    show_default=True,
    help="Center dense vectors on this corpus (mean and top 5 components per side, fitted at index time; "
    "measured better on the tuning split; skipped under 200 chunks).",
)
@click.option("--rebuild", is_flag=True, help="Re-embed everything (needed to change the model).")
@click.option(
    "--max-file-mb",
    type=click.FloatRange(min=0.001),
    default=20.0,
    show_default=True,
    help="Skip files larger than this.",
)
@engine_options
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
    runtime,
    batch_size,
    query_template,
    chunk_size,
    chunk_overlap,
    index_type,
    ondisk,
    hybrid,
    centering,
    rebuild,
    max_file_mb,
    engine,
    ray_address,
    workers,
    as_json,
) -> None:
    """Embed the documents under DOCS into a searchable index (incremental: only new or changed files are embedded).

    The index goes to the index home (indexes/ or $SFP_RAG_HOME) under --name, or to the folder --out.

    \b
    Examples:
      sfp-rag index ./docs                        # -> indexes/docs (dense + BM25)
      sfp-rag index ./docs --name kb --dense-only
      sfp-rag index ./docs --out /data/kb --index-type HNSW32 --rebuild
    """
    started = time.perf_counter()
    from .._utils import ensure_writable_dir
    from ..retrieval.builder import build_index
    from ..retrieval.faiss_index import check_factory
    from ..retrieval.index_folder import (
        MANIFEST,
        Collection,
        check_build_target,
        check_index_name,
        default_index_name,
        index_home,
    )

    if out is not None and name is not None:
        raise click.UsageError("give either --name (an index in the index home) or --out (a folder), not both")
    check_engine_options(engine, ray_address, workers)
    # everything that can be checked without the model is checked before it loads (that takes seconds)
    if not docs.exists():
        raise click.ClickException(f"documents folder {docs} does not exist")
    if not docs.is_dir():
        raise click.ClickException(f"{docs} is a file; pass the folder that holds the documents")
    try:
        target = out or index_home() / (check_index_name(name) if name is not None else default_index_name(docs))
        check_build_target(target, docs)
        ensure_writable_dir(target.parent, "the index")  # before the model loads, not after the embedding
        check_factory(index_type)
        if ondisk and index_type != "auto" and "IVF" not in index_type:
            raise ValueError(f"--ondisk needs an IVF index type (e.g. IVF4096,PQ80 or auto), got {index_type!r}")
        if hybrid:
            require_bm25()
    except USER_ERRORS as err:
        raise fail(err) from err
    base = None
    if model is None and not rebuild and (target / MANIFEST).exists():
        try:  # keep updating with the encoder that built the index
            base = Collection.open(target).manifest["encoder"]["config"]
        except USER_ERRORS as err:
            raise fail(err) from err
    encoder = build_encoder(
        model, adapter, template, pooling, device, dtype, base=base, query_template=query_template, runtime=runtime
    )
    embedder = make_embedder(engine, encoder, ray_address, workers, batch_size)
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
            centering=centering,
            ondisk=ondisk,
            embedder=embedder,
        )
    except (*USER_ERRORS, RuntimeError) as err:
        raise fail(err) from err
    finally:
        if embedder is not None:
            embedder.close()
    report.command_seconds = round(time.perf_counter() - started, 2)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(
        f"indexed {report.files} files ({report.chunks} chunks: {report.embedded} embedded, "
        f"{report.reused} reused) into {printable(report.path)} in {report.command_seconds:.1f} s"
        + (f" (index type {report.index_type})" if index_type == "auto" else "")
    )
    for label, files in (("added", report.added), ("changed", report.changed), ("removed", report.removed)):
        if files and (report.reused or label == "removed"):
            shown = printable(", ".join(files[:5]))
            click.echo(f"  {label}: {len(files)} ({shown}{', ...' if len(files) > 5 else ''})")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} files:")
        for path, reason in sorted(report.skipped.items()):
            click.echo(f"  {printable(path)}: {printable(reason)}")


QUERY_FORMATS = ("plain", "json", "jsonl")


@main.command()
@click.argument("text")
@click.option(
    "--index",
    "-i",
    "index_name",
    envvar="SFP_RAG_INDEX",
    default=None,
    help="Index name (in the index home) or path (./dir, /abs/dir) [env SFP_RAG_INDEX; default: the only index].",
)
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1, max=1000), default=5, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["auto", "dense", "hybrid", "bm25"]),
    default="auto",
    show_default=True,
    help="auto: hybrid where the index has BM25, else dense.",
)
@click.option("--hybrid", "mode", flag_value="hybrid", help="Same as --mode hybrid.")
@click.option("--bm25", "mode", flag_value="bm25", help="Same as --mode bm25 (no model is loaded).")
@click.option("--dense", "mode", flag_value="dense", help="Same as --mode dense.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(QUERY_FORMATS),
    default="plain",
    show_default=True,
    help="plain: ranked hits with snippets; json: one document; jsonl: one hit per line.",
)
@click.option("--json", "fmt", flag_value="json", help="Same as --format json.")
@click.option("--device", default=None, help="auto, cpu, cuda [default: auto].")
@click.option("--dtype", default=None, help="auto, float32, bfloat16, float16 [default: auto].")
@runtime_option
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists to visit [default: recorded].")
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="HNSW beam width [default: recorded].")
@click.option(
    "--server",
    envvar="SFP_RAG_SERVER",
    default=None,
    help="Ask a running `sfp-rag serve` (URL) instead of loading the model here [env SFP_RAG_SERVER].",
)
def query(text, index_name, k, mode, fmt, device, dtype, runtime, nprobe, ef_search, server) -> None:
    """Search an index with TEXT ("-" reads one query per line from stdin).

    \b
    Scores: dense = cosine similarity (-1..1); bm25 = BM25 keyword score (0 and up);
    hybrid = fused score (0..1: alpha*(cosine+1)/(best+1) + (1-alpha)*BM25/best). Higher is better.

    \b
    Examples:
      sfp-rag query "how do I reset my password?"
      sfp-rag query "refund policy" --index kb -k 3 --format jsonl
      cat questions.txt | sfp-rag query - --format jsonl > hits.jsonl
    """
    queries = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()] if text == "-" else [text]
    if not queries or not all(q.strip() for q in queries):
        raise click.UsageError("the query is empty; give some text to search for (or '-' and lines on stdin)")
    if server:
        mode, results = _query_server(server, queries, index_name, k, mode, nprobe, ef_search)
    else:
        from ..retrieval.searcher import Searcher, default_mode

        settings = {"device": device, "dtype": dtype, "runtime": runtime}
        overrides = {key: v for key, v in settings.items() if v is not None}
        try:
            searcher = Searcher.open(index_name, lazy=True, **overrides)
            mode = default_mode(searcher.collection) if mode == "auto" else mode
            params = {n: v for n, v in {"nprobe": nprobe, "efSearch": ef_search}.items() if v is not None}
            results = searcher.search(queries, k=k, mode=mode, search_params=params or None)
        except USER_ERRORS as err:
            raise fail(err) from err
    from ..retrieval.index_folder import SCORE_KINDS

    if fmt == "json":
        answers = [
            {"query": q, "mode": mode, "score_kind": SCORE_KINDS[mode], "hits": [h.to_dict() for h in hits]}
            for q, hits in zip(queries, results)
        ]
        click.echo(json.dumps(answers[0] if text != "-" else answers, indent=2, ensure_ascii=False))
        return
    for q, hits in zip(queries, results):
        if fmt == "jsonl":
            for rank, h in enumerate(hits, start=1):
                line = {"query": q, "rank": rank, "mode": mode, **h.to_dict()}
                click.echo(json.dumps(line, ensure_ascii=False))
            continue
        if len(queries) > 1:
            click.echo(f"# {printable(q)}")
        for rank, h in enumerate(hits, start=1):
            snippet = " ".join(h.text.split())
            snippet = snippet if len(snippet) <= 200 else snippet[:197] + "..."
            cosine = f", cosine {h.cosine:.3f}" if mode == "hybrid" and h.cosine is not None else ""
            click.echo(
                f"{rank}. [{h.score:.3f}{cosine}] {printable(h.source)} (chunk {h.chunk})\n   {printable(snippet)}"
            )
        if not hits:
            click.echo("(no hits)")


def _query_server(server: str, queries: list[str], index_name, k: int, mode: str, nprobe, ef_search):
    """Search through a running server: no torch, no transformers, no model load in this process."""
    from ..client import ServerError, SFPClient
    from ..hits import Hit

    try:
        with SFPClient(server) as client:
            answers = client.search_json(
                queries,
                index=index_name,
                k=k,
                mode=None if mode == "auto" else mode,
                nprobe=nprobe,
                ef_search=ef_search,
            )
    except (ServerError, ValueError) as err:
        raise fail(err) from err
    results = [[Hit.from_dict(h) for h in a["hits"]] for a in answers]
    return answers[0]["mode"], results


# --- managing indexes ---------------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.pass_context
def indexes(ctx: click.Context) -> None:
    """List, show and delete the indexes in the index home (indexes/ or $SFP_RAG_HOME).

    \b
    Examples:
      sfp-rag indexes                 # same as: sfp-rag indexes list
      sfp-rag indexes show docs
      sfp-rag indexes delete docs --yes
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@indexes.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """One line per index: name, documents, chunks, model, size, last built."""
    from ..retrieval.index import list_indexes
    from ..retrieval.index_folder import index_home

    rows = list_indexes()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no indexes in {index_home()}/ (build one with: sfp-rag index DOCS)")
        return
    click.echo(f"{'name':<20} {'docs':>6} {'chunks':>7} {'size':>9}  {'built':<19}  model")
    for r in rows:
        if "error" in r:
            click.echo(f"{printable(r['name']):<20} damaged: {printable(r['error'])}")
            continue
        model = Path(r["model"]).name + (f" + {Path(r['adapter']).name}" if r.get("adapter") else "")
        built = (r.get("updated") or "")[:19].replace("T", " ")
        click.echo(
            f"{printable(r['name']):<20} {r['documents']:>6} {r['chunks']:>7} {_size(r['bytes']):>9}  {built:<19}  "
            f"{printable(model)}"
        )


@indexes.command(name="show")
@click.argument("index")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_command(index: str, as_json: bool) -> None:
    """Everything about one index (a name or a path), with its sources."""
    from ..retrieval.index import describe
    from ..retrieval.index_folder import resolve_index_path

    try:
        info = describe(resolve_index_path(index), sources=True)
    except USER_ERRORS as err:
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    width = max(map(len, info))
    for key, value in info.items():
        if key == "sources":
            shown = ", ".join(value[:10]) + (f", ... ({len(value)} in all)" if len(value) > 10 else "")
            click.echo(f"{'sources':<{width}} {printable(shown)}")
        else:
            click.echo(f"{key:<{width}} {printable(_size(value) if key == 'bytes' else value)}")


@indexes.command(name="delete")
@click.argument("index")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_command(index: str, yes: bool) -> None:
    """Delete an index (a name or a path); only folders that carry an sfp-rag manifest are deleted."""
    from ..retrieval.index import delete_index
    from ..retrieval.index_folder import IndexFolderError, is_index_folder, resolve_index_path

    try:
        path = resolve_index_path(index)
        if not is_index_folder(path):
            raise IndexFolderError(f"no sfp-rag index at {path}" + (" (it is left alone)" if path.exists() else ""))
    except USER_ERRORS as err:
        raise fail(err) from err
    if not yes:
        click.confirm(f"delete the index {printable(path)}?", abort=True)
    try:
        delete_index(path)
    except USER_ERRORS as err:
        raise fail(err) from err
    click.echo(f"deleted {printable(path)}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def require_bm25() -> None:
    from .._utils import require

    require("bm25s", "The BM25 half of hybrid search", "pip install bm25s PyStemmer (or index with --dense-only)")
