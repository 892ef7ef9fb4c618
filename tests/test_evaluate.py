"""Evaluation plumbing: fold scoring equals scoring each fold on its own; holdout and per-model train overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bench.adapters.protocol import AdapterBase

from bench.config import EvalConfig, config_from_dict
from bench.data.base import RetrievalSplit, holdout, subset
from bench.errors import ConfigError
from bench.evaluation.itr import evaluate, fold_mean, metric_value
from bench.grid.cell import train_config


class _Lookup(AdapterBase):
    """Embeddings given as stage-1 features: the head is the identity, so evaluation sees them unchanged."""

    def __init__(self, joint: bool = True) -> None:
        super().__init__()
        self.backbone, self.head, self.joint_space = torch.nn.Identity(), torch.nn.Identity(), joint

    def embed_image(self, feats):  # noqa: ANN001, ANN201
        return feats["x"]

    def embed_text(self, feats):  # noqa: ANN001, ANN201
        return feats["x"]


def _problem(n_img: int, seed: int = 0) -> tuple[RetrievalSplit, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    caps_per = rng.integers(1, 6, size=n_img)
    c2i = np.repeat(np.arange(n_img), caps_per)
    img = torch.from_numpy(rng.normal(size=(n_img, 16))).float()
    txt = img[c2i] + 0.8 * torch.from_numpy(rng.normal(size=(len(c2i), 16))).float()
    split = RetrievalSplit(
        dataset="t", split="test", image_paths=[Path(f"/nonexistent/{i}.jpg") for i in range(n_img)],
        image_ids=[str(i) for i in range(n_img)], captions=[f"c{j}" for j in range(len(c2i))], caption_to_image=c2i,
        image_labels=rng.integers(0, 5, size=n_img),
    )  # fmt: skip
    return split, img, txt


def test_folds_equal_scoring_each_fold_alone() -> None:
    split, img, txt = _problem(60)
    folds = [np.arange(k * 20, (k + 1) * 20) for k in range(3)]
    cfg, dev = EvalConfig(), torch.device("cpu")
    full = evaluate(_Lookup(), split, cfg, device=dev, features=({"x": img}, {"x": txt}), folds=folds, progress=False)
    assert len(full["folds"]) == 3
    for rows, got in zip(folds, full["folds"], strict=True):
        sub = subset(split, rows, "fold")
        caps = np.flatnonzero(np.isin(split.caption_to_image, rows))
        alone = evaluate(_Lookup(), sub, cfg, device=dev, features=({"x": img[rows]}, {"x": txt[caps]}), progress=False)
        assert got == alone
    mean = fold_mean(full["folds"])
    assert mean["rsum"] == pytest.approx(np.mean([f["rsum"] for f in full["folds"]]))
    assert mean["i2t"]["r1"] == pytest.approx(np.mean([f["i2t"]["r1"] for f in full["folds"]]))
    # The full split is harder than its folds (a 3x larger gallery).
    assert full["rsum"] < mean["rsum"]


def test_no_joint_space_gives_na_but_uni_modal_metrics() -> None:
    split, img, txt = _problem(30)
    out = evaluate(_Lookup(joint=False), split, EvalConfig(), device=torch.device("cpu"),
                   features=({"x": img}, {"x": txt}), progress=False)  # fmt: skip
    assert out["i2t"] is None and out["t2i"] is None and out["rsum"] is None
    assert out["t2t"] is not None and out["i2i"] is not None
    assert metric_value(out, "rsum") == float("-inf") and metric_value(out, "t2t_r1") == out["t2t"]["r1"]


def test_holdout_is_disjoint_deterministic_and_keeps_captions_with_images() -> None:
    split, _, _ = _problem(50)
    tr, va = holdout(split, 0.2)
    tr2, va2 = holdout(split, 0.2)
    assert va.image_ids == va2.image_ids and tr.image_ids == tr2.image_ids
    assert va.n_images == 10 and tr.n_images == 40 and not set(tr.image_ids) & set(va.image_ids)
    assert tr.n_captions + va.n_captions == split.n_captions
    for part in (tr, va):  # every caption still points at its own image
        for j, i in enumerate(part.caption_to_image):
            orig = int(part.image_ids[i])
            assert part.captions[j] in [split.captions[k] for k in np.flatnonzero(split.caption_to_image == orig)]


def test_per_model_train_overrides_are_checked() -> None:
    cfg = config_from_dict({"train": {"epochs": 3}, "models": {"a": {"adapter": "towers", "train": {"epochs": 9}},
                                                                "b": {"adapter": "towers"}}})  # fmt: skip
    assert train_config(cfg, "a").epochs == 9 and train_config(cfg, "b").epochs == 3
    with pytest.raises(ConfigError, match="epochz"):  # when the config is read, before any cell asks for it
        config_from_dict({"models": {"a": {"adapter": "towers", "train": {"epochz": 9}}}})
