"""SGR, SAF and SGRAF over region features: the authors' checkpoint layout loads, and every pair's score equals the
reference's own evaluation (Paranioar/SGRAF ``evaluation.py`` + ``model.py``, ported below as written: a Python loop
over captions, each against a shard of images) to 1e-5; its i2t / t2i recalls equal ours; the grid runs the model
on a precomp split end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench.adapters.registry import create_adapter
from reference_sgraf import (
    RefSGRAF,
    ref_contrastive_loss,
    ref_encode_data,
    ref_recalls,
    ref_shard_attn_scores,
    save_reference,
)
from test_precomp import write_precomp
from tiny_grid import run_main

from bench.config import EvalConfig
from bench.data import load_split
from bench.encode.features import encode_split
from bench.errors import BenchError
from bench.evaluation.itr import evaluate
from bench.evaluation.pairs import plan_blocks, score_all_pairs, word_counts
from bench.grid.records import read_record

pytest.importorskip("nltk")

WORDS = "a an the dog cat man woman red blue green on in sits runs near small big".split()
ARCH = {"img_dim": 24, "word_dim": 12, "embed_size": 16, "sim_dim": 8, "num_layers": 1, "bi_gru": True,
        "no_imgnorm": False, "no_txtnorm": False, "sgr_step": 3}  # fmt: skip
N_IMG, REGIONS = 7, 36


# --- Fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def region_split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A precomp test split (7 images x 36 regions x 24 dims, 5 captions each of 1-9 words) and a vocabulary."""
    root = tmp_path_factory.mktemp("sgraf")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(N_IMG, REGIONS, ARCH["img_dim"])).astype(np.float32)
    np.save(root / "test_ims.npy", feats)
    caps = [" ".join(rng.choice(WORDS + ["zebra"], rng.integers(1, 10))) for _ in range(5 * N_IMG)]
    caps[3] = "A man's dog, near the red car."  # punctuation, an apostrophe, an unknown word
    (root / "test_caps.txt").write_text("\n".join(caps) + "\n")
    vocab = {"word2idx": {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", *WORDS, ",", "."])}}
    (root / "vocab.json").write_text(json.dumps(vocab))
    split = load_split("p", {"format": "precomp", "root": str(root)}, "test", work_dir=root)
    return {"root": root, "feats": feats, "caps": caps, "vocab": vocab["word2idx"], "split": split}


def reference_model(region_split: dict[str, Any], module_name: str, seed: int, name: str) -> tuple[RefSGRAF, Path]:
    """A reference model at random (trained-looking statistics), saved in the authors' layout."""
    ref = RefSGRAF(ARCH, len(region_split["vocab"]), module_name, seed)
    path = region_split["root"] / name
    opt = {**ARCH, "module_name": module_name, "vocab_size": len(region_split["vocab"]), "margin": 0.2,
           "data_name": "f30k_precomp"}  # fmt: skip
    save_reference(ref, path, opt)
    return ref, path


def ours(region_split: dict[str, Any], checkpoint: str | list[str]) -> Any:
    vocab = str(region_split["root"] / "vocab.json")
    return create_adapter("sgraf", {"checkpoint": checkpoint, "vocab": vocab}).eval()


def our_scores(adapter: Any, split: Any, memory_mb: float = 0.05) -> torch.Tensor:
    img, txt = encode_split(adapter, split, device=torch.device("cpu"), features=adapter.split_features(split),
                            progress=False)  # fmt: skip
    return score_all_pairs(adapter, img, txt, memory_mb=memory_mb, device=torch.device("cpu"))


def reference_scores(ref: RefSGRAF, region_split: dict[str, Any]) -> np.ndarray:
    tok = create_adapter("sgraf", {"vocab": str(region_split["root"] / "vocab.json")}).vocab
    captions = [tok.encode(c) for c in region_split["caps"]]
    img_embs, cap_embs, cap_lens = ref_encode_data(ref, region_split["feats"], captions)
    img_embs = np.array([img_embs[i] for i in range(0, len(img_embs), 5)])
    return ref_shard_attn_scores(ref.sim_enc, img_embs, cap_embs, cap_lens, shard_size=3)


# --- Tests ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_pair_scores_equal_the_reference_loop(region_split: dict[str, Any], module_name: str) -> None:
    ref, path = reference_model(region_split, module_name, seed=1, name=f"{module_name}.pth.tar")
    expected = reference_scores(ref, region_split)
    adapter = ours(region_split, str(path))
    got = our_scores(adapter, region_split["split"])
    assert got.shape == (N_IMG, 5 * N_IMG)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.01  # the scores differ between pairs, so equality says something
    # Recalls: the reference's argsort loops on its matrix against the harness's ranking of ours.
    m = evaluate(adapter, region_split["split"], EvalConfig(memory_mb=0.05), device=torch.device("cpu"),
                 progress=False)  # fmt: skip
    r_i2t, r_t2i = ref_recalls(expected)
    assert [m["i2t"][f"r{k}"] for k in (1, 5, 10)] == pytest.approx(r_i2t)
    assert [m["t2i"][f"r{k}"] for k in (1, 5, 10)] == pytest.approx(r_t2i)
    assert m["t2t"] is None and m["i2i"] is None and m["pairs"]["pairs"] == N_IMG * 5 * N_IMG


def test_sgraf_is_the_mean_of_sgr_and_saf(region_split: dict[str, Any]) -> None:
    sgr, p1 = reference_model(region_split, "SGR", seed=2, name="a.pth.tar")
    saf, p2 = reference_model(region_split, "SAF", seed=3, name="b.pth.tar")
    expected = (reference_scores(sgr, region_split) + reference_scores(saf, region_split)) / 2
    adapter = ours(region_split, [str(p1), str(p2)])
    assert adapter.pair_score_kind == "SGRAF: mean of SGR and SAF"
    np.testing.assert_allclose(our_scores(adapter, region_split["split"]).numpy(), expected, atol=1e-5, rtol=0)


def test_blocks_follow_the_budget_and_do_not_change_scores(region_split: dict[str, Any]) -> None:
    _, path = reference_model(region_split, "SGR", seed=4, name="c.pth.tar")
    adapter = ours(region_split, str(path))
    split = region_split["split"]
    img, txt = encode_split(adapter, split, device=torch.device("cpu"), features=adapter.split_features(split),
                            progress=False)  # fmt: skip
    lengths = word_counts(txt)
    assert lengths.tolist() == [len(adapter.vocab.encode(c)) for c in region_split["caps"]]
    small, large = (plan_blocks(lengths, N_IMG, REGIONS, adapter, mb) for mb in (0.02, 64.0))
    assert len(small) > len(large) == 1
    for blocks in (small, large):
        assert sorted(np.concatenate([b.captions for b in blocks]).tolist()) == list(range(5 * N_IMG))
        assert all(lengths[b.captions].max() == b.words for b in blocks)
    for b in small:  # each call's working set within the budget (one pair at least)
        assert b.images * len(b.captions) * adapter.pair_floats(REGIONS, b.words) <= 0.02 * 2**20 / 4 or (
            b.images == 1 and len(b.captions) == 1)
    a, b = (score_all_pairs(adapter, img, txt, memory_mb=mb, device=torch.device("cpu")) for mb in (0.02, 64.0))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, rtol=0)


def test_module_prefix_and_tokenizer(region_split: dict[str, Any]) -> None:
    ref, path = reference_model(region_split, "SAF", seed=5, name="d.pth.tar")
    ckpt = torch.load(path, weights_only=False)
    ckpt["model"] = [{f"module.{k}": v for k, v in sd.items()} for sd in ckpt["model"]]
    torch.save(ckpt, region_split["root"] / "dp.pth.tar")
    a, b = ours(region_split, str(path)), ours(region_split, str(region_split["root"] / "dp.pth.tar"))
    torch.testing.assert_close(our_scores(a, region_split["split"]), our_scores(b, region_split["split"]))
    import nltk

    v = region_split["vocab"]
    want = [v["<start>"]] + [v.get(w, v["<unk>"]) for w in nltk.word_tokenize("a man's dog, near the red car.",
                                                                             preserve_line=True)] + [v["<end>"]]
    assert a.vocab.encode("A man's dog, near the red car.") == want and v["<unk>"] in want


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("vocab", r"vocab_small\.json: 3 words, but .*e\.pth\.tar was trained with \d+ \(opt\.vocab_size \d+\)"),
        ("layout", r"e\.pth\.tar: not a Paranioar/SGRAF checkpoint: expected \{'model': \[img_enc, txt_enc, sim_enc"),
        ("option", r"e\.pth\.tar: opt\.sim_dim = 8, but the model options set sim_dim = 16"),
        ("pickle", r"e\.pth\.tar"),
        ("missing", r"weights unavailable: SGRAF checkpoint file .*nothere\.pth\.tar not found"),
    ],
)
def test_bad_checkpoints_are_one_clear_error(region_split: dict[str, Any], change: str, message: str) -> None:
    _, path = reference_model(region_split, "SGR", seed=6, name="e.pth.tar")
    root = region_split["root"]
    opts: dict[str, Any] = {"checkpoint": str(path), "vocab": str(root / "vocab.json")}
    if change == "vocab":
        (root / "vocab_small.json").write_text(json.dumps({"word2idx": {"<start>": 0, "<end>": 1, "<unk>": 2}}))
        opts["vocab"] = str(root / "vocab_small.json")
    elif change == "layout":
        torch.save({"model": [{}, {}], "opt": {}}, path)
    elif change == "option":
        opts["sim_dim"] = 16
    elif change == "pickle":
        ckpt = torch.load(path, weights_only=False)
        ckpt["extra"] = argparse.ArgumentParser  # a class outside the allow-list
        torch.save(ckpt, path)
    else:
        opts["checkpoint"] = str(root / "nothere.pth.tar")
    with pytest.raises(BenchError, match=message):
        create_adapter("sgraf", opts)


def test_grid_runs_sgraf_on_a_precomp_split(tmp_path: Path) -> None:
    feats = write_precomp(tmp_path / "precomp", "test", ids=True)
    write_precomp(tmp_path / "precomp", "train", ids=True)
    (tmp_path / "precomp" / "vocab.json").write_text(json.dumps(
        {"word2idx": {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", "image", "caption"])}}))
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[models.saf]
adapter = "sgraf"
vocab = {json.dumps(str(tmp_path / "precomp" / "vocab.json"))}
module_name = "SAF"
regions = {feats.shape[1]}
img_dim = {feats.shape[2]}
embed_size = 16
word_dim = 8
sim_dim = 8

[datasets.p]
format = "precomp"
root = {json.dumps(str(tmp_path / "precomp"))}
""")
    argv = ["run", "--config", str(config), "--models", "saf", "--datasets", "p", "-q", "--no-table"]
    rc, out, err = run_main([*argv, "--methods", "zeroshot"])
    assert rc == 0, err
    rec = read_record(tmp_path / "results/runs/saf/p/test/zeroshot-seed0.json")
    assert rec["status"] == "ok" and rec["metrics"]["pairs"]["pairs"] == 4 * 20
    assert rec["metrics"]["pairs"]["pair_score"] == "SAF" and rec["metrics"]["t2t"] is None
    assert 0 <= rec["metrics"]["i2t"]["r1"] <= 100 and rec["metrics"]["rsum"] is not None
    rc, out, err = run_main([*argv, "--methods", "zeroshot", "--shards", "2", "--launcher", "local", "--force"])
    assert rc == 2 and err.strip().splitlines()[-1].endswith("scores pairs by cross-attention, which is scored in one "
                                                             "process; run without --shards"), err  # fmt: skip
    # Training: the contrastive term on the pair scores, validated on "dev" (the reference's name for val).
    (tmp_path / "precomp" / "dev_ims.npy").write_bytes((tmp_path / "precomp" / "test_ims.npy").read_bytes())
    (tmp_path / "precomp" / "dev_caps.txt").write_text((tmp_path / "precomp" / "test_caps.txt").read_text())
    rc, out, err = run_main([*argv, "--methods", "contrastive", "--set", "train.epochs=1", "--set",
                             "train.batch_size=8"])  # fmt: skip
    assert rc == 0, err
    rec = read_record(tmp_path / "results/runs/saf/p/test/contrastive-seed0.json")
    assert rec["status"] == "ok" and rec["selected_on"] == "val" and rec["method_settings"]["student_scores"] == (
        "pair scores") and rec["method_settings"]["cross_heads"] is False  # fmt: skip
    # Export in the authors' layout; the sgraf adapter loads it back and scores the test split as the record says.
    rc, out, err = run_main(["export", "saf:contrastive:0", "--dataset", "p", "--out", str(tmp_path / "exported"),
                             "--config", str(config)])  # fmt: skip
    assert rc == 0, err
    ckpt = tmp_path / "exported" / "model_best.pth.tar"
    loaded = torch.load(ckpt, weights_only=False)
    assert [sorted(p)[0] for p in loaded["model"]] == ["fc.bias", "cap_rnn.bias_hh_l0", "SAF_module.attn_sim_w.bias"]
    assert loaded["opt"].module_name == "SAF" and loaded["opt"].embed_size == 16
    adapter = create_adapter("sgraf", {"checkpoint": str(ckpt), "vocab": str(tmp_path / "precomp" / "vocab.json")})
    split = load_split("p", {"format": "precomp", "root": str(tmp_path / "precomp")}, "test", work_dir=tmp_path)
    m = evaluate(adapter.eval(), split, EvalConfig(), device=torch.device("cpu"), progress=False)
    assert m["rsum"] == pytest.approx(rec["metrics"]["rsum"])


def test_matrix_ranks_equal_the_embedding_scan() -> None:
    """Ranks and top-k lists of a score matrix equal the two-way embedding scan's when the matrix is the embeddings'
    dot products (small integers: exact, with many ties, captionless images and images with many captions)."""
    from bench.scoring.itr import itr_queries
    from bench.scoring.matrix import matrix_queries

    rng = np.random.default_rng(0)
    for _ in range(25):
        n_img = int(rng.integers(1, 30))
        c2i = rng.integers(0, n_img, int(rng.integers(1, 80)))
        img = torch.tensor(rng.integers(-2, 3, (n_img, 4)), dtype=torch.float32)
        txt = torch.tensor(rng.integers(-2, 3, (len(c2i), 4)), dtype=torch.float32)
        want = itr_queries(img, txt, c2i, normalize=False, topk=7)
        got = matrix_queries(img @ txt.T, c2i, topk=7)
        for d in ("i2t", "t2i"):
            a, b = want[d], got[d]
            assert a is not None and b is not None and a.lists is not None and b.lists is not None
            for field in ("queries", "ranks", "n_positives", "cluster"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_array_equal(a.lists.index, b.lists.index)
            np.testing.assert_array_equal(a.lists.positive, b.lists.positive)
            assert a.gallery_size == b.gallery_size


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_training_step_gradients_equal_the_reference(region_split: dict[str, Any], module_name: str,
                                                     mode: str) -> None:  # fmt: skip
    """The path training runs: a batch's score matrix with autograd (no in-place scoring steps), the VSE++ hinge loss
    of SGRAF's ContrastiveLoss, every parameter's gradient and the batch norms' running statistics, against the
    reference's per-caption loop. ``train``: batch norm on batch statistics (SAF's per caption, as the reference
    calls it once per caption), dropout set to 0 in both so the step is deterministic; ``eval``: running statistics."""
    from bench.methods.losses import TripletLoss

    ref, path = reference_model(region_split, module_name, seed=7, name=f"g{module_name}.pth.tar")
    adapter = ours(region_split, str(path))
    for model in (ref.img_enc, ref.txt_enc, ref.sim_enc, adapter):
        model.train(mode == "train")
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    caps = [0, 5, 10, 15, 20, 25]  # one caption of each of six images, longest first (pack_padded_sequence's order)
    tok = [adapter.vocab.encode(region_split["caps"][c]) for c in caps]
    order = sorted(range(len(caps)), key=lambda i: -len(tok[i]))
    caps, tok = [caps[i] for i in order], [tok[i] for i in order]
    feats = torch.from_numpy(region_split["feats"][[c // 5 for c in caps]])
    lengths = [len(t) for t in tok]
    ids = torch.zeros(len(tok), max(lengths), dtype=torch.long)
    for i, t in enumerate(tok):
        ids[i, : len(t)] = torch.tensor(t)
    ref_loss = ref_contrastive_loss(ref.sim_enc(ref.img_enc(feats), ref.txt_enc(ids, lengths), lengths))
    ref_loss.backward()
    img = adapter.embed_image({"regions": feats})
    txt = adapter.embed_text({"ids": ids, "lengths": torch.tensor(lengths)})
    loss = TripletLoss(0.2, max_violation=True).from_scores(adapter.score_matrix(img, txt),
                                                            torch.arange(len(caps)))["triplet_loss"]  # fmt: skip
    loss.backward()
    assert float(loss) == pytest.approx(float(ref_loss), abs=1e-5) and float(loss) > 0
    net = adapter.nets[0]
    theirs = {f"{part}.{n}": p for part in ("img_enc", "txt_enc", "sim_enc")
              for n, p in getattr(ref, part).named_parameters()}  # fmt: skip
    mine = dict(net.named_parameters())
    assert set(mine) == set(theirs)
    reached = 0
    for name, p in mine.items():
        q = theirs[name]
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
        reached += int(bool(q.grad.abs().sum() > 0))
    assert reached >= len(mine) - 4  # the loss reaches (almost) every parameter, so the comparison covers them
    theirs_buf = {f"{part}.{n}": b for part in ("img_enc", "txt_enc", "sim_enc")
                  for n, b in getattr(ref, part).named_buffers()}  # fmt: skip
    for name, b in net.named_buffers():  # running statistics moved alike (train) or untouched (eval)
        torch.testing.assert_close(b.float(), theirs_buf[name].float(), atol=1e-6, rtol=1e-5, msg=name)


def test_what_does_not_apply_to_pair_scoring_is_refused_before_encoding(region_split: dict[str, Any]) -> None:
    adapter = create_adapter("sgraf", {"vocab": str(region_split["root"] / "vocab.json"), **ARCH}).eval()
    split = region_split["split"]
    adapter.embed_text = None  # encoding anything would fail with a TypeError, not the one line
    with pytest.raises(BenchError, match="scores every pair already; set \\[eval\\] rerank_k = 0"):
        evaluate(adapter, split, EvalConfig(rerank_k=4), device=torch.device("cpu"), progress=False)
    with pytest.raises(BenchError, match='long_text = "sentences" needs caption embeddings'):
        evaluate(adapter, split, EvalConfig(), device=torch.device("cpu"), progress=False,
                 sentences=(split, np.arange(split.n_captions)))  # fmt: skip
