"""The retrieval metrics against their peers' own code, on continuous scores (no ties, where a peer's tie order
would differ from the pessimistic tie rule):

* image-text: trec_eval itself (``pytrec_eval``, the trec_eval C code as a wheel) on full rankings: R@K is trec's
  ``success_K``, MRR its ``recip_rank``, nDCG@10 its ``ndcg_cut_10`` and R-Precision its ``Rprec``;
* label retrieval (i2i): pytorch-metric-learning's ``AccuracyCalculator``: mAP@R is its
  ``mean_average_precision_at_r``, R-Precision its ``r_precision``, R@1 its ``precision_at_1``."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

import bench

MEASURES = {"success.1,5,10", "recip_rank", "ndcg_cut.10", "Rprec"}


def _trec(sim: np.ndarray, positives: list[np.ndarray]) -> dict[str, float]:
    qrels = {f"q{i}": {f"d{j}": 1 for j in pos} for i, pos in enumerate(positives)}
    run = {f"q{i}": {f"d{j}": float(s) for j, s in enumerate(row)} for i, row in enumerate(sim)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    names = ["success_1", "success_5", "success_10", "recip_rank", "ndcg_cut_10", "Rprec"]
    return {n: 100 * float(np.mean([q[n] for q in per_query.values()])) for n in names}


@pytest.mark.parametrize("noise", [2.0, 4.0])
def test_image_text_metrics_are_trec_evals(noise: float) -> None:
    rng = np.random.default_rng(int(noise))
    n_images = 50
    per_image = rng.integers(1, 7, size=n_images)  # 1-6 captions per image, as real sets vary
    caption_image = np.repeat(np.arange(n_images), per_image)
    images = rng.normal(size=(n_images, 24))
    texts = images[caption_image] + noise * rng.normal(size=(caption_image.size, 24))
    ours = bench.score(images, texts, caption_image)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(images) @ unit(texts).T
    for direction, scores, positives in (
        ("i2t", sim, [np.flatnonzero(caption_image == i) for i in range(n_images)]),
        ("t2i", sim.T, [np.array([c]) for c in caption_image]),
    ):
        trec = _trec(scores, positives)
        got = ours[direction]
        assert 2 < got["r1"] < 98, "a problem where the metrics can disagree"
        for k in (1, 5, 10):
            assert got[f"r{k}"] == pytest.approx(trec[f"success_{k}"], abs=1e-6), (direction, k)
        assert got["mrr"] == pytest.approx(trec["recip_rank"], abs=1e-6), direction
        assert got["ndcg10"] == pytest.approx(trec["ndcg_cut_10"], abs=1e-4), direction
        if "r_precision" in got:
            assert got["r_precision"] == pytest.approx(trec["Rprec"], abs=1e-6), direction


def test_label_retrieval_metrics_are_pytorch_metric_learnings() -> None:
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    from bench.scoring.unimodal import image_retrieval_metrics

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 25, size=150)  # classes of 1 to 13 images: R varies by query
    emb = rng.normal(size=(25, 16))[labels] + 1.5 * rng.normal(size=(150, 16))
    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision", "precision_at_1"),
                              k="max_bin_count", avg_of_avgs=False, knn_func=CustomKNN(CosineSimilarity()))  # fmt: skip
    theirs = calc.get_accuracy(torch.tensor(emb, dtype=torch.float32), torch.tensor(labels), ref_includes_query=True)
    ours = image_retrieval_metrics(emb, labels)
    assert 5 < ours["map_at_r"] < 95
    assert ours["map_at_r"] == pytest.approx(100 * theirs["mean_average_precision_at_r"], abs=1e-4)
    assert ours["r_precision"] == pytest.approx(100 * theirs["r_precision"], abs=1e-4)
    assert ours["r1"] == pytest.approx(100 * theirs["precision_at_1"], abs=1e-4)
