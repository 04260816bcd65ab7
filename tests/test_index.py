from __future__ import annotations

import numpy as np
import pytest

from sfp_rag.retrieval.faiss_index import FaissIndex, brute_force_search, min_training_vectors
from sfp_rag.retrieval.fusion import check_fusion, convex_fuse, fuse_scores, minmax_fuse, resolve_alpha, rrf_fuse


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return _unit(rng, 2000, 48), _unit(rng, 25, 48)


def test_flat_topk_equals_numpy_brute_force(data):
    vectors, queries = data
    index = FaissIndex.build(vectors, "Flat")
    scores, ids = index.search(queries, 10)
    ref_scores, ref_ids = brute_force_search(vectors, queries, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_brute_force_reference_is_itself_right():
    vectors = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)
    scores, ids = brute_force_search(vectors, q, 3)
    assert ids.tolist() == [[1, 2, 0]] and scores[0, 0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "factory, min_recall", [("HNSW32", 0.9), ("IVF16,Flat", 0.6), ("IVF16,PQ8x4", 0.1)]
)  # chance is 10/2000
def test_approximate_types_train_and_recall(data, factory, min_recall):
    vectors, queries = data
    index = FaissIndex.build(vectors, factory)
    _, ids = index.search(queries, 10)
    _, ref = brute_force_search(vectors, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
    assert recall >= min_recall


def test_save_and_load_give_the_same_results(tmp_path, data):
    vectors, queries = data
    index = FaissIndex.build(vectors, "HNSW32")
    index.save(tmp_path / "x.faiss")
    again = FaissIndex.load(tmp_path / "x.faiss", "HNSW32")
    for a, b in zip(index.search(queries, 5), again.search(queries, 5)):
        np.testing.assert_array_equal(a, b)


def test_errors_are_clear(tmp_path, data):
    vectors, queries = data
    with pytest.raises(ValueError, match="needs at least 256 vectors"):
        FaissIndex.build(vectors[:100], "IVF256,Flat")
    with pytest.raises(ValueError, match="cannot build index type"):
        FaissIndex.build(vectors, "NotAnIndex42")
    with pytest.raises(ValueError, match="2-D"):
        FaissIndex.build(vectors[0], "Flat")
    index = FaissIndex.build(vectors, "Flat")
    with pytest.raises(ValueError, match="dim 3"):
        index.search(np.ones((1, 3), np.float32), 2)
    (tmp_path / "bad.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        FaissIndex.load(tmp_path / "bad.faiss")
    assert min_training_vectors("IVF1024,PQ32") == 1024 and min_training_vectors("Flat") == 0


def test_k_larger_than_the_index_pads_with_minus_one():
    vectors = _unit(np.random.default_rng(1), 3, 8)
    _, ids = FaissIndex.build(vectors).search(vectors[:1], 5)
    assert sorted(ids[0][:3].tolist()) == [0, 1, 2] and ids[0][3:].tolist() == [-1, -1]


# --- fusion and BM25 ---------------------------------------------------------------------------------------


def test_rrf_equals_a_reference_computed_by_hand():
    dense = [3, 1, 2]
    sparse = [1, 4, -1]
    fused = dict(rrf_fuse([dense, sparse], k=60))
    assert fused[1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[3] == pytest.approx(1 / 61)
    assert fused[4] == pytest.approx(1 / 62)
    assert fused[2] == pytest.approx(1 / 63)
    assert [d for d, _ in rrf_fuse([dense, sparse])] == [1, 3, 4, 2]  # 3 and 4 tie on score... 1/61 > 1/62
    by_id = fuse_scores({3: 0.9, 1: 0.8, 2: 0.7}, {1: 5.0, 4: 2.0}, fusion="rrf")
    assert [d for d, _ in by_id] == [1, 3, 4, 2]


def test_minmax_fusion_equals_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        dense = {int(i): float(s) for i, s in zip(rng.choice(30, 10, replace=False), rng.uniform(-1, 1, 10))}
        sparse = {int(i): float(s) for i, s in zip(rng.choice(30, 8, replace=False), rng.uniform(0, 20, 8))}
        alpha = float(rng.uniform())
        ref = {}
        for d in set(dense) | set(sparse):
            nd = (dense[d] - min(dense.values())) / (max(dense.values()) - min(dense.values())) if d in dense else 0
            ns = (
                (sparse[d] - min(sparse.values())) / (max(sparse.values()) - min(sparse.values()))
                if d in sparse
                else 0
            )
            ref[d] = alpha * nd + (1 - alpha) * ns
        fused = minmax_fuse(dense, sparse, alpha)
        assert dict(fused) == pytest.approx(ref)
        assert [s for _, s in fused] == sorted(ref.values(), reverse=True)
        assert fuse_scores(dense, sparse, "minmax", alpha) == fused
    # the two ends are the single rankings
    dense, sparse = {1: 0.9, 2: 0.5, 3: 0.1}, {3: 9.0, 2: 1.0}
    assert [d for d, _ in minmax_fuse(dense, sparse, 1.0)] == [1, 2, 3]
    assert [d for d, _ in minmax_fuse(dense, sparse, 0.0)][0] == 3


def test_convex_fusion_equals_a_brute_force_reference():
    """TM2C2: cosines shifted by their floor (-1) and BM25 scores each divided by the query's best; a BM25-only
    candidate takes its looked-up cosine, or the lowest retrieved one; a dense-only candidate BM25's floor, 0."""
    rng = np.random.default_rng(1)
    for trial in range(30):
        cosines = {d: float(c) for d, c in enumerate(rng.uniform(-1, 1, 30))}  # every document's true cosine
        top_dense = sorted(cosines, key=lambda d: -cosines[d])[:10]
        dense = {d: cosines[d] for d in top_dense}
        sparse = {int(i): float(s) for i, s in zip(rng.choice(30, 8, replace=False), rng.uniform(0.1, 20, 8))}
        lookup = {d: cosines[d] for d in sparse if d not in dense} if trial % 2 else None
        alpha = float(rng.uniform())
        best_cos, best_bm25, floor = max(dense.values()), max(sparse.values()), min(dense.values())
        ref = {}
        for d in set(dense) | set(sparse):
            cos = cosines[d] if d in dense or lookup is not None else floor
            ref[d] = alpha * (cos + 1) / (best_cos + 1) + (1 - alpha) * sparse.get(d, 0.0) / best_bm25
        fused = convex_fuse(dense, sparse, alpha, lookup)
        assert dict(fused) == pytest.approx(ref)
        assert [s for _, s in fused] == pytest.approx(sorted(ref.values(), reverse=True))
        assert fuse_scores(dense, sparse, "convex", alpha, lookup) == fused
    dense, sparse = {1: 0.9, 2: 0.5, 3: 0.1}, {3: 9.0, 2: 1.0}
    assert [d for d, _ in convex_fuse(dense, sparse, 1.0)] == [1, 2, 3]
    assert [d for d, _ in convex_fuse(dense, sparse, 0.0)] == [3, 2, 1]
    # a lexical match the dense search missed keeps its own cosine, not the floor of the dense list
    assert dict(convex_fuse({1: 0.9, 2: 0.8}, {3: 5.0}, 0.5, {3: 0.85}))[3] == pytest.approx(0.5 * 1.85 / 1.9 + 0.5)
    assert dict(convex_fuse({1: 0.9, 2: 0.8}, {3: 5.0}, 0.5))[3] == pytest.approx(0.5 * 1.8 / 1.9 + 0.5)
    # one side empty: the other decides alone, scores stay in [0, 1]
    assert convex_fuse({}, {4: 2.0, 5: 1.0}, 0.75) == [(4, 0.25), (5, 0.125)]
    assert [d for d, _ in convex_fuse({1: 0.2, 2: 0.4}, {}, 0.75)] == [2, 1]


def test_fusion_checks_and_tuned_weights():
    assert resolve_alpha("convex", None) == 0.7 and resolve_alpha("minmax", None) == 0.3
    assert resolve_alpha("convex", 0.2) == 0.2 and resolve_alpha("rrf", None) is None
    with pytest.raises(ValueError, match="alpha"):
        check_fusion("convex", 1.5)
    with pytest.raises(ValueError, match="fusion must be one of"):
        check_fusion("max", 0.5)


def test_bm25_finds_the_matching_text():
    from sfp_rag.retrieval.bm25 import BM25Index

    texts = ["the cat sat on the mat", "stock markets fell sharply", "cats are sleeping", "the weather is fine"]
    bm25 = BM25Index.build(texts)
    scores, ids = bm25.search(["sleeping cat", "market crash", "the and of"], k=3)
    assert ids[0][0] in (0, 2) and set(ids[0][:2].tolist()) == {0, 2}  # stemming matches cat/cats
    assert ids[1][0] == 1
    assert (ids[2] == -1).all()  # stopwords only: nothing matches, nothing fails
    assert bm25.search(["cat"], k=10)[1].shape == (1, 4)  # k is capped at the corpus size


# --- index types for large corpora ------------------------------------------------------------------------------


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, dim)).astype(np.float32)
    x = centers[rng.integers(0, 64, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth)]))


def test_auto_picks_by_corpus_size():
    from sfp_rag.retrieval.faiss_index import choose_factory

    assert choose_factory(5_000, 640) == "Flat"
    assert choose_factory(200_000, 640) == "IVF2048,Flat"  # about 4*sqrt(n) lists
    assert choose_factory(10_000_000, 640).endswith(",PQ80")  # beyond 1M: PQ codes, dim/8 bytes a vector
    assert FaissIndex.build(_clustered(500), "auto").factory == "Flat"


@pytest.mark.parametrize("factory", ["IVF16,Flat", "HNSW16", "IVF16,PQ8"])
def test_approximate_indexes_against_exact_search(factory):
    vectors, queries = _clustered(3000), _clustered(50, seed=1)
    _, truth = brute_force_search(vectors, queries, 10)
    index = FaissIndex.build(vectors, factory)
    _, ids = index.search(queries, 10)
    assert _recall(ids, truth) > (0.35 if "PQ" in factory else 0.85)  # PQ codes are lossy (8 bytes a vector)
    # per-search parameters: the widest search is exact for IVF-Flat, and the defaults come back afterwards
    wide = {"nprobe": 16} if "IVF" in factory else {"efSearch": 512}
    _, wide_ids = index.search(queries, 10, wide)
    assert _recall(wide_ids, truth) >= _recall(ids, truth)
    if factory == "IVF16,Flat":
        assert _recall(wide_ids, truth) == 1.0
    _, again = index.search(queries, 10)
    np.testing.assert_array_equal(again, ids)


def test_search_parameters_are_checked():
    from sfp_rag.retrieval.faiss_index import check_search_params

    with pytest.raises(ValueError, match="applies to IVF"):
        check_search_params("Flat", {"nprobe": 4})
    with pytest.raises(ValueError, match="unknown search parameter"):
        check_search_params("IVF16,Flat", {"n_probe": 4})
    with pytest.raises(ValueError, match="positive integer"):
        check_search_params("HNSW32", {"efSearch": 0})


def test_training_uses_a_bounded_sample():
    from sfp_rag.retrieval.faiss_index import training_sample

    vectors = _clustered(10_000)
    assert training_sample(vectors, "IVF16,Flat").shape == (16 * 256, 32)
    assert training_sample(vectors[:100], "Flat").shape == (100, 32)
    with pytest.raises(ValueError, match="needs at least 64 vectors"):
        training_sample(vectors[:10], "IVF64,Flat")


def test_ondisk_index_equals_the_in_memory_one_and_moves_with_its_folder(tmp_path):
    import shutil

    from sfp_rag.retrieval.faiss_index import ONDISK_DATA, build_ondisk

    vectors, queries = _clustered(5000), _clustered(40, seed=2)
    folder = tmp_path / "a"
    folder.mkdir()
    ondisk = build_ondisk(vectors, "IVF32,Flat", folder, shard_rows=1200, workers=2)  # 5 shards, merged on disk
    memory = FaissIndex.build(vectors, "IVF32,Flat", use_gpu=False)
    assert (folder / ONDISK_DATA).stat().st_size > 0 and ondisk.ntotal == 5000
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", ONDISK_DATA]  # no shards left behind
    for index in (ondisk, FaissIndex.load(folder / "index.faiss", "IVF32,Flat")):
        s1, i1 = index.search(queries, 10, {"nprobe": 32})
        s2, i2 = memory.search(queries, 10, {"nprobe": 32})
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5)
    shutil.move(folder, tmp_path / "moved")  # the lists are found beside the index file, wherever it is
    moved = FaissIndex.load(tmp_path / "moved" / "index.faiss", "IVF32,Flat")
    np.testing.assert_array_equal(moved.search(queries, 10, {"nprobe": 32})[1], i2)
    with pytest.raises(ValueError, match="IVF"):
        build_ondisk(vectors, "HNSW16", tmp_path)


def test_bm25_over_texts_without_an_indexable_word():
    pytest.importorskip("bm25s")
    from sfp_rag.retrieval.bm25 import BM25Index

    index = BM25Index.build(["x y z", "a an the", "of"])  # one-letter words and stopwords only
    scores, ids = index.search(["x", "the cat"], 2)
    assert (ids == -1).all() and index.ntotal == 3


@pytest.mark.gpu
def test_faiss_builds_and_searches_on_the_gpu(tmp_path):
    pytest.importorskip(
        "faiss", reason="FAISS is not installed (pip install faiss-gpu on a GPU machine; see the docs)"
    )
    from sfp_rag.retrieval.faiss_index import faiss_gpus

    if faiss_gpus() == 0:
        pytest.skip("needs a CUDA GPU and FAISS with GPU support (this FAISS has none: pip install faiss-gpu)")
    vectors, queries = _clustered(20_000), _clustered(100, seed=3)
    _, truth = brute_force_search(vectors, queries, 10)
    for factory in ("Flat", "IVF64,Flat"):
        index = FaissIndex.build(vectors, factory, use_gpu=True)
        assert index._gpu is not None  # built and searched on the GPU
        _, ids = index.search(queries, 10, {"nprobe": 64} if "IVF" in factory else None)
        assert _recall(ids, truth) > 0.99
        index.save(tmp_path / "i.faiss")  # what is saved is a CPU index: it opens without a GPU
        _, again = FaissIndex.load(tmp_path / "i.faiss", factory).search(queries, 10)
        assert _recall(again, truth) > 0.9
