"""``sfp-rag serve`` (the HTTP service) and ``sfp-rag ask`` (retrieve, then answer with a local LM)."""

from __future__ import annotations

import click

from .core import USER_ERRORS, fail, main, runtime_option


@main.command()
@click.option(
    "--index", "-i", "indexes", multiple=True, help="Serve this index (repeatable) [default: the whole home]."
)
@click.option("--model", "-m", envvar="SFP_RAG_MODEL", default=None,
              help="Encoder [env SFP_RAG_MODEL; default: the one the served index records].")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; anything else needs --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="SFP_RAG_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on every request [env SFP_RAG_API_KEY].")  # fmt: skip
@click.option("--max-batch-tokens", type=click.IntRange(min=64), default=16384, show_default=True,
              help="Padded tokens per forward pass at most (requests arriving together share one).")  # fmt: skip
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=4.0, show_default=True,
              help="How long a batch waits for more requests.")  # fmt: skip
@click.option("--max-queue", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Texts waiting at most; beyond it requests get 503.")  # fmt: skip
@click.option("--llm", default=None, help="Answering LM for /ask [default: smollm2-135m].")
@click.option("--device", default=None, help="auto, cpu, cuda [default: auto].")
@click.option("--dtype", default=None, help="auto, float32, bfloat16, float16 [default: auto].")
@runtime_option
def serve(
    indexes, model, host, port, api_key, max_batch_tokens, max_wait_ms, max_queue, llm, device, dtype, runtime
) -> None:
    """Serve embeddings and search over HTTP: the model loads once, concurrent requests share forward passes.

    \b
    Routes: POST /v1/embeddings (OpenAI-compatible), POST /search, POST /ask,
            GET /health, GET /indexes, GET /metrics (Prometheus).
    \b
    Examples:
      sfp-rag serve                                   # every index in indexes/, on 127.0.0.1:8000
      sfp-rag serve --index docs --port 8080
      sfp-rag query "reset password" --server http://127.0.0.1:8000
      curl -s localhost:8000/search -d '{"query": "reset password", "k": 3}' -H 'content-type: application/json'
    """
    from .._utils import require

    try:
        require("fastapi", "sfp-rag serve", "pip install 'sfp-rag[serve]'")
        require("uvicorn", "sfp-rag serve", "pip install 'sfp-rag[serve]'")
        from ..serving.config import ServeConfig

        config = ServeConfig(
            host=host, port=port, model=model, indexes=indexes, api_key=api_key, max_batch_tokens=max_batch_tokens,
            max_wait_ms=max_wait_ms, max_queue=max_queue, device=device, dtype=dtype, runtime=runtime, llm=llm,
        )  # fmt: skip
        from ..integrations.answering import lazy_answerer
        from ..serving.server import run

        run(config, answer=lazy_answerer(llm, device=device))
    except USER_ERRORS as err:
        raise fail(err) from err


@main.command()
@click.argument("question")
@click.option("--index", "-i", "index_name", envvar="SFP_RAG_INDEX", default=None,
              help="Index name or path [env SFP_RAG_INDEX; default: the only index].")  # fmt: skip
@click.option("-k", "--top-k", "k", type=click.IntRange(1, 20), default=3, show_default=True, help="Sources to use.")
@click.option("--extract/--generate", "extract", default=True, show_default=True,
              help="extract: the sources' sentences that best answer, each cited (fast, nothing invented); "
              "generate: an answer written by a local LM (--llm).")  # fmt: skip
@click.option("--sentences", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Sentences in an extractive answer.")  # fmt: skip
@click.option("--llm", default=None, help="Answering LM for --generate: built-in name, .gguf, model dir or hub id "
              "[smollm2-135m].")  # fmt: skip
@click.option("--server", envvar="SFP_RAG_SERVER", default=None, help="Ask a running `sfp-rag serve` instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer and its sources as JSON (no streaming).")
@click.option("--device", default=None, help="auto, cpu, cuda [default: auto].")
def ask(question, index_name, k, extract, sentences, llm, server, as_json, device) -> None:
    """Answer QUESTION from an index, citing the passages it used as [1], [2].

    By default the answer is extractive: the sentences of the retrieved passages that best answer the question,
    each with its citation. --generate asks a local LM instead (streamed; the 135M default model is often wrong:
    see the ask guide's measurements).

    \b
    Examples:
      sfp-rag ask "How do I reset my password?"
      sfp-rag ask "What is the refund window?" --index docs -k 4 --json
      sfp-rag ask "How long is the reset link valid?" --generate --llm ./my-instruct-model
    """
    import json

    from .core import printable

    if not question.strip():
        raise click.UsageError("the question is empty")
    if llm and extract:
        raise click.UsageError("--llm is the model of generated answers: add --generate")
    mode = "extract" if extract else "generate"
    stream = model = None
    try:
        if server:
            from ..client import ServerError, SFPClient

            try:
                with SFPClient(server) as client:
                    result = client.ask(question, index=index_name, k=k, mode=mode)
            except ServerError as err:
                raise fail(err) from err
        else:
            from ..retrieval.searcher import Searcher

            searcher = Searcher.open(index_name, lazy=True)
            if extract:
                from ..integrations.extractive import extract_answer

                result = extract_answer(question, searcher, k, sentences)
            else:
                from ..integrations.answering import LocalLLM, answer_question, stream_answer

                model = LocalLLM.load(llm, device=device)
                if as_json:
                    result = answer_question(question, searcher, model, k)
                else:
                    stream, to_sources = stream_answer(question, searcher, model, k)
    except USER_ERRORS as err:
        raise fail(err) from err
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if stream is None:
        text, sources, truncated = result["answer"], result["sources"], result.get("truncated", False)
        click.echo(printable(text, keep="\n") if text else "(no sentence of the sources answers this)")
    else:
        text = ""
        for delta in stream:
            text += delta
            click.echo(printable(delta, keep="\n"), nl=False)
        sources, truncated = to_sources(text), model.last_truncated
        click.echo("..." if truncated else "")
    if truncated:
        click.echo(f"(the answer was cut off at {model.max_new_tokens if model else 'the'} new tokens)")
    click.echo("\nSources:")
    for s in sources:
        mark = "*" if s["cited"] else " "
        cosine = f", cosine {s['cosine']:.3f}" if s.get("cosine") is not None else ""
        click.echo(f" {mark}[{s['n']}] {printable(s['source'])} (score {s['score']:.3f}{cosine})")
    if mode == "generate" and not any(s["cited"] for s in sources):
        click.echo("(the answer cites no source: it may come from the model's own weights, not your documents)")
