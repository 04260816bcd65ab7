"""``sfp-rag serve``: a real uvicorn server on a free loopback port, with the tiny in-process model (no HTTP mocks)."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from sfp_rag.retrieval.builder import build_index  # noqa: E402
from sfp_rag.serving.app import create_app  # noqa: E402
from sfp_rag.serving.config import ServeConfig  # noqa: E402
from tests.test_pipeline import DOCS, write_docs  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app):
    """uvicorn serving ``app`` on 127.0.0.1 in a thread, for the duration of the block."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def kb(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("serve")
    docs = write_docs(root / "docs")
    build_index(docs, encoder, root / "kb", chunk_size=64, chunk_overlap=8, hybrid=True, show_progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_llm(_tiny_model_session, bpe_tokenizer):
    """A tiny causal LM (random weights: the answer is noise, the pipeline around it is what is tested)."""
    from transformers import LlamaForCausalLM

    from sfp_rag.integrations.answering import LocalLLM

    model = LlamaForCausalLM(_tiny_model_session.config)
    model.model.load_state_dict(_tiny_model_session.state_dict())
    return LocalLLM(model, bpe_tokenizer, model_name="tiny", max_new_tokens=8)


@pytest.fixture(scope="module")
def url(kb, encoder, tiny_llm):
    from sfp_rag.integrations.answering import answer_question
    from sfp_rag.integrations.extractive import extract_answer

    def answer(question, searcher, k, mode):
        if mode == "extract":
            return extract_answer(question, searcher, k)
        return answer_question(question, searcher, tiny_llm, k)

    config = ServeConfig(indexes=(str(kb / "kb"),), max_wait_ms=30, max_queue=64, max_inputs=32, max_chars=2000)
    app = create_app(config, encoder, answer=answer)
    with running(app) as base:
        yield base


def test_openai_client_round_trip(url, encoder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    texts = ["Cats sleep all day.", "Stocks fell sharply."]
    response = client.embeddings.create(model="sfp", input=texts)  # the client asks for base64 by default
    got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode_documents(texts), atol=1e-5)
    assert response.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="sfp", input="one text", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, encoder.encode_documents("one text"), atol=1e-5)


def test_embeddings_query_role_and_base64(url, encoder):
    body = {"input": ["a cat"], "input_type": "query", "encoding_format": "base64"}
    data = httpx.post(f"{url}/v1/embeddings", json=body).json()["data"]
    vector = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, encoder.encode_queries("a cat"), atol=1e-5)


def test_embeddings_dimensions_are_what_encode_truncate_dim_gives(url, encoder):
    texts = ["a cat sat on the mat", "dogs like to walk every day"]
    for width in (1, 7, encoder.dim):
        data = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "dimensions": width}).json()["data"]
        got = np.array([d["embedding"] for d in data], dtype=np.float32)
        assert got.shape == (2, width)
        np.testing.assert_allclose(got, encoder.encode_documents(texts, truncate_dim=width), atol=1e-5)


def test_search_matches_the_cli(url, kb):
    from click.testing import CliRunner

    from sfp_rag.cli import main

    for mode in ("dense", "hybrid", "bm25"):
        served = httpx.post(f"{url}/search", json={"query": "walk every day", "k": 3, "mode": mode}).json()
        cli = CliRunner().invoke(
            main, ["-q", "query", "walk every day", "--index", str(kb / "kb"), "-k", "3", "--mode", mode, "--json"]
        )
        local = json.loads(cli.stdout)
        assert [h["row"] for h in served["hits"]] == [h["row"] for h in local["hits"]]
        assert [h["score"] for h in served["hits"]] == pytest.approx([h["score"] for h in local["hits"]], abs=1e-3)
        assert served["mode"] == local["mode"] == mode and served["score_kind"] == local["score_kind"]
    both = httpx.post(f"{url}/search", json={"query": ["cats", "dogs"], "index": "kb", "hybrid": True}).json()
    assert [a["query"] for a in both] == ["cats", "dogs"] and all(a["mode"] == "hybrid" for a in both)


def test_concurrent_requests_share_forward_passes(url, encoder):
    texts = [f"sentence number {i} about cats" for i in range(16)]

    def one(text):
        data = httpx.post(f"{url}/v1/embeddings", json={"input": text}, timeout=30).json()["data"]
        return data[0]["embedding"]

    before = _metric(url, "sfp_batch_texts_count")
    with ThreadPoolExecutor(16) as pool:
        vectors = np.array(list(pool.map(one, texts)), dtype=np.float32)
    batches = _metric(url, "sfp_batch_texts_count") - before
    np.testing.assert_allclose(vectors, encoder.encode_documents(texts), atol=1e-5)  # batched == one by one
    assert batches < 16, f"16 concurrent requests took {batches} forward passes: nothing was batched"


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_bad_requests_get_clear_json_errors_and_the_server_lives(url, encoder):
    cases = [
        ({"input": ["x"] * 33}, "/v1/embeddings", 413, "at most 32"),
        # a text over max_chars is cut, as the local path truncates: test_client_and_local_paths_agree
        ({"input": [[1, 2, 3]]}, "/v1/embeddings", 422, "input"),
        ({"input": []}, "/v1/embeddings", 422, "empty"),
        ({"input": "x", "dimensions": 100_000}, "/v1/embeddings", 422, "dimensions must be from 1"),
        ({"input": "x", "dimensions": 0}, "/v1/embeddings", 422, "dimensions must be from 1"),
        ({"query": "x", "k": 0}, "/search", 422, "k must be"),
        ({"query": "x", "k": 10_000}, "/search", 422, "k must be"),
        ({"query": "  "}, "/search", 422, "empty"),
        ({"query": "x", "index": "../../etc"}, "/search", 404, "no index"),
        ({"query": "x", "index": "nope"}, "/search", 404, "no index"),
        ({"query": "x", "mode": "fuzzy"}, "/search", 422, "mode"),
    ]
    for body, route, status, needle in cases:
        response = httpx.post(f"{url}{route}", json=body)
        assert response.status_code == status, (body, response.text)
        assert needle in response.json()["error"]["message"], response.text
    raw = httpx.post(f"{url}/search", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422 and "malformed" in raw.json()["error"]["message"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["runtime"] == encoder.runtime  # what runs the model


def test_a_full_queue_answers_503(kb, encoder):
    app = create_app(ServeConfig(indexes=(str(kb / "kb"),), max_queue=2), encoder)
    with running(app) as base:
        response = httpx.post(f"{base}/v1/embeddings", json={"input": ["a", "b", "c"]})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "busy" in response.json()["error"]["message"]
        assert httpx.post(f"{base}/v1/embeddings", json={"input": ["a", "b"]}).status_code == 200


def test_api_key_is_checked_on_every_request(kb, encoder):
    app = create_app(ServeConfig(indexes=(str(kb / "kb"),), api_key="s3cret-key"), encoder)
    with running(app) as base:
        for route in ("/health", "/metrics", "/indexes"):
            assert httpx.get(f"{base}{route}").status_code == 401
        assert httpx.get(f"{base}/health", headers={"Authorization": "Bearer wrong-key"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-key"}
        assert httpx.post(f"{base}/search", json={"query": "cats"}, headers=good).status_code == 200
    with pytest.raises(ValueError, match="api-key"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", api_key="long-enough")


def test_an_index_rebuilt_on_disk_is_served_without_restart(tmp_path, encoder):
    docs = write_docs(tmp_path / "docs", {"a.txt": "Cats sleep all day."})
    build_index(docs, encoder, tmp_path / "kb", chunk_size=64, show_progress=False)
    app = create_app(ServeConfig(indexes=(str(tmp_path / "kb"),)), encoder)
    with running(app) as base:
        first = httpx.post(f"{base}/search", json={"query": "tea", "k": 5}).json()
        assert {h["source"] for h in first["hits"]} == {"a.txt"}
        (docs / "tea.txt").write_text("Green tea is steamed soon after picking.")
        build_index(docs, encoder, tmp_path / "kb", chunk_size=64, show_progress=False)
        second = httpx.post(f"{base}/search", json={"query": "tea", "k": 5}).json()
        assert {h["source"] for h in second["hits"]} == {"a.txt", "tea.txt"}
        # a half-built index (the temporary folder of a build) is never what is served
        assert not any(p.name.startswith(".kb.tmp") for p in tmp_path.iterdir())
        assert httpx.get(f"{base}/indexes").json()[0]["documents"] == 2


@pytest.mark.parametrize("mode", ["extract", "generate"])
def test_ask_with_a_tiny_model_maps_citations_to_files(url, mode):
    body = {"question": "How do I reset my password?", "k": 2, "mode": mode}
    result = httpx.post(f"{url}/ask", json=body, timeout=60).json()
    assert isinstance(result["answer"], str) and len(result["sources"]) >= 1 and result["mode"] == mode
    assert {s["source"] for s in result["sources"]} <= set(DOCS)
    assert [s["n"] for s in result["sources"]] == list(range(1, len(result["sources"]) + 1))
    if mode == "generate":  # 8 new tokens of a random model: cut off, and said so
        assert result["truncated"] is True and result["cites_nothing"] == (
            not any(s["cited"] for s in result["sources"])
        )
    else:  # every sentence of an extractive answer is cited, and the client says the same
        assert result["answer"] and all(s["cited"] == (f"[{s['n']}]" in result["answer"]) for s in result["sources"])
        from sfp_rag.client import SFPClient

        with SFPClient(url) as client:
            assert client.ask("How do I reset my password?", k=2)["answer"] == result["answer"]
    bad = httpx.post(f"{url}/ask", json={**body, "mode": "invent"}, timeout=60)
    assert bad.status_code == 422
    empty = httpx.post(f"{url}/ask", json={**body, "question": "  "}, timeout=60)
    assert empty.status_code == 422 and "question[0] is empty" in empty.text


def test_cited_sources_reads_bracket_numbers():
    from types import SimpleNamespace

    from sfp_rag.integrations.answering import cited_sources

    node = lambda src: SimpleNamespace(  # noqa: E731
        node=SimpleNamespace(metadata={"source": src, "file_name": src}, get_content=lambda: "t"), score=0.5
    )
    sources = cited_sources("Open the sign-in page [2], then [2] again.", [node("a.md"), node("b.md")])
    assert [(s["n"], s["cited"], s["source"]) for s in sources] == [(1, False, "a.md"), (2, True, "b.md")]


def test_query_through_a_server_imports_no_torch(url):
    code = (
        "import sys, json\n"
        "from sfp_rag.cli import main\n"
        "try:\n"
        f"    main(['-q', 'query', 'walk every day', '--server', {url!r}, '--index', 'kb', '--format', 'json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('TORCH', 'torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "TORCH False False" in done.stderr
    assert json.loads(done.stdout)["hits"][0]["source"] == "pets/dogs.md"


def test_client_embed_search_and_errors(url, encoder, kb):
    from sfp_rag.client import ServerError, SFPClient

    with SFPClient(url) as client:
        hits = client.search("walk every day", index="kb", k=2)  # the same hit type as a local search
        from sfp_rag.hits import Hit
        from sfp_rag.retrieval.searcher import Searcher

        local = Searcher.open(kb / "kb", encoder).search("walk every day", k=2)
        assert all(isinstance(h, Hit) for h in hits) and [h.row for h in hits] == [h.row for h in local]
        assert [h.cosine for h in hits] == pytest.approx([h.cosine for h in local], abs=1e-4)
        assert [len(x) for x in client.search(["a cat", "stocks"], index="kb", k=1)] == [1, 1]
        np.testing.assert_allclose(client.embed(["x", "y"]), encoder.encode_documents(["x", "y"]), atol=1e-5)
        assert client.embed("x").shape == (encoder.dim,)
        with pytest.raises(ServerError, match="404.*no index"):
            client.search("x", index="nope")
    with pytest.raises(ServerError, match="cannot reach"):
        SFPClient(f"http://127.0.0.1:{free_port()}").health()
    with pytest.raises(ValueError, match="http"):
        SFPClient("localhost:8000")


def test_a_server_of_the_whole_home_refuses_names_that_are_paths(kb, encoder, monkeypatch):
    from sfp_rag.serving.registry import IndexRegistry, UnknownIndex

    monkeypatch.setenv("SFP_RAG_HOME", str(kb))
    registry = IndexRegistry((), encoder)
    assert registry.names() == ["kb"] and registry.get(None)[0] == "kb"
    for bad in ("../serve0/kb", "/etc", ".", "kb/../kb"):
        with pytest.raises(UnknownIndex):
            registry.get(bad)


# --- round 3: no 500 for bad input, one odd index does not take the server down, client and local agree ---------


def test_text_that_is_not_unicode_is_a_422_that_names_the_field(url):
    """A lone surrogate is valid JSON ("\\ud800") but not text: a 422 naming the field, never a 500."""
    cases = {
        "/search": (b'{"query": "cats \\ud800 dogs"}', "query: is not valid text"),
        "/v1/embeddings": (b'{"input": ["fine", "\\udcff"]}', "input: item 1 is not valid text"),
        "/ask": (b'{"question": "\\ud800?"}', "question: is not valid text"),
    }
    for route, (body, message) in cases.items():
        response = httpx.post(f"{url}{route}", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and message in response.json()["error"]["message"], response.text


def test_non_finite_metadata_is_refused_and_never_breaks_search(tmp_path, encoder, monkeypatch):
    from sfp_rag import Index

    index = Index.create(tmp_path / "kb", texts=["cats sleep", "dogs walk"], encoder=encoder, chunk_size=64,
                         chunk_overlap=8, show_progress=False)  # fmt: skip
    for bad in ({"score": float("nan")}, {"x": [1.0, float("inf")]}, {"deep": {"y": -float("inf")}}):
        with pytest.raises(ValueError, match="finite"):
            index.add(["a text"], ids=["t"], metadata=[bad])
    for bad in ({1: "a"}, {"ok": {2.5: "b"}}, {"l": [{None: 1}]}):
        with pytest.raises(TypeError, match="keys must be strings"):
            index.add(["a text"], ids=["t"], metadata=[bad])
    # an index written before the check may hold NaN in its docstore: the server answers with null, not a 500
    index.add(["birds sing"], ids=["b"], metadata=[{"score": 1.5}])
    docstore = tmp_path / "kb" / "docstore.jsonl"
    docstore.write_text(docstore.read_text().replace('"score": 1.5', '"score": NaN'))
    config = ServeConfig(indexes=(str(tmp_path / "kb"),), max_wait_ms=5)
    with running(create_app(config, encoder)) as base:
        answer = httpx.post(f"{base}/search", json={"query": "birds", "k": 3, "mode": "bm25"})
    assert answer.status_code == 200, answer.text
    assert {"score": None} in [h["metadata"] for h in answer.json()["hits"]]


def test_one_index_of_another_encoder_does_not_take_the_server_down(tmp_path, encoder, tiny_model_dir, monkeypatch):
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.serving.server import build

    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "home"))
    docs = write_docs(tmp_path / "docs")
    build_index(docs, encoder, tmp_path / "home" / "a", chunk_size=64, chunk_overlap=8, show_progress=False)
    other = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32", template="sth-sum")
    build_index(docs, other, tmp_path / "home" / "b", chunk_size=64, chunk_overlap=8, show_progress=False)
    (tmp_path / "home" / "c").mkdir()
    (tmp_path / "home" / "c" / "manifest.json").write_text("{damaged")  # listed as unavailable, with its reason
    app, served_by = build(ServeConfig(max_wait_ms=5))  # no --model: the first index that opens decides
    assert served_by.fingerprint() == encoder.fingerprint()
    with running(app) as base:
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "degraded" and health["indexes"] == ["a"]
        assert "another encoder" in health["unavailable"]["b"] and "--model" not in health["unavailable"]["b"]
        assert "damaged" in health["unavailable"]["c"] and set(health["unavailable"]) == {"b", "c"}
        for route, body in (
            ("/search", {"query": "cats", "index": "b"}),
            ("/ask", {"question": "cats?", "index": "b"}),
        ):
            response = httpx.post(f"{base}{route}", json=body, timeout=30)
            assert response.status_code == 409, (route, response.text)
            assert "sfp-rag serve --index b" in response.json()["error"]["message"]
        assert httpx.post(f"{base}/search", json={"query": "cats", "index": "a"}).status_code == 200


def test_client_and_local_paths_agree(url, encoder, kb):
    from click.testing import CliRunner

    from sfp_rag.cli import main
    from sfp_rag.client import SFPClient
    from sfp_rag.integrations.llamaindex import SFPEmbedding

    long_text = "Cats sleep for most of the day and purr when content. " * 800  # 44,000 characters
    with SFPClient(url) as client:
        np.testing.assert_allclose(client.embed(long_text), encoder.encode_documents(long_text), atol=1e-5)
        for bad in ("broken \udcff bytes", b"bytes"):
            with pytest.raises((TypeError, ValueError)) as local:
                encoder.encode_documents(bad)
            with pytest.raises(type(local.value), match=re.escape(str(local.value))):
                client.embed(bad)
        many = [f"text {i}" for i in range(300)]  # more than a server takes in one request: sent in two
        np.testing.assert_allclose(client.embed(many), encoder.encode_documents(many), atol=1e-5)
    remote = SFPEmbedding(server=url)
    with pytest.raises(ValueError, match="lone surrogate U\\+DCFF"):
        remote.get_text_embedding("broken \udcff bytes")
    args = ["query", "walk \udcff every day", "-k", "1"]
    local = CliRunner().invoke(main, [*args, "--index", str(kb / "kb")])
    served = CliRunner().invoke(main, [*args, "--server", url, "--index", "kb"])
    assert local.exit_code == served.exit_code == 1
    assert "lone surrogate U+DCFF" in local.output and "lone surrogate U+DCFF" in served.output


def test_no_string_field_can_make_a_500(url):
    """Every string field of every route, given a lone surrogate or an odd value: a 4xx (or a 200), never a 500."""
    fields = {
        "/v1/embeddings": {"input": "x", "model": "m", "user": "u", "input_type": "query", "encoding_format": "float"},
        "/search": {"query": "x", "index": "kb", "mode": "dense"},
        "/ask": {"question": "x", "index": "kb", "mode": "extract"},
    }
    for route, body in fields.items():
        for field in body:
            for odd in ('"\\ud800"', '"\\udfff tail"', '["\\ud800"]', "null", "1e999", '{"a": 1}'):
                raw = json.dumps({**body, field: "__ODD__"}).replace('"__ODD__"', odd)
                headers = {"content-type": "application/json"}
                response = httpx.post(f"{url}{route}", content=raw.encode(), headers=headers)
                assert response.status_code < 500, (route, field, odd, response.text)
