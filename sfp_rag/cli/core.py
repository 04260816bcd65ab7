"""The ``sfp-rag`` group, logging set-up and the options and helpers the commands share.

User errors (bad paths, missing models, malformed data) become ``click.ClickException`` (exit 1) with the library's
message; logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import unicodedata
import warnings
from pathlib import Path

import click

from .. import __version__

logger = logging.getLogger("sfp_rag")

USER_ERRORS = (ValueError, FileNotFoundError, ImportError, TypeError, PermissionError)


def _setup_logging(verbose: int, quiet: bool) -> None:
    """Configure logging for a CLI run; called again when -v/-q follow the subcommand (the later call wins)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("httpx", "httpcore"):  # one INFO line per HTTP request (query --server, ask --server): -vv shows it
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    if verbose < 2:  # transformers is chatty: its loggers and weight-loading bars stay quiet unless -vv
        logging.getLogger("transformers").setLevel(logging.ERROR)
        logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU variant it tries
        # bitsandbytes (imported by peft) warns on CPU that the optional `kernels` package is missing; harmless
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        # peft reads transformers' deprecated `is_gradient_checkpointing`; nothing a user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:  # imported already (e.g. when the CLI runs in-process)
            sys.modules["transformers"].utils.logging.disable_progress_bar()


# Characters a terminal acts on instead of showing: C0/C1 controls (ESC starts colour, screen-clear and title
# sequences), bidirectional overrides (text that reads differently from what it is), line/paragraph separators and
# lone surrogates. Shown escaped (\x1b, \u202e) wherever text from documents, file names or errors is printed.
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object, keep: str = "") -> str:
    """``text`` with every character a terminal would act on replaced by its escape (characters in ``keep`` stay)."""

    def show(ch: str) -> str:
        if ch in keep:
            return ch
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI:
            code = ord(ch)
            return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        return ch

    text = str(text)
    return text if text.isprintable() and not _BIDI.intersection(text) else "".join(map(show, text))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it between runs)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _PrintableFormatter(logging.Formatter):
    """Log lines name files and quote document text: escape what a terminal would act on."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep="\n")


def fail(err: Exception) -> click.ClickException:
    return click.ClickException(printable(err, keep="\n"))


def parse_widths(value: str, option: str) -> list[int]:
    """``"64,128,256"`` -> ``[64, 128, 256]`` (an empty string: none); anything else is a usage error of ``option``."""
    try:
        widths = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths (e.g. 64,128,256)",
                                 param_hint=option) from None  # fmt: skip
    if any(w < 1 for w in widths):
        raise click.BadParameter(f"widths must be positive, got {value!r}", param_hint=option)
    return widths


runtime_option = click.option(
    "--runtime",
    type=click.Choice(["auto", "torch", "openvino"]),
    default=None,
    help="What runs the model: openvino (CPU; a SciFact index build measured 1.35x (AMD EPYC) to 1.54x (Xeon, AMX) "
    "the chunks/s of torch: docs/results/speed.md; pip install 'sfp-rag[openvino]') or torch "
    "[default: auto, openvino on a CPU where installed].",
)


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
        runtime_option,
        click.option("--batch-size", "-b", type=click.IntRange(min=1), default=32, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def query_template_option(f):
    """--query-template: an asymmetric query prompt (recorded in the index like the document template)."""
    return click.option(
        "--query-template",
        default=None,
        help="The queries' prompt, preset or string [default: the model's; its document template if it has none].",
    )(f)


def build_encoder(
    model, adapter, template, pooling, device, dtype, base: dict | None = None, query_template=None, runtime=None
):
    """An encoder from the CLI options; ``base`` (a recorded encoder config) fills what the options leave out."""
    from ..embedding.encoder import SFPEncoder

    options = {"adapter": adapter, "template": template, "pooling": pooling, "device": device, "dtype": dtype,
               "query_template": query_template, "runtime": runtime}  # fmt: skip
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        if base is not None and model is None:
            settings = {**base, **overrides}
            return SFPEncoder.from_pretrained(settings.pop("model"), **settings)
        return SFPEncoder.from_pretrained(model, **overrides)
    except USER_ERRORS as err:
        raise fail(err) from err


# --- the group ------------------------------------------------------------------------------------------------


def _verbosity_callback(ctx: click.Context, param: click.Parameter, value) -> None:
    if value:  # only when given after the subcommand: the group's own -v/-q stay in force otherwise
        state = ctx.find_root().meta.setdefault("sfp_rag.verbosity", {"verbose": 0, "quiet": False})
        state[param.name] = value
        _setup_logging(state["verbose"], state["quiet"])


def _verbosity_params() -> list[click.Option]:
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_verbosity_callback,
                     help="More logging (-vv for debug)."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_verbosity_callback,
                     help="Only warnings and errors."),
    ]  # fmt: skip


class SFPGroup(click.Group):
    """A group whose commands also take -v/-q after the subcommand name (``sfp-rag index ./docs -q``)."""

    group_class = type  # subgroups are SFPGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        cmd.params.extend(p for p in _verbosity_params() if not taken.intersection(p.opts))
        super().add_command(cmd, name)


@click.group(cls=SFPGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sfp-rag")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """CSE-SFP sentence embeddings for retrieval: index documents, query them, train and evaluate embedders.

    \b
    Examples:
      sfp-rag index ./docs                      # -> the index "docs" in indexes/
      sfp-rag query "how do I reset my password?" --index docs
      sfp-rag indexes                           # list them
      sfp-rag train --corpus ./docs -o runs/docs-adapted   # adapt the embedder to your documents
      sfp-rag ask "how long is the reset link valid?"
      sfp-rag models

    \b
    Environment:
      SFP_RAG_HOME    where named indexes live [default: ./indexes]
      SFP_RAG_INDEX   the index `query` searches [default: the only one]
      SFP_RAG_MODEL   the model `index`, `eval` use [default: shipped model]
      SFP_RAG_BACKBONE  the backbone `train` starts from [default: gemma3-270m]
      SFP_RAG_CACHE   dequantized/merged weights, digests [default: user cache]
      SFP_RAG_SERVER  a running `sfp-rag serve` for query/ask (URL)
      SFP_RAG_API_KEY the API key serve requires and query/ask send
      SFP_RAG_RAY_TIMEOUT  seconds to wait for --ray-address to answer [default: 30]
    """
    ctx.meta["sfp_rag.verbosity"] = {"verbose": verbose, "quiet": quiet}
    _setup_logging(verbose, quiet)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the shipped default embedder and the built-in offline backbones, and whether they are installed."""
    from ..embedding.backbones import describe_models
    from ..embedding.config import DEFAULT_MODEL_NAME, default_model_dir, load_encoder_config

    rows = describe_models()
    shipped = default_model_dir()
    if shipped is not None:
        base = load_encoder_config(shipped).model
        rows.insert(
            0,
            {
                "name": DEFAULT_MODEL_NAME,
                "installed": True,
                "cached": None,
                "default": True,
                "description": f"CSE-SFP adapter on {base} (the default; see {shipped / 'MODEL_CARD.md'})",
                "license": "Apache-2.0 adapter; the backbone's terms apply",
                "install": "ships with sfp-rag",
            },
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = ("installed" + (", converted" if r["cached"] else "")) if r["installed"] else "not installed"
        click.echo(f"{r['name']:<16} {state:<22} {r['description']} [{r['license']}]")
        if not r["installed"]:
            click.echo(f"{'':<16} install: {r['install']}")


# --- options shared by several commands ---------------------------------------------------------------------


def senteval_option(f):
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("../shared/data/senteval"),
        show_default=True,
        help="SentEval data folder.",
    )(f)


def chunking_options(f):
    """--chunk-size and --chunk-overlap, in tokens of the model's tokenizer (index and BEIR evaluation alike)."""
    f = click.option("--chunk-overlap", type=click.IntRange(min=0), default=32, show_default=True)(f)
    return click.option(
        "--chunk-size",
        type=click.IntRange(min=16),
        default=256,
        show_default=True,
        help="Chunk length in tokens of the model's tokenizer.",
    )(f)


def engine_options(f):
    """--engine, --ray-address, --workers: where document embeddings are computed."""
    opts = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="local: this process; ray: Ray Data over an actor pool of encoders (the [distributed] extra).",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Join this Ray cluster (host:port, ray://host:port); one that does not answer within "
            "$SFP_RAG_RAY_TIMEOUT seconds (30) is an error [default: start a local Ray].",
        ),
        click.option(
            "--workers", type=click.IntRange(min=1), default=None, help="Ray actors [default: one per GPU, else 1]."
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def check_engine_options(engine: str, ray_address: str | None, workers: int | None) -> None:
    """Before any model loads: Ray options make sense only with the Ray engine."""
    if engine == "local" and (ray_address or workers):
        raise click.UsageError("--ray-address and --workers go with --engine ray")
    if ray_address:
        from .._utils import require
        from ..distributed.ray_engine import RAY_INSTALL, check_cluster

        try:
            require("ray", "Distributed indexing", RAY_INSTALL)
            check_cluster(ray_address)  # before the model loads: a dead address fails in bounded time
        except USER_ERRORS as err:
            raise fail(err) from err


def make_embedder(engine: str, encoder, ray_address: str | None, workers: int | None, batch_size: int):
    """None for the local engine; else a ``RayEmbedder`` over ``encoder`` (close it when done)."""
    if engine == "local":
        return None
    from ..distributed.ray_engine import RayEmbedder

    try:
        return RayEmbedder(encoder, workers=workers, address=ray_address, batch_size=batch_size)
    except USER_ERRORS as err:
        raise fail(err) from err


def writable_output(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A result file's folder is checked when the options are read: an evaluation that runs for an hour must not
    end unable to save what it measured."""
    if value is not None:
        from .._utils import ensure_writable_dir

        try:
            ensure_writable_dir(value.expanduser().absolute().parent, "the result file")
        except USER_ERRORS as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return value


def result_options(f):
    """--output (JSON file) and --label (the model's name in tables and reports)."""
    f = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=writable_output,
        help="Write the results as JSON here.",
    )(f)
    return click.option("--label", default=None, help="Name of the model in tables [default: from the model].")(f)


def write_result(result: dict, output: Path | None) -> None:
    """Save a result as JSON, with the machine that measured it."""
    if output:
        from .._utils import atomic_write_json, machine_info

        atomic_write_json(output, {**result, "machine": result.get("machine") or machine_info()})
        click.echo(f"wrote {output}", err=True)


def model_label(encoder) -> str:
    c = encoder.config
    if c.adapter:
        return Path(c.adapter).name
    return f"{Path(c.model).name} {encoder.prompt_tokenizer.template.name}"
