"""UnimodalScorer on tiny random adapters: which embedding is scored, cached stage 1 against end-to-end encoding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.config import EvalConfig
from bench.data import load_split
from bench.data.image_sets import ImageRetrievalSplit
from bench.data.sts import STSSplit
from bench.evaluation.unimodal import UnimodalScorer
from bench.methods.cusa import CusaObjective
from bench.scoring.unimodal import image_retrieval_metrics, sts_metrics

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")
CFG = EvalConfig(batch_size=8, memory_mb=1.0)


@pytest.fixture(scope="module")
def image_split(tmp_path_factory: pytest.TempPathFactory) -> ImageRetrievalSplit:
    work = tmp_path_factory.mktemp("uni_eval")
    spec = {"format": "synthetic", "seed": 3, "n_train": 2, "n_val": 2, "n_test": 16, "image_size": 48}
    s = load_split("synthetic", spec, "test", work_dir=work)
    return ImageRetrievalSplit("shapes", "test", s.image_paths, s.image_ids, s.image_labels)


@pytest.fixture(scope="module")
def sts_split() -> STSSplit:
    s1 = ["a red circle", "two blue squares", "a dog on the grass", "a green star", "the cat sits"]
    s2 = ["one red circle", "a yellow triangle", "a dog runs on grass", "three stars", "a man rides a horse"]
    return STSSplit("pairs", "test", s1, s2, np.array([4.8, 1.0, 4.0, 2.5, 0.2]), ["f1", "f1", "f1", "f2", "f2"])


def _scorer(adapter: Any, split: Any, frozen: bool, cache: Path | None = None) -> UnimodalScorer:
    return UnimodalScorer(adapter, split, CFG, device=CPU, frozen=frozen, cache_dir=cache, progress=False)


@pytest.mark.parametrize("split_name", ["image_split", "sts_split"])
def test_cached_stage1_matches_end_to_end(
    request: pytest.FixtureRequest, build_tiny: Callable[..., Any], tmp_path: Path, split_name: str
) -> None:
    adapter, split = build_tiny("vse_infty"), request.getfixturevalue(split_name)
    frozen = _scorer(adapter, split, True, tmp_path)._embed()
    e2e = _scorer(adapter, split, False)._embed()
    n = split.n_images if split_name == "image_split" else len(split.sentences()[0])
    assert frozen.shape == e2e.shape == (n, adapter.embed_dim)
    torch.testing.assert_close(frozen, e2e, atol=2e-2, rtol=2e-2)  # stage-1 features are cached in float16
    if split_name == "image_split":
        assert list(tmp_path.glob("shapes-test-image-*.pt"))  # image features land in the feature cache


def test_zero_shot_scores_the_joint_space_and_towers_their_own_rows(
    build_tiny: Callable[..., Any], image_split: ImageRetrievalSplit, sts_split: STSSplit
) -> None:
    vse = _scorer(build_tiny("vse_infty"), image_split, True)
    m = vse()
    assert vse.embedding == "joint" and set(m) == {"i2i"}
    assert m["i2i"] == image_retrieval_metrics(vse._embed(), image_split.labels, memory_mb=CFG.memory_mb)
    towers = _scorer(build_tiny("towers"), sts_split, True)
    m = towers()
    assert towers.embedding == "towers" and set(m["sts"]) == {"f1", "f2", "mean"}


@pytest.mark.parametrize(("beta", "kind"), [(0.5, "uni_heads"), (0.0, "joint")])
def test_a_methods_heads_decide_the_embedding(
    build_tiny: Callable[..., Any], image_split: ImageRetrievalSplit, sts_split: STSSplit, beta: float, kind: str
) -> None:
    adapter = build_tiny("vse_infty")
    torch.manual_seed(0)
    objective = CusaObjective(adapter.embed_dim, alpha=0.0, beta=beta, head_init="normal")
    img_scorer, txt_scorer = _scorer(adapter, image_split, True), _scorer(adapter, sts_split, True)
    img_metrics, txt_metrics = img_scorer(objective, last=True), txt_scorer(objective)
    assert img_scorer.embedding == txt_scorer.embedding == kind
    heads = objective.uni if beta else objective.cross
    with torch.no_grad():
        img = heads["image"](img_scorer._embed())
        txt = heads["text"](txt_scorer._embed())
    assert img_metrics["i2i"] == image_retrieval_metrics(img, image_split.labels, memory_mb=CFG.memory_mb)
    _, a, b = sts_split.sentences()
    assert txt_metrics["sts"] == pytest.approx(sts_metrics(txt[a], txt[b], sts_split.scores, sts_split.groups))


def test_scorer_rejects_an_itr_split(build_tiny: Callable[..., Any], image_split: ImageRetrievalSplit) -> None:
    with pytest.raises(TypeError, match="image-retrieval or STS split"):
        _scorer(build_tiny("towers"), image_split.images(), True)
