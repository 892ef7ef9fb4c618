"""transformers adapters and two-stage retrieval: BLIP (ITC embeddings and ITM pair scores against the model's own
forward), re-ranking (:mod:`bench.evaluation.rerank`) against a brute-force implementation that scores every candidate
pair
directly, and ``hf_clip`` (CLIP / SigLIP against ``get_image_features`` / ``get_text_features``).

Everything runs on tiny random models saved with ``save_pretrained`` and loaded through the adapters' ``build``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bench.adapters.protocol import AdapterBase
from bench.adapters.registry import create_adapter
from PIL import Image
from texts import CAPTIONS

import bench.evaluation.rerank as rerank_mod
from bench.config import EvalConfig, config_from_dict
from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, WeightsUnavailableError
from bench.evaluation.itr import evaluate
from bench.evaluation.rerank import pessimistic_order_key, rerank_direction, rerank_metrics
from bench.scoring.itr import recall_summary

pytestmark = pytest.mark.usefixtures("single_thread")

WORDS = "dog cat man woman horse bike car street grass window red blue green sits runs rides near under".split()
N_IMAGES, CAPS_PER_IMAGE = 6, 2  # plus one image without captions (no i2t query)
FUSIONS = ["itm", "itm+itc"]


@pytest.fixture(scope="module")
def blip_folder(tiny_blip_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BLIP with a sharper ITM head, so that different pairs score far apart (well-posed ranks)."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    folder = tmp_path_factory.mktemp("blip_sharp")
    model = BlipForImageTextRetrieval.from_pretrained(str(tiny_blip_folder))
    with torch.no_grad():
        model.itm_head.weight.mul_(200.0)
    model.save_pretrained(str(folder))
    BlipProcessor.from_pretrained(str(tiny_blip_folder)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def blip(blip_folder: Path) -> Any:
    """The adapter, through the registry and ``Blip.build(checkpoint=<folder>)``."""
    return create_adapter("blip", {"checkpoint": str(blip_folder)}).eval()


@pytest.fixture(scope="module")
def reference(blip_folder: Path) -> tuple[Any, Any]:
    """An independent ``BlipForImageTextRetrieval`` and ``BlipProcessor`` loaded from the same folder."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    return BlipForImageTextRetrieval.from_pretrained(str(blip_folder)).eval(), BlipProcessor.from_pretrained(
        str(blip_folder)
    )


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> RetrievalSplit:
    """Seven random images (the last without captions) and two captions of random words per image."""
    folder = tmp_path_factory.mktemp("rerank_split")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES + 1):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)).save(paths[-1])
    captions = [" ".join(["a", *rng.choice(WORDS, size=rng.integers(3, 8))]) for _ in range(N_IMAGES * CAPS_PER_IMAGE)]
    c2i = np.repeat(np.arange(N_IMAGES), CAPS_PER_IMAGE)
    return RetrievalSplit(dataset="tiny", split="test", image_paths=paths, image_ids=[p.stem for p in paths],
                          captions=captions, caption_to_image=c2i)  # fmt: skip


@pytest.fixture(scope="module")
def itc(blip: Any, split: RetrievalSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ITC embeddings of the split, as the harness computes them."""
    tf = blip.image_transform()
    with torch.no_grad():
        img = blip.encode_image(torch.stack([tf(split.load_image(i)) for i in range(split.n_images)]))
        txt = blip.encode_text(blip.tokenize(split.captions))
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


@pytest.fixture(scope="module")
def direct_itm(reference: tuple[Any, Any], split: RetrievalSplit) -> np.ndarray:
    """``[N_img, N_txt]``: BLIP's ITM score of every pair (caption starting with [ENC], the match logit), one
    ``forward(use_itm_head=True)`` call per pair."""
    model, processor = reference
    enc = processor.tokenizer.convert_tokens_to_ids("[ENC]")
    out = np.zeros((split.n_images, split.n_captions), dtype=np.float64)
    with torch.no_grad():
        for i in range(split.n_images):
            pixels = processor(images=split.load_image(i), return_tensors="pt")["pixel_values"]
            for j, caption in enumerate(split.captions):
                tok = processor(text=caption, truncation=True, max_length=35, return_tensors="pt")
                ids = tok["input_ids"].clone()
                ids[:, 0] = enc
                logits = model(input_ids=ids, pixel_values=pixels, attention_mask=tok["attention_mask"],
                               use_itm_head=True).itm_score  # fmt: skip
                out[i, j] = float(logits[0, 1])
    return out


def _brute_force(
    itc_scores: np.ndarray, itm: np.ndarray, positives: list[set[int]], k: int, fusion: str
) -> tuple[np.ndarray, list[list[int]]]:
    """Ranks and candidate lists of one direction, written out per query: stage one orders the gallery by cosine
    (negatives before positives on ties), the first k get (1, fused score), the rest (0, cosine); a query's rank is
    the number of negatives whose pair is >= its best positive's."""
    ranks, cands = [], []
    for q in range(itc_scores.shape[0]):
        s, pos = itc_scores[q], positives[q]
        order = sorted(range(s.shape[0]), key=lambda g: (-s[g], g in pos))
        cand = set(order[:k])
        fused = {g: itm[q, g] + (s[g] if fusion == "itm+itc" else 0.0) for g in cand}
        key = {g: (1, fused[g]) if g in cand else (0, s[g]) for g in range(s.shape[0])}
        best = max(key[p] for p in pos)
        ranks.append(sum(1 for g in range(s.shape[0]) if g not in pos and key[g] >= best))
        cands.append(order[:k])
    return np.array(ranks), cands


def _directions(
    split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor], direct_itm: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, list[set[int]]]]:
    """Per direction: (cosines [Nq, Ng] in float64 from the float32 products, ITM [Nq, Ng], positives per query)."""
    img, txt = itc
    sims = (img @ txt.T).double().numpy()
    c2i = split.caption_to_image
    queries = np.flatnonzero(np.bincount(c2i, minlength=split.n_images) > 0)
    i2t_pos = [set(np.flatnonzero(c2i == i).tolist()) for i in queries]
    t2i_pos = [{int(c2i[j])} for j in range(split.n_captions)]
    return {"i2t": (sims[queries], direct_itm[queries], i2t_pos), "t2i": (sims.T, direct_itm.T, t2i_pos)}


# ---------------------------------------------------------------------------------------------------------------
# The adapter


def test_blip_itc_equals_transformers(blip: Any, reference: tuple[Any, Any], rgb_images: list) -> None:
    model, processor = reference
    assert model is not blip.backbone
    pixels = processor(images=rgb_images, return_tensors="pt")["pixel_values"]
    tf = blip.image_transform()
    torch.testing.assert_close(torch.stack([tf(im) for im in rgb_images]), pixels, rtol=0, atol=0)
    tok = processor(text=CAPTIONS, padding=True, truncation=True, max_length=35, return_tensors="pt")
    ours = blip.tokenize(CAPTIONS)
    assert torch.equal(ours["input_ids"], tok["input_ids"]) and torch.equal(
        ours["attention_mask"], tok["attention_mask"]
    )
    with torch.no_grad():
        want = model(input_ids=tok["input_ids"], pixel_values=pixels, attention_mask=tok["attention_mask"],
                     use_itm_head=False).itm_score  # fmt: skip
        img, txt = blip.encode_image(pixels), blip.encode_text(ours)
    assert img.shape == (len(rgb_images), blip.embed_dim) and blip.embed_dim == model.config.image_text_hidden_size
    torch.testing.assert_close(F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T, want, rtol=0, atol=1e-6)
    assert want.std() > 0


def test_blip_pair_scores_feed_enc_and_score_the_match_logit(
    blip: Any, blip_folder: Path, reference: tuple[Any, Any], rgb_images: list
) -> None:
    # Issue #13, deviations 2 and 3: BLIP (blip_retrieval.py) and LAVIS set the caption's first token to [ENC] for
    # ITM and add the raw match logit to the ITC cosine; transformers' forward(use_itm_head=True) feeds [CLS].
    model, processor = reference
    enc = processor.tokenizer.convert_tokens_to_ids("[ENC]")
    assert enc not in (processor.tokenizer.cls_token_id, processor.tokenizer.unk_token_id)
    assert blip.itm_first_id == enc and "[ENC]" in blip.pair_score_kind and "match logit" in blip.pair_score_kind
    pixels = processor(images=rgb_images, return_tensors="pt")["pixel_values"]
    tok = processor(text=CAPTIONS, padding=True, truncation=True, max_length=35, return_tensors="pt")
    seen: list[torch.Tensor] = []
    hook = blip.backbone.text_encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"].clone()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            ours = blip.pair_scores(blip.pair_image_state(pixels), blip.tokenize(CAPTIONS))
    finally:
        hook.remove()
    assert len(seen) == 1 and (seen[0][:, 0] == enc).all()  # the ids the ITM head sees start with [ENC]
    assert torch.equal(seen[0][:, 1:], tok["input_ids"][:, 1:])  # and are the caption's own tokens after it
    with_enc = tok["input_ids"].clone()
    with_enc[:, 0] = enc
    with torch.no_grad():
        logits = model(input_ids=with_enc, pixel_values=pixels, attention_mask=tok["attention_mask"],
                       use_itm_head=True).itm_score  # fmt: skip
        cls_logits = model(input_ids=tok["input_ids"], pixel_values=pixels, attention_mask=tok["attention_mask"],
                           use_itm_head=True).itm_score  # fmt: skip
        # A different pairing (image 0 with every caption) scores row by row the same way.
        first = blip.pair_scores(blip.pair_image_state(pixels[:1]).expand(3, -1, -1), blip.tokenize(CAPTIONS))
        want_first = model(input_ids=with_enc, pixel_values=pixels[:1].expand(3, -1, -1, -1),
                           attention_mask=tok["attention_mask"], use_itm_head=True).itm_score  # fmt: skip
    torch.testing.assert_close(ours, logits[:, 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(first, want_first[:, 1], rtol=0, atol=1e-5)
    assert not torch.allclose(logits, cls_logits, atol=1e-3)  # [ENC] and [CLS] really score differently
    # transformers' own rule, on request: [CLS] and the log-odds of "match".
    hf_rule = create_adapter("blip", {"checkpoint": str(blip_folder), "itm_token": "cls",
                                      "itm_score": "logodds"}).eval()  # fmt: skip
    with torch.no_grad():
        theirs = hf_rule.pair_scores(hf_rule.pair_image_state(pixels), hf_rule.tokenize(CAPTIONS))
    torch.testing.assert_close(theirs, cls_logits[:, 1] - cls_logits[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.sigmoid(theirs), cls_logits.softmax(-1)[:, 1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="row-aligned"):
        blip.pair_scores(blip.pair_image_state(pixels[:2]), blip.tokenize(CAPTIONS))


def test_enc_token_id_from_the_tokenizer_or_blips_layout() -> None:
    from types import SimpleNamespace

    from bench.adapters.blip import enc_token_id

    class Tok:
        def __init__(self, vocab: dict[str, int]) -> None:
            self.vocab = vocab

        def get_vocab(self) -> dict[str, int]:
            return self.vocab

        def __len__(self) -> int:
            return len(self.vocab)

    bert = {f"w{i}": i for i in range(100)}
    assert enc_token_id(Tok({**bert, "[DEC]": 100, "[ENC]": 101}), SimpleNamespace(vocab_size=102)) == 101
    # transformers' BLIP checkpoints: BERT's tokenizer, a text model with two more rows and bos = [DEC] = 100.
    assert enc_token_id(Tok(bert), SimpleNamespace(vocab_size=102, bos_token_id=100)) == 101
    with pytest.raises(ConfigError, match='itm_token = "cls"'):
        enc_token_id(Tok(bert), SimpleNamespace(vocab_size=100, bos_token_id=1))


def test_blip_trains_the_itc_path_only(blip: Any) -> None:
    frozen = {n for n, p in blip.named_parameters() if not p.requires_grad}
    assert frozen and all(".crossattention." in n or n.startswith("backbone.itm_head.") for n in frozen), frozen
    assert any(n.startswith("backbone.itm_head.") for n in frozen)
    assert blip.trained_parts(False) == ["backbone"] and blip.trained_parts(True) == []


def test_blip_long_caption_is_truncated(blip: Any) -> None:
    tokens = blip.tokenize([" ".join(["a man rides a red bike"] * 30), CAPTIONS[0]])
    assert tokens["input_ids"].shape == (2, blip.max_length) == (2, 35)


def test_blip_offline_hub_name_raises_quickly() -> None:
    from bench.adapters.blip import Blip

    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            Blip.build(checkpoint="Salesforce/blip-itm-base-coco")
        except BaseException as e:  # noqa: B036 - reported to the test thread
            result["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        pytest.skip("Blip.build on a hub name with HF_HUB_OFFLINE=1 still running after 20 s (network access?)")
    err = result.get("error")
    assert isinstance(err, WeightsUnavailableError), result
    assert "Salesforce/blip-itm-base-coco" in str(err) and "network" in str(err) and "local folder" in str(err)
    assert time.monotonic() - t0 < 20


def test_blip_checkpoint_errors(tmp_path: Path, tiny_blip_folder: Path) -> None:
    from bench.adapters.blip import Blip
    from transformers import BlipConfig, BlipModel

    with pytest.raises(WeightsUnavailableError, match="not found"):
        Blip.build(checkpoint=str(tmp_path / "missing" / "blip"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        Blip.build(checkpoint=str(tmp_path / "empty"))
    # A BLIP that is not a retrieval model (no ITM head, no ITC projections) is refused, not scored at random.
    BlipModel(BlipConfig.from_pretrained(str(tiny_blip_folder))).save_pretrained(str(tmp_path / "base"))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (tmp_path / "base" / name).write_bytes((tiny_blip_folder / name).read_bytes())
    with pytest.raises(ConfigError, match="retrieval checkpoint"):
        Blip.build(checkpoint=str(tmp_path / "base"))
    with pytest.raises(ConfigError, match="max_length"):
        Blip.build(checkpoint=str(tiny_blip_folder), max_length=1000)


# ---------------------------------------------------------------------------------------------------------------
# Re-ranking


def test_pessimistic_order_key_sorts_like_score_then_negatives_first() -> None:
    rng = np.random.default_rng(0)
    pool = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-40, -1e-40, 3.4e38, -3.4e38, 0.25], dtype=np.float32)
    scores = torch.from_numpy(rng.choice(pool, size=(20, 40)))
    positive = torch.from_numpy(rng.random((20, 40)) < 0.3)
    key = pessimistic_order_key(scores, positive)
    for q in range(scores.shape[0]):
        s, p = scores[q].tolist(), positive[q].tolist()
        want = sorted(range(40), key=lambda g: (-s[g], p[g]))
        got = torch.sort(key[q], descending=True, stable=True).indices.tolist()
        assert [(s[g], p[g]) for g in got] == [(s[g], p[g]) for g in want]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_rerank_scores_and_ranks_equal_brute_force(
    fusion: str, blip: Any, split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor], direct_itm: np.ndarray
) -> None:
    k = 3
    inside = outside = 0
    for direction, (sims, itm, positives) in _directions(split, itc, direct_itm).items():
        got = rerank_direction(blip, split, *itc, direction, k_test=k, fusion=fusion, batch_size=4,
                               device=torch.device("cpu"))  # fmt: skip
        want_ranks, want_cands = _brute_force(sims, itm, positives, k, fusion)
        assert got.candidates.tolist() == want_cands, direction
        # Re-scored candidates carry the direct ITM score (plus the cosine under itm+itc).
        rows = np.arange(len(want_cands))[:, None]
        want_fused = itm[rows, want_cands] + (sims[rows, want_cands] if fusion == "itm+itc" else 0.0)
        np.testing.assert_allclose(got.pair.numpy(), itm[rows, want_cands], rtol=0, atol=2e-5)
        np.testing.assert_allclose(got.fused.numpy(), want_fused, rtol=0, atol=2e-5)
        np.testing.assert_array_equal(got.ranks, want_ranks, err_msg=direction)
        inside += int(got.positive.any(dim=1).sum())
        outside += int((~got.positive.any(dim=1)).sum())
        # Well-posed: no negative candidate within float noise of a query's best positive.
        best = np.where(got.positive.numpy(), got.fused.numpy(), -np.inf).max(axis=1, keepdims=True)
        gaps = np.abs(got.fused.numpy() - best)[~got.positive.numpy() & np.isfinite(best)]
        assert gaps.min() > 1e-4
    assert inside and outside, "the test should cover positives inside and outside the top k"


@pytest.mark.parametrize("fusion", FUSIONS)
def test_rerank_metrics_layout_and_cost(
    fusion: str, blip: Any, split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor], direct_itm: np.ndarray
) -> None:
    k = 3
    out = rerank_metrics(blip, split, *itc, k_test=k, fusion=fusion, batch_size=4, device=torch.device("cpu"))
    dirs = _directions(split, itc, direct_itm)
    for direction in ("i2t", "t2i"):
        assert out[direction] == recall_summary(_brute_force(*dirs[direction], k, fusion)[0])
    assert out["rsum"] == pytest.approx(sum(out[d][f"r{r}"] for d in ("i2t", "t2i") for r in (1, 5, 10)))
    cost = out["cost"]
    assert cost["k_test"] == k and cost["fusion"] == fusion and cost["pair_score"] == blip.pair_score_kind
    assert cost["pair_forwards_i2t"] == N_IMAGES * k and cost["pair_forwards_t2i"] == split.n_captions * k
    assert cost["pair_forwards"] == cost["pair_forwards_i2t"] + cost["pair_forwards_t2i"]
    assert cost["seconds"] >= 0


def test_rerank_k_larger_than_gallery_scores_every_pair(
    blip: Any, split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor], direct_itm: np.ndarray
) -> None:
    """With k_test beyond the gallery every pair is re-scored, so the ranks are those of the fused matrix itself."""
    out = rerank_metrics(blip, split, *itc, k_test=1000, fusion="itm", batch_size=5, device=torch.device("cpu"))
    assert out["cost"]["pair_forwards_i2t"] == N_IMAGES * split.n_captions
    assert out["cost"]["pair_forwards_t2i"] == split.n_captions * split.n_images
    assert out["cost"]["k_effective_i2t"] == split.n_captions and out["cost"]["k_effective_t2i"] == split.n_images
    for direction, (_, itm, positives) in _directions(split, itc, direct_itm).items():
        ranks = [sum(1 for g in range(itm.shape[1]) if g not in pos and itm[q, g] >= max(itm[q, p] for p in pos))
                 for q, pos in enumerate(positives)]  # fmt: skip
        assert out[direction] == recall_summary(np.array(ranks))


def test_rerank_encodes_each_image_once_per_group(
    blip: Any, split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[list[int]] = []
    states: list[int] = []
    pairs: list[int] = []
    real_batches, real_state, real_scores = rerank_mod.iter_image_batches, blip.pair_image_state, blip.pair_scores

    def batches(split: RetrievalSplit, transform: Any, batch_size: int, *args: Any, rows: Any = None, **kw: Any) -> Any:
        loaded.append(list(rows))
        return real_batches(split, transform, batch_size, *args, rows=rows, **kw)

    def state(images: torch.Tensor) -> torch.Tensor:
        states.append(images.shape[0])
        return real_state(images)

    def scores(image_state: torch.Tensor, tokens: Any) -> torch.Tensor:
        pairs.append(image_state.shape[0])
        return real_scores(image_state, tokens)

    monkeypatch.setattr(rerank_mod, "iter_image_batches", batches)
    monkeypatch.setattr(blip, "pair_image_state", state)
    monkeypatch.setattr(blip, "pair_scores", scores)
    batch = 2
    got = {
        d: rerank_direction(blip, split, *itc, d, k_test=4, fusion="itm", batch_size=batch, device=torch.device("cpu"))
        for d in ("i2t", "t2i")
    }
    n_i2t = N_IMAGES  # one group per two query images, each image once
    i2t_loads, t2i_loads = loaded[: (n_i2t + batch - 1) // batch], loaded[(n_i2t + batch - 1) // batch :]
    assert sorted(sum(i2t_loads, [])) == list(range(N_IMAGES))
    t2i_images = sorted(set(got["t2i"].candidates.reshape(-1).tolist()))
    assert sorted(sum(t2i_loads, [])) == t2i_images, "t2i: each candidate image encoded exactly once"
    assert max(len(rows) for rows in loaded) <= batch and max(states) <= batch and max(pairs) <= batch
    assert sum(states) == N_IMAGES + len(t2i_images)
    assert sum(pairs) == N_IMAGES * 4 + split.n_captions * 4


class _Constant(torch.nn.Module):
    """A fake adapter whose pair scorer ties every pair, and whose images all embed alike: only ties decide."""

    name = "constant"
    joint_space = True
    pair_score_kind = "constant"

    def image_transform(self) -> Any:
        return lambda im: torch.zeros(1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"n": torch.zeros(len(texts))}

    def pair_image_state(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def pair_scores(self, image_state: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros(image_state.shape[0])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_rerank_ties_are_pessimistic(fusion: str, split: RetrievalSplit) -> None:
    img, txt = torch.ones(split.n_images, 4), torch.ones(split.n_captions, 4)
    k = 3
    got = rerank_direction(_Constant(), split, img, txt, "t2i", k_test=k, fusion=fusion, batch_size=8,
                           device=torch.device("cpu"))  # fmt: skip
    # Stage one ties everything: negatives fill the candidates, so each positive keeps its stage-one rank.
    assert not got.positive.any()
    np.testing.assert_array_equal(got.ranks, np.full(split.n_captions, split.n_images - 1))
    got = rerank_direction(_Constant(), split, img, txt, "t2i", k_test=split.n_images, fusion=fusion, batch_size=8,
                           device=torch.device("cpu"))  # fmt: skip
    # All candidates, all tied after re-scoring: every negative counts against the positive.
    assert got.positive.any(dim=1).all()
    np.testing.assert_array_equal(got.ranks, np.full(split.n_captions, split.n_images - 1))


# ---------------------------------------------------------------------------------------------------------------
# The evaluate hook


def test_evaluate_adds_rerank_block(blip: Any, split: RetrievalSplit, itc: tuple[torch.Tensor, torch.Tensor]) -> None:
    cfg = config_from_dict({"eval": {"rerank_k": 3, "rerank_fusion": "itm", "batch_size": 4}}).eval
    dev = torch.device("cpu")
    out = evaluate(blip, split, cfg, device=dev, progress=False)
    plain = evaluate(blip, split, EvalConfig(batch_size=4), device=dev, progress=False)
    assert "rerank" not in plain
    assert {k: v for k, v in out.items() if k != "rerank"} == plain, "re-ranking changes the main (ITC) metrics"
    want = rerank_metrics(blip, split, *itc, k_test=3, fusion="itm", batch_size=4, device=dev)
    assert {k: out["rerank"][k] for k in ("i2t", "t2i", "rsum")} == {k: want[k] for k in ("i2t", "t2i", "rsum")}
    assert out["rerank"]["cost"]["fusion"] == "itm" and out["rerank"]["cost"]["k_test"] == 3
    skipped = evaluate(blip, split, cfg, device=dev, progress=False, rerank=False)
    assert "rerank" not in skipped


def test_rerank_depth_auto_follows_the_dataset_protocol(blip: Any, split: RetrievalSplit) -> None:
    import dataclasses

    dev = torch.device("cpu")
    cfg = config_from_dict({"eval": {"rerank_k": "auto", "batch_size": 4}}).eval
    coco_like = dataclasses.replace(split, k_test=2)  # as the coco (256) and flickr30k (128) loaders declare
    cost = evaluate(blip, coco_like, cfg, device=dev, progress=False)["rerank"]["cost"]
    assert cost["k_test"] == 2 and cost["k_effective_t2i"] == 2
    # BLIP's rule, named by what it adds.
    assert cost["rule"] == f"itm match logit, first token [ENC] (id {blip.itm_first_id}) + itc cosine"
    cost = evaluate(blip, split, cfg, device=dev, progress=False)["rerank"]["cost"]
    assert cost["k_test"] == 128 and cost["k_effective_t2i"] == split.n_images  # no protocol: 128, capped
    with pytest.raises(ConfigError, match=r'rerank_k: a number of candidates, "auto" or 0'):
        config_from_dict({"eval": {"rerank_k": "lavis"}})


def test_coco_and_flickr_loaders_declare_lavis_depths(tmp_path: Path) -> None:
    from test_data import _karpathy, _write_json

    from bench.data import load_split

    _write_json(tmp_path / "dataset_coco.json", _karpathy(tmp_path, coco=True))
    coco = load_split("c", {"format": "coco", "root": str(tmp_path), "image_dir": "images"}, "test", work_dir=tmp_path)
    assert coco.k_test == 256
    _write_json(tmp_path / "dataset_flickr30k.json", _karpathy(tmp_path, coco=False))
    spec = {"format": "flickr30k", "root": str(tmp_path), "image_dir": "images", "file": "dataset_flickr30k.json"}
    assert load_split("f", spec, "test", work_dir=tmp_path).k_test == 128
    generic = {"format": "karpathy", "root": str(tmp_path), "image_dir": "images", "file": "dataset_coco.json"}
    assert load_split("k", generic, "test", work_dir=tmp_path).k_test is None


class _NoPairs(AdapterBase):
    """An adapter without a pair scorer."""

    name = "no_pairs"


def test_rerank_config_errors(blip: Any, split: RetrievalSplit) -> None:
    dev = torch.device("cpu")
    with pytest.raises(ConfigError, match="'no_pairs'.*no pair scorer"):
        evaluate(_NoPairs(), split, EvalConfig(rerank_k=2), device=dev, progress=False)
    with pytest.raises(ConfigError, match="rerank_fusion"):
        evaluate(blip, split, EvalConfig(rerank_k=2, rerank_fusion="itc+itm"), device=dev, progress=False)
    with pytest.raises(ConfigError, match="rerank_k"):
        evaluate(blip, split, EvalConfig(rerank_k=-1), device=dev, progress=False)
    with pytest.raises(ConfigError, match="rerank_k"):
        config_from_dict({"eval": {"rerank_k": "3"}})


# ---------------------------------------------------------------------------------------------------------------
# hf_clip: transformers CLIP and SigLIP


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_hf_clip_equals_get_features(
    family: str, tiny_hf_clip_folder: Path, tiny_siglip_folder: Path, rgb_images: list
) -> None:
    from transformers import AutoModel, AutoProcessor

    folder = tiny_hf_clip_folder if family == "clip" else tiny_siglip_folder
    adapter = create_adapter("hf_clip", {"checkpoint": str(folder)}).eval()
    model, processor = AutoModel.from_pretrained(str(folder)).eval(), AutoProcessor.from_pretrained(str(folder))
    want_class = {"clip": "CLIPModel", "siglip": "SiglipModel"}[family]
    assert type(model).__name__ == want_class == type(adapter.backbone).__name__
    pixels = processor(images=rgb_images, return_tensors="pt")["pixel_values"]
    tf = adapter.image_transform()
    torch.testing.assert_close(torch.stack([tf(im) for im in rgb_images]), pixels, rtol=0, atol=0)
    # SigLIP is used with padding="max_length" (it pools the last position); CLIP pads to the longest caption.
    padding = "max_length" if family == "siglip" else "longest"
    limit = model.config.text_config.max_position_embeddings
    tok = processor.tokenizer(CAPTIONS, padding=padding, truncation=True, max_length=limit, return_tensors="pt")
    tok = {k: tok[k] for k in ("input_ids", "attention_mask")}
    ours = adapter.tokenize(CAPTIONS)
    assert ours.keys() == tok.keys() and all(torch.equal(ours[k], tok[k]) for k in tok)
    with torch.no_grad():
        want_img = model.get_image_features(pixel_values=pixels).pooler_output
        want_txt = model.get_text_features(**tok).pooler_output
        got_img, got_txt = adapter.encode_image(pixels), adapter.encode_text(ours)
    torch.testing.assert_close(got_img, want_img, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_txt, want_txt, rtol=0, atol=1e-6)
    assert got_img.shape[1] == got_txt.shape[1] == adapter.embed_dim and adapter.joint_space
    assert want_img.std() > 0 and want_txt.std() > 0
    assert adapter.init_temperature == pytest.approx(float(1 / model.logit_scale.detach().exp()))


def test_hf_clip_checkpoint_errors(tiny_blip_folder: Path, tiny_hf_clip_folder: Path) -> None:
    from bench.adapters.hf_clip import HFClip

    with pytest.raises(WeightsUnavailableError, match="openai/clip-vit-base-patch32.*network"):
        HFClip.build(checkpoint="openai/clip-vit-base-patch32")
    with pytest.raises(ConfigError, match="model type 'blip'"):
        HFClip.build(checkpoint=str(tiny_blip_folder))
    with pytest.raises(ConfigError, match="max_length"):
        HFClip.build(checkpoint=str(tiny_hf_clip_folder), max_length=1000)


def test_blip_itm_scores_a_choice_set_pair_by_pair(tmp_path: Path, blip_folder: Path,
                                                   reference: tuple[Any, Any]) -> None:  # fmt: skip
    """``scorer = "pair"`` on a Winoground-layout set: every pair's score in the per-item file is BLIP's match logit
    from transformers' own ``forward(use_itm_head=True)``, and the record says the ITM head scored it."""
    import json

    from tiny_grid import run_main

    from bench.grid.records import read_record

    rng = np.random.default_rng(1)
    (tmp_path / "wg" / "images").mkdir(parents=True)
    lines = []
    for i in range(4):
        for k in (0, 1):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "wg" / "images" / f"ex_{i}_img_{k}.png"
            )
        caps = [" ".join(["a", *rng.choice(WORDS, size=4)]) for _ in range(2)]
        lines.append(json.dumps({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1",
                                 "caption_0": caps[0], "caption_1": caps[1]}))  # fmt: skip
    (tmp_path / "wg" / "examples.jsonl").write_text("\n".join(lines))
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[models.blip]
adapter = "blip"
checkpoint = {json.dumps(str(blip_folder))}

[datasets.wg]
format = "winoground"
root = {json.dumps(str(tmp_path / "wg"))}
scorer = "pair"
""")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "blip", "--datasets", "wg", "--methods",
                           "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    folder = tmp_path / "results/runs/blip/wg/test"
    rec = read_record(folder / "zeroshot-seed0.json")
    assert rec["scored_by"].startswith("pair scorer: itm") and rec["embedding"] is None
    model, processor = reference
    enc = processor.tokenizer.convert_tokens_to_ids("[ENC]")
    want = []
    with torch.no_grad():
        for line in lines:
            e = json.loads(line)
            for k in (0, 1):  # image-major, as the per-item file stores an item's pairs
                image = Image.open(tmp_path / "wg" / "images" / f"{e[f'image_{k}']}.png").convert("RGB")
                pixels = processor(images=image, return_tensors="pt")["pixel_values"]
                for c in (0, 1):
                    tok = processor(text=e[f"caption_{c}"], truncation=True, max_length=35, return_tensors="pt")
                    ids = tok["input_ids"].clone()
                    ids[:, 0] = enc
                    want.append(float(model(input_ids=ids, pixel_values=pixels, attention_mask=tok["attention_mask"],
                                            use_itm_head=True).itm_score[0, 1]))  # fmt: skip
    with np.load(folder / rec["per_query"]["file"]) as z:
        scores, text = z["scores"], z["outcome_text"]
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-4)
    s = scores.reshape(-1, 2, 2)
    assert np.array_equal(text, ((s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])).astype(float))
    # an adapter without a pair scorer is refused in one line before anything is scored
    config.write_text(config.read_text() + '\n[models.towers]\nadapter = "towers"\n')
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "--datasets", "wg", "--methods",
                           "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert "has no pair scorer" in err, err
