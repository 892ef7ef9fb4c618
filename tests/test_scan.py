"""SCAN over region features: the authors' checkpoint layout loads (plain and weight-normed image encoders), and every
pair's score equals the reference's own ``xattn_score_t2i`` / ``xattn_score_i2t`` (kuanghuei/SCAN ``model.py``,
ported in ``tests/reference_scan.py``: a Python loop over captions, each against a shard of images) to 1e-5, for
each attention direction, first norm and pooling; an ensemble is the mean of its two models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench.adapters.registry import create_adapter
from reference_scan import RefSCAN, scan_opt
from reference_sgraf import ref_encode_data, ref_recalls, ref_shard_attn_scores

from bench.config import EvalConfig
from bench.data import load_split
from bench.encode.features import encode_split
from bench.errors import BenchError
from bench.evaluation.itr import evaluate
from bench.evaluation.pairs import score_all_pairs

pytest.importorskip("nltk")

WORDS = "a the dog cat man red blue on in sits near big".split()
N_IMG, REGIONS = 6, 10


@pytest.fixture(scope="module")
def split_and_vocab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("scan")
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(N_IMG, REGIONS, 24)).astype(np.float32)
    np.save(root / "test_ims.npy", feats)
    caps = [" ".join(rng.choice(WORDS + ["zebra"], rng.integers(1, 9))) for _ in range(5 * N_IMG)]
    (root / "test_caps.txt").write_text("\n".join(caps) + "\n")
    vocab = {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", *WORDS])}
    (root / "vocab.json").write_text(json.dumps({"word2idx": vocab}))
    split = load_split("p", {"format": "precomp", "root": str(root)}, "test", work_dir=root)
    return {"root": root, "feats": feats, "caps": caps, "vocab": vocab, "split": split}


def reference(ctx: dict[str, Any], seed: int, name: str, **changes: Any) -> tuple[RefSCAN, Path]:
    ref = RefSCAN(scan_opt(vocab_size=len(ctx["vocab"]), **changes), seed)
    with torch.no_grad():  # a trained-looking word embedding: spread-out scores
        ref.txt_enc.embed.weight.normal_(0, 1)
    path = ctx["root"] / name
    ref.save(path)
    return ref, path


def reference_scores(ref: RefSCAN, ctx: dict[str, Any], adapter: Any) -> np.ndarray:
    captions = [adapter.vocab.encode(c) for c in ctx["caps"]]
    img_embs, cap_embs, cap_lens = ref_encode_data(ref, ctx["feats"], captions)
    img_embs = np.array([img_embs[i] for i in range(0, len(img_embs), 5)])
    return ref_shard_attn_scores(ref.score, img_embs, cap_embs, cap_lens, shard_size=4)


def ours(ctx: dict[str, Any], checkpoint: str | list[str]) -> Any:
    return create_adapter("scan", {"checkpoint": checkpoint, "vocab": str(ctx["root"] / "vocab.json")}).eval()


def our_scores(adapter: Any, split: Any) -> np.ndarray:
    img, txt = encode_split(adapter, split, device=torch.device("cpu"), features=adapter.split_features(split),
                            progress=False)  # fmt: skip
    return score_all_pairs(adapter, img, txt, memory_mb=0.05, device=torch.device("cpu")).numpy()


@pytest.mark.parametrize(
    "changes",
    [
        {},  # the defaults: t2i, clipped_l2norm, LogSumExp
        {"cross_attn": "i2t", "agg_func": "Mean", "bi_gru": True},
        {"cross_attn": "t2i", "raw_feature_norm": "softmax", "agg_func": "Max"},
        {"cross_attn": "i2t", "raw_feature_norm": "softmax", "agg_func": "LogSumExp", "lambda_lse": 5.0},
        {"cross_attn": "t2i", "raw_feature_norm": "l2norm", "agg_func": "Sum", "precomp_enc_type": "weight_norm"},
        {"cross_attn": "i2t", "raw_feature_norm": "clipped", "agg_func": "Max", "lambda_softmax": 4.0},
        {"cross_attn": "t2i", "raw_feature_norm": "no_norm", "agg_func": "Mean"},
    ],
)
def test_pair_scores_equal_the_reference_loop(split_and_vocab: dict[str, Any], changes: dict[str, Any]) -> None:
    ref, path = reference(split_and_vocab, 3, "m.pth.tar", **changes)
    adapter = ours(split_and_vocab, str(path))
    expected = reference_scores(ref, split_and_vocab, adapter)
    got = our_scores(adapter, split_and_vocab["split"])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert expected.std() > 0.01
    m = evaluate(adapter, split_and_vocab["split"], EvalConfig(memory_mb=0.05), device=torch.device("cpu"),
                 progress=False)  # fmt: skip
    r_i2t, r_t2i = ref_recalls(expected)
    assert [m["i2t"][f"r{k}"] for k in (1, 5, 10)] == pytest.approx(r_i2t)
    assert [m["t2i"][f"r{k}"] for k in (1, 5, 10)] == pytest.approx(r_t2i)
    assert m["pairs"]["pair_score"].startswith(f"SCAN {changes.get('cross_attn', 't2i')}")


def test_ensemble_is_the_mean(split_and_vocab: dict[str, Any]) -> None:
    a, pa = reference(split_and_vocab, 4, "a.pth.tar", bi_gru=True)
    b, pb = reference(split_and_vocab, 5, "b.pth.tar", bi_gru=True, cross_attn="i2t", agg_func="Mean")
    adapter = ours(split_and_vocab, [str(pa), str(pb)])
    expected = (reference_scores(a, split_and_vocab, adapter) + reference_scores(b, split_and_vocab, adapter)) / 2
    np.testing.assert_allclose(our_scores(adapter, split_and_vocab["split"]), expected, atol=1e-5, rtol=1e-5)
    assert adapter.pair_score_kind == "mean of SCAN t2i LogSumExp and SCAN i2t Mean"


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ({"raw_feature_norm": "l1norm"}, r"opt: raw_feature_norm = 'l1norm' is not one of .* undefined l1norm_d"),
        ({"cross_attn": "both"}, r"opt: cross_attn = 'both' is not one of t2i, i2t"),
    ],
)
def test_options_the_reference_cannot_run_are_one_error(split_and_vocab: dict[str, Any], opt: dict[str, Any],
                                                         message: str) -> None:  # fmt: skip
    _, path = reference(split_and_vocab, 6, "bad.pth.tar")
    ckpt = torch.load(path, weights_only=False)
    ckpt["opt"] = argparse.Namespace(**{**vars(ckpt["opt"]), **opt})
    torch.save(ckpt, path)
    with pytest.raises(BenchError, match=message):
        ours(split_and_vocab, str(path))
