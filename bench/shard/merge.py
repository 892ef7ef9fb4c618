"""Merge a sharded evaluation: every score task's parts add up to the whole scans, and the cell's record is written
through the same steps as a one-process run (:func:`bench.grid.execute.execute_cell`), so it is the same record:
metrics, per-query file, intervals and provenance."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from bench.config import BenchConfig
from bench.data.base import RetrievalSplit
from bench.errors import BenchError
from bench.evaluation.itr import Scored, Views, eccv_blocks, fold_mean, fold_metrics
from bench.grid.cell import Cell
from bench.grid.execute import Outcome, execute_cell
from bench.grid.pipeline import Plan
from bench.scoring.itr import query_ranks, recall_ks, summarize
from bench.scoring.itr_scan import merge_itr_parts
from bench.scoring.queries import QueryRanks
from bench.scoring.sibling_scan import merge_sibling_parts
from bench.shard.plan import ShardDir, ShardPlan, shard_dir
from bench.shard.score import load_embeddings, load_part, part_arrays, score_done

__all__ = ["MergedScorer", "merge_cell", "merged_queries"]

log = logging.getLogger(__name__)


def merged_queries(d: ShardDir, plan: ShardPlan, split: RetrievalSplit) -> dict[str, QueryRanks | None]:
    """Every direction's per-query ranks and lists, from all score tasks' parts."""
    for p in range(plan.parts):
        if not score_done(d, p):
            raise BenchError(f"{d.score_marker(p)}: score task {p} has not finished; `bench run --shards` runs it")

    def parts(scan: str) -> Iterator[Any]:  # one part at a time: the merge holds the result and one part
        return (load_part(d, p, scan) for p in range(plan.parts))

    c2i, labels, n_img = split.caption_to_image, split.image_labels, split.n_images
    names = part_arrays(d, 0) or []  # every part ran the same scans
    scan = merge_itr_parts(parts("itr"), c2i, n_img) if "itr_rows" in names else None
    t2t = merge_sibling_parts(parts("t2t"), c2i) if "t2t_counts" in names else None
    i2i = merge_sibling_parts(parts("i2i"), labels) if "i2i_counts" in names and labels is not None else None
    return query_ranks(scan, t2t, i2i, c2i, n_img, labels)


def merged_long_text(d: ShardDir, plan: ShardPlan) -> dict[str, Any]:
    """The record's ``long_text`` of a sharded cell: the encode tasks' counts of cut captions, summed (the rule is
    always ``truncate``: sharded evaluation refuses ``sentences``)."""
    slices = [(d.read_marker(d.encode_marker(k)) or {}).get("long_text") for k in range(plan.encode_tasks)]
    out: dict[str, Any] = {"rule": "truncate"}
    counted = [s for s in slices if isinstance(s, dict) and "context" in s]
    if counted and len(counted) == len(slices):
        captions = sum(int(s["captions"]) for s in counted)
        truncated = sum(int(s["truncated"]) for s in counted)
        out.update({"context": int(counted[0]["context"]), "captions": captions, "truncated": truncated,
                    "share": truncated / captions if captions else 0.0})  # fmt: skip
    return out


class MergedScorer:
    """The :class:`~bench.grid.pipeline.SplitScorer` of a sharded cell: the merged ranks, plus what the one-process
    evaluation adds on small splits (ECCV Caption / CxC, the 1K folds), computed here from the stored embeddings."""

    embedding = None

    def __init__(self, plan: Plan, test: RetrievalSplit, d: ShardDir, shard_plan: ShardPlan) -> None:
        self.plan, self.test, self.dir, self.shard_plan = plan, test, d, shard_plan
        self.extra_metrics: dict[str, Any] = {}
        self.scored = Scored()
        self.long_text = merged_long_text(d, shard_plan)

    def __call__(self, objective: Any = None, *, last: bool = False) -> dict[str, Any]:
        ev, test, device = self.plan.cfg.eval, self.test, self.plan.device
        queries = merged_queries(self.dir, self.shard_plan, test)
        self.scored = Scored(queries=queries)
        out = summarize(queries, recall_ks(ev.ks))
        folds = test.fold_rows()
        needs_views = folds or (test.caption_ids is not None and test.split == "test")
        if not needs_views:
            return out
        img, txt, joint = load_embeddings(self.dir, self.shard_plan)
        cross = (img, txt)
        views: Views = {"cross": cross, "uni": cross}
        if test.caption_ids is not None and test.split == "test":
            eccv = eccv_blocks(cross, test, ev, device)
            if eccv is not None:
                out.update(eccv)
        if folds:
            self.extra_metrics[f"{test.split}_1k"] = fold_mean(fold_metrics(views, test, joint, ev, device, ev.topk,
                                                                            folds))  # fmt: skip
        return out


def merge_cell(cfg: BenchConfig, cell: Cell) -> Outcome:
    """Merge ``cell``'s finished score tasks and write its record (and per-query file) as a one-process run would."""
    d = shard_dir(cfg, cell)
    shard_plan = d.read_plan()
    if shard_plan is None:
        raise BenchError(f"{d.plan_file}: no shard plan; `bench run --shards N` makes it")

    def scorer(plan: Plan, test: RetrievalSplit) -> MergedScorer:
        if test.fingerprint() != shard_plan.data:
            raise BenchError(f"{cell.label}: the split changed since the shard plan {d.plan_file} was made; run again")
        return MergedScorer(plan, test, d, shard_plan)

    extra = {"sharded": {"encode_tasks": shard_plan.encode_tasks, "score_tasks": shard_plan.parts,
                         "folder": str(d.root)}}  # fmt: skip
    with torch.inference_mode():
        return execute_cell(cfg, cell, force=True, progress=False, scorer=scorer, extra=extra)
