"""Two-stage retrieval: rank by ITC cosine, then re-score each query's top ``k_test`` candidates with a pair scorer.

Any adapter that declares pair scoring can be re-ranked (BLIP's ITM head, say):

* ``pair_image_state(images [B, 3, H, W]) -> Tensor [B, ...]``: per-image state the scorer reads (vision tokens);
* ``pair_scores(image_state [B, ...], tokens) -> Tensor [B]``: the score of row-aligned (image, caption) pairs.

The harness owns the rest, as LAVIS's ``compute_sim_matrix`` does for BLIP: stage one ranks every gallery item by the
cosine of the L2-normalised embeddings; for i2t each image's top ``k_test`` captions, for t2i each caption's top
``k_test`` images, are re-scored (``[eval] rerank_k = "auto"``: the dataset protocol's depth, LAVIS's 256 for COCO
and 128 for Flickr30K). Fusion rule ``itm`` ranks candidates by the pair score alone, ``itm+itc`` by the pair
score plus the cosine (LAVIS#645: the two give different numbers, so the rule is recorded). Candidates always rank
above every item outside the top ``k_test``, which keep their stage-one order; a query whose positives all fall
outside keeps its stage-one rank.

Ties follow :data:`bench.scoring.itr.TIE_RULE` in both stages: among equal cosines the stage-one order puts negatives
before positives (so a tie never pulls a positive into the candidates), and a query's rank counts every negative
candidate whose fused score is >= its best positive's.

Memory stays bounded: candidate lists are ``[queries, k_test]``; pairs are grouped by image, and the image states of
at most ``batch_size`` images are held at a time, each image's computed once per direction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.adapters.protocol import Adapter, PairScorer
from bench.data.base import RetrievalSplit
from bench.encode.features import iter_image_batches, to_device
from bench.errors import ConfigError
from bench.scoring.itr import pessimistic_order_key, ranks_and_topk, recall_summary

__all__ = [
    "FUSIONS",
    "Reranked",
    "check_rerank",
    "pessimistic_order_key",
    "rerank_direction",
    "rerank_metrics",
    "resolve_k_test",
    "score_pairs",
]
# pessimistic_order_key lives in bench.scoring.itr (the scorer orders its top-k lists by it); re-exported here.

log = logging.getLogger(__name__)

FUSIONS = ("itm", "itm+itc")


def resolve_k_test(rerank_k: int | str, split: RetrievalSplit) -> int:
    """``[eval] rerank_k`` as a depth: a number as given, or ``"auto"``: the split's protocol depth (LAVIS: 256 for
    COCO, 128 for Flickr30K), else 128."""
    if rerank_k == "auto":
        from bench.data.presets import DEFAULT_K_TEST

        if split.k_test is None:
            log.info("re-ranking %s/%s: no protocol depth; k_test = %d", split.dataset, split.split, DEFAULT_K_TEST)
        return int(split.k_test or DEFAULT_K_TEST)
    return rerank_k  # type: ignore[return-value]  # checked by check_rerank


def check_rerank(adapter: Adapter, k_test: int, fusion: str) -> None:
    """Raise :class:`ConfigError` unless ``adapter`` can be re-ranked with ``k_test`` and ``fusion``."""
    name = adapter.name or type(adapter).__name__
    if not isinstance(k_test, int) or isinstance(k_test, bool) or k_test < 1:
        raise ConfigError(f'[eval] rerank_k must be a positive integer or "auto" to re-rank (0 = off), got {k_test!r}')
    if fusion not in FUSIONS:
        raise ConfigError(f"[eval] rerank_fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if not isinstance(adapter, PairScorer):
        raise ConfigError(
            f"adapter {name!r} has no pair scorer (pair_image_state / pair_scores), so it cannot re-rank; "
            "set [eval] rerank_k = 0"
        )
    if not adapter.joint_space:
        raise ConfigError(f"adapter {name!r} has no joint image-text space, so there is no ITC stage to re-rank")


def _image_groups(pair_img: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs grouped by image: ``(image rows of the group, pair indices sorted by image)`` per group of at most
    ``batch_size`` images."""
    order = np.argsort(pair_img, kind="stable")
    images, starts = np.unique(pair_img[order], return_index=True)
    bounds = np.append(starts, order.shape[0])
    for g in range(0, images.shape[0], batch_size):
        h = min(g + batch_size, images.shape[0])
        yield images[g:h], order[bounds[g] : bounds[h]]


def score_pairs(
    adapter: Adapter,
    split: RetrievalSplit,
    pair_img: np.ndarray,
    pair_cap: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    cost: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Pair scores ``[P]`` (float32, CPU) of the (image row, caption row) pairs, image states computed per group."""
    out = torch.empty(pair_img.shape[0], dtype=torch.float32)
    transform, captions = adapter.image_transform(), split.captions
    for group, idx in _image_groups(pair_img, batch_size):
        (images,) = list(iter_image_batches(split, transform, len(group), rows=group.tolist()))
        state = adapter.pair_image_state(images.to(device))
        if cost is not None:
            cost["images_encoded"] += len(group)
        local = torch.from_numpy(np.searchsorted(group, pair_img[idx])).to(state.device)
        for s in range(0, idx.shape[0], batch_size):
            chunk = idx[s : s + batch_size]
            tokens = to_device(adapter.tokenize([captions[j] for j in pair_cap[chunk]]), device)
            out[torch.from_numpy(chunk)] = adapter.pair_scores(state[local[s : s + batch_size]], tokens).float().cpu()
        del state
    return out


@dataclass
class Reranked:
    """One direction of two-stage retrieval (CPU tensors; ``k`` = ``min(k_test, gallery size)``).

    Attributes:
        queries: Query rows ``[Nq]`` (image rows for i2t, caption rows for t2i).
        candidates: Gallery rows ``[Nq, k]`` re-scored per query, in stage-one order.
        itc: Their ITC cosines ``[Nq, k]``.
        pair: Their pair scores ``[Nq, k]`` (the adapter's ``pair_scores``).
        fused: The re-ranked scores ``[Nq, k]``: ``pair`` (fusion ``itm``) or ``pair + itc`` (``itm+itc``).
        positive: Whether each candidate is a positive of its query ``[Nq, k]``.
        ranks: 0-based rank of each query's best positive ``[Nq]`` after re-ranking.
    """

    queries: np.ndarray
    candidates: torch.Tensor
    itc: torch.Tensor
    pair: torch.Tensor
    fused: torch.Tensor
    positive: torch.Tensor
    ranks: np.ndarray


@torch.inference_mode()
def rerank_direction(
    adapter: Adapter,
    split: RetrievalSplit,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    direction: str,
    *,
    k_test: int,
    fusion: str,
    batch_size: int,
    device: torch.device,
    memory_mb: float = 256.0,
    cost: dict[str, Any] | None = None,
) -> Reranked:
    """Re-rank one direction (``i2t`` or ``t2i``); see :func:`rerank_metrics` for the arguments.

    ``cost`` (if given) accumulates ``pair_forwards`` and ``images_encoded``.
    """
    check_rerank(adapter, k_test, fusion)
    if direction not in ("i2t", "t2i"):
        raise ValueError(f"direction must be i2t or t2i, got {direction!r}")
    if batch_size < 1:
        raise ConfigError(f"re-ranking batch_size must be >= 1, got {batch_size}")
    img = F.normalize(image_emb.detach().to(device=device, dtype=torch.float32), dim=-1)
    txt = F.normalize(text_emb.detach().to(device=device, dtype=torch.float32), dim=-1)
    if img.shape[0] != split.n_images or txt.shape[0] != split.n_captions:
        raise ValueError(
            f"embeddings have {img.shape[0]} images and {txt.shape[0]} captions, the split "
            f"{split.dataset}/{split.split} {split.n_images} and {split.n_captions}"
        )
    cost = {"pair_forwards": 0, "images_encoded": 0} if cost is None else cost
    c2i = split.caption_to_image
    if direction == "i2t":
        # Images without a caption have no positive and are skipped, as in bench.scoring.itr.itr_metrics.
        counts = np.bincount(c2i, minlength=split.n_images)
        rows = np.flatnonzero(counts > 0)
        queries, gallery = img[torch.from_numpy(rows).to(device)], txt
        positives = (np.concatenate([[0], np.cumsum(counts[rows])]), np.argsort(c2i, kind="stable"))
    else:
        rows = np.arange(split.n_captions)
        queries, gallery = txt, img
        positives = (np.arange(split.n_captions + 1), c2i)
    k = min(k_test, gallery.shape[0])
    # Stage one: ranks and candidate lists from one pass of the exact scorer.
    stage1 = ranks_and_topk(queries, gallery, positives, k, memory_mb=memory_mb, device=device)
    cand, cand_itc, cand_pos = stage1.indices, stage1.scores, stage1.positive
    rank1 = torch.from_numpy(stage1.ranks).to(device)
    cand_np = cand.cpu().numpy().reshape(-1)
    q_np = np.repeat(rows, k)
    pair_img, pair_cap = (q_np, cand_np) if direction == "i2t" else (cand_np, q_np)
    was_training = adapter.training
    adapter.eval()
    try:
        pair = score_pairs(adapter, split, pair_img, pair_cap, batch_size=batch_size, device=device, cost=cost)
    finally:
        adapter.train(was_training)
    cost["pair_forwards"] += int(pair_img.shape[0])
    pair = pair.to(cand_itc.device).view(-1, k)
    fused = pair if fusion == "itm" else pair + cand_itc
    best = fused.masked_fill(~cand_pos, -math.inf).amax(dim=1)
    rank2 = ((fused >= best[:, None]) & ~cand_pos).sum(dim=1)
    ranks = torch.where(cand_pos.any(dim=1), rank2, rank1).cpu().numpy()
    return Reranked(rows, cand.cpu(), cand_itc.cpu(), pair.cpu(), fused.cpu(), cand_pos.cpu(), ranks)


@torch.inference_mode()
def rerank_metrics(
    adapter: Adapter,
    split: RetrievalSplit,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    k_test: int,
    fusion: str,
    batch_size: int,
    device: torch.device,
    memory_mb: float = 256.0,
    ranks: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """i2t and t2i metrics of ITC retrieval re-ranked by ``adapter``'s pair scorer.

    Args:
        adapter: An adapter with ``pair_image_state`` and ``pair_scores`` (see the module docstring).
        split: The split ``image_emb`` and ``text_emb`` were computed on (images are re-read for the pair scorer).
        image_emb: ``[N_img, D]`` ITC embeddings (L2-normalised here; pass the harness's normalised views).
        text_emb: ``[N_txt, D]`` ITC embeddings of the split's captions.
        k_test: Candidates re-scored per query (capped at the gallery size).
        fusion: ``itm`` (pair score alone) or ``itm+itc`` (pair score + cosine).
        batch_size: Images per group of image states, and pairs per scorer forward.
        device: Where stage one and the pair scorer run.
        memory_mb: Budget of one strip of stage-one scores.
        ranks: If given, receives each direction's ``(query rows, two-stage ranks)``.

    Returns:
        ``{"i2t", "t2i", "rsum", "cost"}``: :func:`bench.scoring.itr.recall_summary` blocks, RSUM, and the cost block
        (``pair_forwards``, ``images_encoded``, ``seconds``, ``k_test``, ``fusion``, ``pair_score``).
    """
    t0 = time.perf_counter()
    cost: dict[str, Any] = {"pair_forwards": 0, "images_encoded": 0}
    common = {"k_test": k_test, "fusion": fusion, "batch_size": batch_size, "device": device, "memory_mb": memory_mb}
    i2t_run = rerank_direction(adapter, split, image_emb, text_emb, "i2t", cost=cost, **common)
    forwards_i2t, images_i2t = cost["pair_forwards"], cost["images_encoded"]
    t2i_run = rerank_direction(adapter, split, image_emb, text_emb, "t2i", cost=cost, **common)
    i2t, t2i = i2t_run.ranks, t2i_run.ranks
    if ranks is not None:
        ranks.update(i2t=(i2t_run.queries, i2t), t2i=(t2i_run.queries, t2i))
    out: dict[str, Any] = {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}
    out["rsum"] = float(sum(out[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))
    out["cost"] = {
        "k_test": k_test,
        "k_effective_i2t": min(k_test, split.n_captions),
        "k_effective_t2i": min(k_test, split.n_images),
        "fusion": fusion,
        "pair_score": adapter.pair_score_kind,
        "rule": adapter.pair_score_kind + (" + itc cosine" if fusion == "itm+itc" else ""),
        "pair_forwards": cost["pair_forwards"],
        "pair_forwards_i2t": forwards_i2t,
        "pair_forwards_t2i": cost["pair_forwards"] - forwards_i2t,
        "images_encoded": cost["images_encoded"],
        "images_encoded_i2t": images_i2t,
        "images_encoded_t2i": cost["images_encoded"] - images_i2t,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("re-ranking (k_test=%d, %s): %d pair forwards in %.1f s", k_test, fusion, cost["pair_forwards"],
             out["cost"]["seconds"])  # fmt: skip
    return out
