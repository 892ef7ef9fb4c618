"""Exact retrieval scorer and metrics against an independent brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bench.scoring.common as scoring_common
from bench.scoring.itr import TIE_RULE, itr_metrics, itr_ranks, recall_summary, retrieval_ranks, sibling_ranks

# ---------------------------------------------------------------------------------------------------------------------
# Independent references (float64 numpy, full score matrix)


def brute_force_ranks(
    queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray], exclude: np.ndarray | None = None
) -> np.ndarray:
    """Sort each query's gallery by score, non-positives first among ties; rank = position of the first positive."""
    scores = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    ranks = np.empty(len(queries), dtype=np.int64)
    for i in range(len(queries)):
        keep = np.arange(gallery.shape[0])
        if exclude is not None and exclude[i] >= 0:
            keep = keep[keep != exclude[i]]
        is_pos = np.isin(keep, positives[i])
        order = np.lexsort((is_pos, -scores[i, keep]))  # primary: score descending; ties: non-positives first
        ranks[i] = int(np.flatnonzero(is_pos[order])[0])
    return ranks


def dense_count_ranks(
    queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray], chunk: int = 500
) -> np.ndarray:
    """The tie rule read literally on a dense float64 score matrix; fast enough for 25k-caption problems."""
    q = np.asarray(queries, np.float64)
    g = np.asarray(gallery, np.float64)
    ranks = np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), chunk):
        scores = q[s : s + chunk] @ g.T
        is_pos = np.zeros(scores.shape, dtype=bool)
        for r, p in enumerate(positives[s : s + chunk]):
            is_pos[r, p] = True
        best = np.where(is_pos, scores, -np.inf).max(axis=1)
        ranks[s : s + chunk] = ((scores >= best[:, None]) & ~is_pos).sum(axis=1)
    return ranks


def reference_summary(ranks: np.ndarray) -> dict[str, float]:
    r1 = ranks + 1
    return {
        "r1": 100.0 * np.count_nonzero(r1 <= 1) / len(r1),
        "r5": 100.0 * np.count_nonzero(r1 <= 5) / len(r1),
        "r10": 100.0 * np.count_nonzero(r1 <= 10) / len(r1),
        "medr": float(np.percentile(r1, 50)),
        "meanr": float(r1.sum() / len(r1)),
    }


def reference_itr(
    image: np.ndarray, text: np.ndarray, c2i: np.ndarray, labels: np.ndarray | None = None, *, normalize: bool
) -> dict[str, object]:
    """All protocols with plain Python bookkeeping and the sort-based reference."""
    image = np.asarray(image, np.float64)
    text = np.asarray(text, np.float64)
    if normalize:
        image = image / np.linalg.norm(image, axis=1, keepdims=True)
        text = text / np.linalg.norm(text, axis=1, keepdims=True)
    caps = {i: [j for j in range(len(c2i)) if c2i[j] == i] for i in range(len(image))}
    imgs_with = [i for i in range(len(image)) if caps[i]]
    i2t = reference_summary(brute_force_ranks(image[imgs_with], text, [np.array(caps[i]) for i in imgs_with]))
    t2i = reference_summary(brute_force_ranks(text, image, [np.array([c2i[j]]) for j in range(len(c2i))]))
    out: dict[str, object] = {
        "i2t": i2t,
        "t2i": t2i,
        "rsum": sum(d[k] for d in (i2t, t2i) for k in ("r1", "r5", "r10")),
    }
    tq = [j for j in range(len(c2i)) if len(caps[c2i[j]]) >= 2]
    out["t2t"] = (
        reference_summary(
            brute_force_ranks(text[tq], text, [np.array([k for k in caps[c2i[j]] if k != j]) for j in tq], np.array(tq))
        )
        if tq
        else None
    )
    out["i2i"] = None
    if labels is not None:
        iq = [i for i in range(len(image)) if np.count_nonzero(labels == labels[i]) >= 2]
        if iq:
            pos = [np.array([k for k in np.flatnonzero(labels == labels[i]) if k != i]) for i in iq]
            out["i2i"] = reference_summary(brute_force_ranks(image[iq], image, pos, np.array(iq)))
    return out


def assert_summary_close(got: dict[str, float] | None, want: dict[str, float] | None, tol: float = 1e-9) -> None:
    assert (got is None) == (want is None), (got, want)
    if want is None:
        return
    assert set(want) <= set(got)  # the list metrics (MRR, nDCG, mAP@R) are checked in test_per_query.py
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=tol), (k, got, want)


# ---------------------------------------------------------------------------------------------------------------------
# Random problems with exact ties (integer-valued embeddings give float-exact dot products in float32 and float64)


def tie_heavy_problem(seed: int, n_img: int = 60, d: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with 1..7 captions each, some images and captions exact duplicates, small integer coordinates."""
    rng = np.random.default_rng(seed)
    image = rng.integers(-2, 3, size=(n_img, d)).astype(np.float32)
    dup = rng.choice(n_img, size=n_img // 4, replace=False)
    image[dup[1:]] = image[dup[:-1]]  # exact duplicate images
    n_caps = rng.integers(1, 8, size=n_img)
    c2i = np.repeat(np.arange(n_img), n_caps)
    rng.shuffle(c2i)
    text = image[c2i] + rng.integers(-1, 2, size=(len(c2i), d)).astype(np.float32)
    dup_t = rng.choice(len(c2i), size=len(c2i) // 5, replace=False)
    text[dup_t[1:]] = text[dup_t[:-1]]  # exact duplicate captions (possibly of other images)
    return image, text, c2i


def strip_budget(rows: int, n_gallery: int) -> float:
    """memory_mb that gives strips of exactly ``rows`` rows."""
    return rows * n_gallery * 4 / 2**20


def caption_lists(c2i: np.ndarray, n_img: int) -> list[np.ndarray]:
    return [np.flatnonzero(c2i == i) for i in range(n_img)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_t2i_ranks_equal_brute_force(seed: int, rows: int) -> None:
    image, text, c2i = tie_heavy_problem(seed)
    positives = [np.array([m]) for m in c2i]
    want = brute_force_ranks(text, image, positives)
    got = retrieval_ranks(text, image, positives, memory_mb=strip_budget(rows, len(image)))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64
    # The CSR form of the same positives gives the same ranks.
    got_csr = retrieval_ranks(text, image, (np.arange(len(c2i) + 1), c2i), memory_mb=strip_budget(rows, len(image)))
    np.testing.assert_array_equal(got_csr, want)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_i2t_ranks_equal_brute_force(seed: int, rows: int) -> None:
    image, text, c2i = tie_heavy_problem(seed)
    positives = caption_lists(c2i, len(image))
    want = brute_force_ranks(image, text, positives)
    got = retrieval_ranks(image, text, positives, memory_mb=strip_budget(rows, len(text)))
    np.testing.assert_array_equal(got, want)
    assert want.max() > 0 and np.any(want == 0)  # the problem is neither trivial nor hopeless


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_t2t_with_excluded_self_equals_brute_force(seed: int, rows: int) -> None:
    image, text, c2i = tie_heavy_problem(seed)
    caps = caption_lists(c2i, len(image))
    queries = np.array([j for j in range(len(c2i)) if len(caps[c2i[j]]) >= 2])
    positives = [caps[c2i[j]][caps[c2i[j]] != j] for j in queries]
    want = brute_force_ranks(text[queries], text, positives, queries)
    got = retrieval_ranks(text[queries], text, positives, exclude=queries, memory_mb=strip_budget(rows, len(text)))
    np.testing.assert_array_equal(got, want)
    # The exclusion is really applied: scoring the query against itself changes some ranks.
    no_excl = retrieval_ranks(text[queries], text, positives, memory_mb=strip_budget(rows, len(text)))
    assert not np.array_equal(no_excl, want)


def test_partial_exclusion_with_minus_one() -> None:
    image, text, c2i = tie_heavy_problem(5)
    positives = [np.array([m]) for m in c2i]
    rng = np.random.default_rng(0)
    exclude = np.where(rng.random(len(c2i)) < 0.5, -1, (c2i + 1) % len(image))
    want = brute_force_ranks(text, image, positives, exclude)
    np.testing.assert_array_equal(retrieval_ranks(text, image, positives, exclude=exclude, memory_mb=0.001), want)


def test_references_agree_with_each_other() -> None:
    # The dense counting reference stands in for the sort reference on the 25k problem, so check they agree on ties.
    for seed in range(3):
        image, text, c2i = tie_heavy_problem(seed)
        positives = caption_lists(c2i, len(image))
        np.testing.assert_array_equal(
            dense_count_ranks(image, text, positives, chunk=7), brute_force_ranks(image, text, positives)
        )


def watch_tiles(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the (rows, columns) of every score strip or tile the scorers compute from now on."""
    shapes: list[tuple[int, int]] = []
    real = scoring_common.strip_scores

    def spy(q: torch.Tensor, g_t: torch.Tensor) -> torch.Tensor:
        shapes.append((q.shape[0], g_t.shape[1]))
        return real(q, g_t)

    monkeypatch.setattr(scoring_common, "strip_scores", spy)
    return shapes


def test_strips_never_exceed_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    image, text, c2i = tie_heavy_problem(0)
    shapes = watch_tiles(monkeypatch)
    positives = [np.array([m]) for m in c2i]
    for rows in (1, 7, 64):
        shapes.clear()
        retrieval_ranks(text, image, positives, memory_mb=strip_budget(rows, len(image)))
        assert [s[0] for s in shapes[:-1]] == [rows] * (len(shapes) - 1)
        assert 1 <= shapes[-1][0] <= rows
        assert sum(s[0] for s in shapes) == len(text)
        assert len(shapes) == math.ceil(len(text) / rows)
        assert all(s[1] == len(image) for s in shapes)
    # A budget below one row still makes progress one row at a time.
    shapes.clear()
    retrieval_ranks(text, image, positives, memory_mb=1e-9)
    assert {s[0] for s in shapes} == {1}
    assert scoring_common.strip_rows(1000, 1.0) == 2**20 // 4000


def test_scores_use_full_fp32_and_restore_precision_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # TF32/bf16 products (a training script may turn them on) would merge or split near ties, so scoring forces IEEE.
    backends = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    if not all(hasattr(b, "fp32_precision") for b in backends):
        pytest.skip("this torch has no per-backend fp32_precision")
    seen: list[list[str]] = []
    real = scoring_common.strip_scores

    def spy(q: torch.Tensor, g_t: torch.Tensor) -> torch.Tensor:
        seen.append([b.fp32_precision for b in backends])
        return real(q, g_t)

    monkeypatch.setattr(scoring_common, "strip_scores", spy)
    before = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "tf32"
        image, text, c2i = tie_heavy_problem(0)
        want = brute_force_ranks(text, image, [np.array([m]) for m in c2i])
        np.testing.assert_array_equal(retrieval_ranks(text, image, (np.arange(len(c2i) + 1), c2i)), want)
        n_strips = len(seen)
        np.testing.assert_array_equal(itr_ranks(image, text, c2i, memory_mb=0.002)[1], want)
        sibling_ranks(text, c2i, memory_mb=0.002)  # the two tiled scans too
        assert n_strips and len(seen) > n_strips and all(s == ["ieee", "ieee"] for s in seen)
        assert [b.fp32_precision for b in backends] == ["tf32", "tf32"]
    finally:
        for b, p in zip(backends, before, strict=True):
            b.fp32_precision = p


def test_exact_ties_are_pessimistic() -> None:
    # Gallery rows 0..2 are identical; row 3 is worse. Whichever of 0..2 is the positive, it ranks behind the other two.
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    for p in range(3):
        assert retrieval_ranks(query, gallery, [np.array([p])]).tolist() == [2]
    # Two tied positives do not compete with each other: rank = the one tied negative.
    assert retrieval_ranks(query, gallery, [np.array([0, 1])]).tolist() == [1]
    # The best positive counts, not the first: positive 3 is worse than positive 0.
    assert retrieval_ranks(query, gallery, [np.array([3, 0])]).tolist() == [2]
    # Excluding one tied negative helps by exactly one.
    assert retrieval_ranks(query, gallery, [np.array([0])], exclude=np.array([1])).tolist() == [1]
    # A positive listed twice is still one positive.
    assert retrieval_ranks(query, gallery, [np.array([0, 0, 0])]).tolist() == [2]


def test_input_types_and_dtypes_agree() -> None:
    image, text, c2i = tie_heavy_problem(1)
    positives = (np.arange(len(c2i) + 1), c2i)
    want = brute_force_ranks(text, image, [np.array([m]) for m in c2i])
    variants = [
        (text.astype(np.float16), image.astype(np.float16)),
        (text.astype(np.float64), image.astype(np.float64)),
        (torch.from_numpy(text), torch.from_numpy(image)),
        (torch.from_numpy(text).half(), image),
    ]
    for q, g in variants:
        np.testing.assert_array_equal(retrieval_ranks(q, g, positives, memory_mb=0.01), want)
    torch_pos = (torch.arange(len(c2i) + 1), torch.from_numpy(c2i))
    np.testing.assert_array_equal(retrieval_ranks(text, image, torch_pos), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    image, text, c2i = tie_heavy_problem(2)
    positives = caption_lists(c2i, len(image))
    want = brute_force_ranks(image, text, positives)
    got = retrieval_ranks(torch.from_numpy(image).cuda(), torch.from_numpy(text).cuda(), positives, memory_mb=0.001)
    np.testing.assert_array_equal(got, want)


def test_recall_summary_definition() -> None:
    ranks = np.array([0, 1, 4, 9, 10, 0])
    s = recall_summary(ranks)
    assert set(s) == {"r1", "r5", "r10", "medr", "meanr"}
    assert s == pytest.approx(reference_summary(ranks))
    assert s["r1"] == pytest.approx(100 * 2 / 6) and s["r10"] == pytest.approx(100 * 5 / 6)
    assert s["medr"] == pytest.approx(3.5) and s["meanr"] == pytest.approx(np.mean(ranks) + 1)
    assert set(recall_summary(ranks, ks=(1, 3, 50))) == {"r1", "r3", "r50", "medr", "meanr"}
    assert all(type(v) is float for v in s.values())


def test_tie_rule_is_stated() -> None:
    assert isinstance(TIE_RULE, str) and "pessimistic" in TIE_RULE and ">=" in TIE_RULE


# ---------------------------------------------------------------------------------------------------------------------
# itr_metrics


def test_itr_metrics_all_protocols_exact_on_ties() -> None:
    image, text, c2i = tie_heavy_problem(7, n_img=50)
    # Two images without captions: i2t skips them, t2i still ranks them as negatives.
    keep = (c2i != 3) & (c2i != 17)
    text, c2i = text[keep], c2i[keep]
    labels = np.random.default_rng(7).integers(0, 12, size=len(image))
    labels[5] = 99  # a label with one image is no i2i query
    got = itr_metrics(image, text, c2i, labels, normalize=False, memory_mb=0.002)
    want = reference_itr(image, text, c2i, labels, normalize=False)
    assert set(got) == {"i2t", "t2i", "rsum", "t2t", "i2i"}
    for k in ("i2t", "t2i", "t2t", "i2i"):
        assert_summary_close(got[k], want[k])
    assert got["rsum"] == pytest.approx(want["rsum"])


def test_itr_metrics_normalized_matches_reference() -> None:
    rng = np.random.default_rng(11)
    image = rng.standard_normal((80, 16)).astype(np.float32) * rng.uniform(0.5, 3, size=(80, 1)).astype(np.float32)
    c2i = np.repeat(np.arange(80), rng.integers(1, 6, size=80))
    text = image[c2i] * 4 + 2.5 * rng.standard_normal((len(c2i), 16)).astype(np.float32)
    labels = rng.integers(0, 8, size=80)
    got = itr_metrics(torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(c2i), labels, memory_mb=0.01)
    want = reference_itr(image, text, c2i, labels, normalize=True)
    for k in ("i2t", "t2i", "t2t", "i2i"):
        assert_summary_close(got[k], want[k])
    # Normalisation matters: the unnormalised scores (row scales differ) rank differently.
    raw = itr_metrics(image, text, c2i, labels, normalize=False)
    assert raw["t2i"] != got["t2i"]


def test_itr_metrics_25k_captions_matches_brute_force() -> None:
    rng = np.random.default_rng(2024)
    n_img, d = 5000, 64
    image = rng.standard_normal((n_img, d)).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), 5)
    rng.shuffle(c2i)
    text = image[c2i] + 2.5 * rng.standard_normal((len(c2i), d)).astype(np.float32)
    assert len(text) == 25_000

    got = itr_metrics(image, text, c2i, memory_mb=32.0)

    img64 = image.astype(np.float64) / np.linalg.norm(image.astype(np.float64), axis=1, keepdims=True)
    txt64 = text.astype(np.float64) / np.linalg.norm(text.astype(np.float64), axis=1, keepdims=True)
    want_i2t = reference_summary(dense_count_ranks(img64, txt64, caption_lists(c2i, n_img)))
    want_t2i = reference_summary(dense_count_ranks(txt64, img64, [np.array([m]) for m in c2i]))
    for got_s, want_s in ((got["i2t"], want_i2t), (got["t2i"], want_t2i)):
        for k in ("r1", "r5", "r10"):
            assert got_s[k] == pytest.approx(want_s[k], abs=0.01)
            assert 5.0 < got_s[k] < 95.0  # mid-range, so a wrong rank would show
        assert got_s["medr"] == want_s["medr"]
        assert got_s["meanr"] == pytest.approx(want_s["meanr"], rel=1e-3)
    want_rsum = sum(s[k] for s in (want_i2t, want_t2i) for k in ("r1", "r5", "r10"))
    assert got["rsum"] == pytest.approx(want_rsum, abs=0.06)
    assert got["t2t"] is not None and got["i2i"] is None


def test_not_joint_gives_none_not_zero() -> None:
    rng = np.random.default_rng(3)
    image = rng.standard_normal((30, 8)).astype(np.float32)
    c2i = np.repeat(np.arange(30), 2)
    text = rng.standard_normal((60, 5)).astype(np.float32)  # a different dimension: no joint space
    labels = np.arange(30) % 4
    got = itr_metrics(image, text, c2i, labels, joint=False)
    assert got["i2t"] is None and got["t2i"] is None and got["rsum"] is None
    unit_img = image / np.linalg.norm(image, axis=1, keepdims=True)
    i2i_pos = [np.array([k for k in range(30) if labels[k] == labels[i] and k != i]) for i in range(30)]
    assert_summary_close(got["i2i"], reference_summary(brute_force_ranks(unit_img, unit_img, i2i_pos, np.arange(30))))
    unit_txt = text / np.linalg.norm(text, axis=1, keepdims=True)
    t2t_pos = [np.array([k for k in range(60) if c2i[k] == c2i[j] and k != j]) for j in range(60)]
    assert_summary_close(got["t2t"], reference_summary(brute_force_ranks(unit_txt, unit_txt, t2t_pos, np.arange(60))))
    with pytest.raises(ValueError, match="image_emb.*text_emb"):
        itr_metrics(image, text, c2i, joint=True)


def test_collapsed_embeddings_score_zero() -> None:
    n_img = 40
    c2i = np.repeat(np.arange(n_img), 5)
    image = np.ones((n_img, 16), dtype=np.float32)
    text = np.ones((len(c2i), 16), dtype=np.float32)
    got = itr_metrics(image, text, c2i, np.arange(n_img) % 5)
    for k in ("i2t", "t2i", "t2t", "i2i"):
        assert got[k]["r1"] == 0.0 and got[k]["r10"] == 0.0, (k, got[k])
    assert got["rsum"] == 0.0
    assert got["t2i"]["meanr"] == n_img  # every other image ties ahead of the right one
    assert got["i2t"]["meanr"] == len(c2i) - 5 + 1


def test_optional_protocols_are_none_when_they_do_not_apply() -> None:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((10, 4)).astype(np.float32)
    text = rng.standard_normal((10, 4)).astype(np.float32)
    got = itr_metrics(image, text, np.arange(10), np.arange(10))  # one caption per image, unique labels
    assert got["t2t"] is None and got["i2i"] is None and got["i2t"] is not None
    assert itr_metrics(image, text, np.arange(10))["i2i"] is None


def test_errors() -> None:
    image = np.eye(4, dtype=np.float32)
    text = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    c2i = np.array([0, 1, 2, 3, 0])
    with pytest.raises(ValueError, match=r"caption_to_image\[2\] = 7"):
        itr_metrics(image, text, np.array([0, 1, 7, 9, 0]))
    with pytest.raises(ValueError, match=r"caption_to_image\[4\] = -1"):
        itr_metrics(image, text, np.array([0, 1, 2, 3, -1]))
    with pytest.raises(ValueError, match="caption_to_image has 4 rows but text_emb has 5"):
        itr_metrics(image, text, c2i[:4])
    with pytest.raises(ValueError, match="image_labels has 3 rows but image_emb has 4"):
        itr_metrics(image, text, c2i, np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="caption_to_image must be an integer"):
        itr_metrics(image, text, c2i.astype(np.float32))
    bad = text.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="text_emb row 3"):
        itr_metrics(image, bad, c2i)

    with pytest.raises(ValueError, match="query 2 has no positive"):
        retrieval_ranks(text, image, [np.array([0]), np.array([1]), np.array([], dtype=np.int64), [3], [0]])
    with pytest.raises(ValueError, match="query 1 has no positive"):
        retrieval_ranks(text[:3], image, (np.array([0, 1, 1, 2]), np.array([0, 2])))
    with pytest.raises(ValueError, match="query 1 has positive 4, out of range"):
        retrieval_ranks(text[:2], image, [[0], [4]])
    with pytest.raises(ValueError, match="len\\(indptr\\)"):
        retrieval_ranks(text[:2], image, (np.array([0, 1]), np.array([0])))
    with pytest.raises(ValueError, match="positives has 2 entries but there are 5 queries"):
        retrieval_ranks(text, image, [[0], [1]])
    with pytest.raises(ValueError, match="query 0: gallery row 0 is both excluded and a positive"):
        retrieval_ranks(text[:1], image, [[0]], exclude=[0])
    with pytest.raises(ValueError, match=r"exclude\[1\] = 4"):
        retrieval_ranks(text[:2], image, [[0], [1]], exclude=[-1, 4])
    with pytest.raises(ValueError, match="dimension"):
        retrieval_ranks(text, image[:, :3], [[0]] * 5)
    with pytest.raises(ValueError, match="memory_mb"):
        retrieval_ranks(text, image, [[0]] * 5, memory_mb=0)
