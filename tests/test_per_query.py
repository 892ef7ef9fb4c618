"""Per-query results: top-k lists from the tiled scans against a brute-force ranking, the list metrics (MRR, nDCG@10,
mAP@R, R-Precision), and the per-query file's round trip."""

from __future__ import annotations

import numpy as np
import pytest
from test_metrics import brute_force_ranks, caption_lists, tie_heavy_problem

import bench.scoring.itr_scan as itr_scan_mod
from bench.scoring.itr import itr_queries, itr_scan, sibling_scan, summarize
from bench.scoring.perquery import load_per_query, save_per_query, sha256_of
from bench.scoring.queries import per_query_values
from bench.scoring.unimodal import label_retrieval


def brute_lists(queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray], exclude: np.ndarray | None):
    """Each query's whole gallery in the stage-one order: (scores, positive flags, gallery rows)."""
    scores = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    out = []
    for i in range(len(queries)):
        keep = np.arange(gallery.shape[0])
        if exclude is not None:
            keep = keep[keep != exclude[i]]
        is_pos = np.isin(keep, positives[i])
        order = np.lexsort((is_pos, -scores[i, keep]))
        out.append((scores[i, keep][order], is_pos[order], keep[order]))
    return scores, out


def assert_lists_match(lists, scores, brute, queries, k: int) -> None:
    assert lists.index.shape == (len(brute), k)
    for row, (s, p, _) in enumerate(brute):
        np.testing.assert_array_equal(lists.score[row].astype(np.float64), s[:k])
        np.testing.assert_array_equal(lists.positive[row], p[:k])
        # Each listed row really has the listed score (which of equal-scoring negatives is kept is unspecified).
        np.testing.assert_array_equal(scores[queries[row], lists.index[row]], s[:k])
        assert len(set(lists.index[row].tolist())) == k


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("memory_mb", "width"), [(1e-9, 512), (0.002, 7), (256.0, 512)])
@pytest.mark.parametrize("k", [1, 10])
def test_itr_lists_equal_brute_force(seed: int, memory_mb: float, width: int, k: int, monkeypatch) -> None:
    image, text, c2i = tie_heavy_problem(seed)
    monkeypatch.setattr(itr_scan_mod, "_CPU_TILE_WIDTH", width)
    scan = itr_scan(image, text, c2i, topk=k, memory_mb=memory_mb)
    caps = caption_lists(c2i, len(image))
    with_caps = np.array([i for i in range(len(image)) if len(caps[i])])
    scores, brute = brute_lists(image[with_caps], text, [caps[i] for i in with_caps], None)
    assert_lists_match(scan.i2t_lists, scores, brute, np.arange(len(with_caps)), k)
    scores, brute = brute_lists(text, image, [np.array([m]) for m in c2i], None)
    assert_lists_match(scan.t2i_lists, scores, brute, np.arange(len(c2i)), k)
    # The lists agree with the ranks: a query's best positive first appears at list position == rank.
    for ranks, lists in ((scan.i2t, scan.i2t_lists), (scan.t2i, scan.t2i_lists)):
        first = np.where(lists.positive.any(1), lists.positive.argmax(1), k)
        np.testing.assert_array_equal(np.minimum(ranks, k), first)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("memory_mb", [1e-9, 0.0004, 256.0])
def test_sibling_lists_equal_brute_force(seed: int, memory_mb: float) -> None:
    _, text, c2i = tie_heavy_problem(seed)
    scan = sibling_scan(text, c2i, topk=6, memory_mb=memory_mb)
    caps = caption_lists(c2i, c2i.max() + 1)
    positives = [np.array([j for j in caps[c2i[q]] if j != q]) for q in scan.queries]
    scores, brute = brute_lists(text[scan.queries], text, positives, scan.queries)
    assert_lists_match(scan.lists, scores, brute, np.arange(len(scan.queries)), 6)
    np.testing.assert_array_equal(scan.ranks, brute_force_ranks(text[scan.queries], text, positives, scan.queries))


def test_large_groups_fall_back_to_strips_with_lists() -> None:
    rng = np.random.default_rng(5)
    emb = rng.integers(-1, 2, size=(90, 4)).astype(np.float32)
    groups = np.array([0] * 60 + [1] * 30)  # a group wider than the tile side
    scan = sibling_scan(emb, groups, topk=5, memory_mb=1e-9)
    positives = [np.flatnonzero((groups == groups[q]) & (np.arange(90) != q)) for q in scan.queries]
    scores, brute = brute_lists(emb[scan.queries], emb, positives, scan.queries)
    assert_lists_match(scan.lists, scores, brute, np.arange(len(scan.queries)), 5)


def reference_list_metrics(brute, n_pos: np.ndarray) -> dict[str, float]:
    """MRR, nDCG@10 (binary gains), mAP@R and R-Precision read off whole sorted lists, query by query."""
    mrr, ndcg, ap, rp = [], [], [], []
    for (_, p, _), r in zip(brute, n_pos, strict=True):
        mrr.append(1.0 / (np.flatnonzero(p)[0] + 1))
        gains = p[:10] / np.log2(np.arange(2, min(10, len(p)) + 2))
        ideal = (1.0 / np.log2(np.arange(2, min(10, r) + 2))).sum()
        ndcg.append(gains.sum() / ideal)
        top = p[:r]
        ap.append(sum(np.mean(top[: i + 1]) for i in range(r) if top[i]) / r)
        rp.append(top.mean())
    return {k: 100 * float(np.mean(v)) for k, v in zip(("mrr", "ndcg10", "map_at_r", "r_precision"),
                                                        (mrr, ndcg, ap, rp), strict=True)}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_list_metrics_equal_reference(seed: int) -> None:
    image, text, c2i = tie_heavy_problem(seed)
    labels = np.arange(len(image)) % 7
    m = summarize(itr_queries(image, text, c2i, labels, normalize=False, topk=20), ks=(1, 3, 5, 10))
    caps = caption_lists(c2i, len(image))
    with_caps = [i for i in range(len(image)) if len(caps[i])]
    _, brute = brute_lists(image[with_caps], text, [caps[i] for i in with_caps], None)
    want = reference_list_metrics(brute, np.array([len(caps[i]) for i in with_caps]))
    for key, value in want.items():
        assert m["i2t"][key] == pytest.approx(value, abs=1e-9), key
    _, brute = brute_lists(text, image, [np.array([x]) for x in c2i], None)
    want = reference_list_metrics(brute, np.ones(len(c2i), dtype=int))
    for key in ("mrr", "ndcg10"):
        assert m["t2i"][key] == pytest.approx(want[key], abs=1e-9), key
    assert "map_at_r" not in m["t2i"] and m["i2t"]["r3"] >= m["i2t"]["r1"]
    # i2i's mAP@R from the lists equals the label-retrieval scorer's (which reads all positives, not a list).
    ref = label_retrieval(image, image, labels, labels, exclude=np.arange(len(image)))
    assert m["i2i"]["map_at_r"] == pytest.approx(100 * ref["ap_at_r"].mean(), abs=1e-6)
    assert m["i2i"]["r_precision"] == pytest.approx(100 * ref["r_precision"].mean(), abs=1e-6)


def test_short_lists_leave_map_out_but_keep_ranks() -> None:
    image, text, c2i = tie_heavy_problem(0)
    m = summarize(itr_queries(image, text, c2i, topk=3))  # some images have 7 captions: R > 3
    assert "map_at_r" not in m["i2t"] and "ndcg10" not in m["i2t"] and m["i2t"]["r10"] >= 0
    assert "ndcg10" in m["t2i"]  # one positive: nDCG@10 follows from the rank alone
    ranks_only = summarize(itr_queries(image, text, c2i, topk=0))
    assert ranks_only["t2i"]["ndcg10"] == pytest.approx(m["t2i"]["ndcg10"])
    assert ranks_only["rsum"] == m["rsum"]


def test_per_query_file_round_trip(tmp_path) -> None:
    image, text, c2i = tie_heavy_problem(1)
    labels = np.arange(len(image)) % 5
    queries = itr_queries(image, text, c2i, labels, topk=10)
    path = tmp_path / "cell.queries.npz"
    digest = save_per_query(path, queries, c2i, len(image), image_label=labels,
                            image_id=[f"img{i}.jpg" for i in range(len(image))],
                            caption_text=[f"caption {j}" for j in range(len(c2i))],
                            rerank={"t2i": (np.arange(len(c2i)), np.zeros(len(c2i), dtype=int))},
                            meta={"model": "m"})  # fmt: skip
    assert digest == sha256_of(path)
    back = load_per_query(path)
    assert set(back.queries) == {"i2t", "t2i", "t2t", "i2i"} and back.meta["model"] == "m"
    for d, q in queries.items():
        got = back.queries[d]
        np.testing.assert_array_equal(got.queries, q.queries)
        np.testing.assert_array_equal(got.ranks, q.ranks)
        np.testing.assert_array_equal(got.cluster, q.cluster)
        np.testing.assert_array_equal(got.lists.positive, q.lists.positive)
        want_v, got_v = per_query_values(q, d), per_query_values(got, d)
        assert set(want_v) == set(got_v)
        for key in want_v:
            np.testing.assert_array_equal(got_v[key], want_v[key])
    assert back.caption_text[3] == "caption 3" and back.image_id[2] == "img2.jpg"
    assert back.rerank["t2i"].shape == (len(c2i),)


def test_broken_per_query_files_name_the_file(tmp_path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="x.npz"):
        load_per_query(bad)
    np.savez(bad, caption_image=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="x.npz: no meta array"):
        load_per_query(bad)
