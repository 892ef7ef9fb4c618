"""Match finished records to published rows and compare them, protocol first.

A published row (``published.json``) names a model spec (``clip:ViT-B-32/openai``), a method, a dataset (by its
format: ``coco``, ``flickr30k``, ``cub``, ``sts12`` ...), its protocol and its metrics in percent. A record matches a
row when its model spec (or the name ``--model-as`` gives it), method and dataset format agree; the protocol is then
checked before any number is compared, and a mismatch (a 5K record against a 1K row, all captions against the first
five, ITC against ITM re-ranking, a uni-modal row trained on another set, a choice set scored by a pair scorer
against an embedding row, long captions cut against sentence means) is *refused*, never compared. A choice set's
metric is named ``<test>/<subset, average or mean>`` (``text/swap_obj``, ``group/mean``). Seeds of one
cell are averaged first. A compared row passes when every metric it lists is within the tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Verdict", "dataset_key", "load_published", "model_key", "record_value", "verify"]


def load_published() -> list[dict[str, Any]]:
    """The published rows shipped with itr-bench."""
    text = (resources.files("bench.verify") / "published.json").read_text(encoding="utf-8")
    return list(json.loads(text)["rows"])


def _dig(obj: Any, *keys: str) -> Mapping[str, Any]:
    """``obj[k1][k2]...`` when every level is a table, else an empty one (a hand-edited record reads as lacking it)."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def model_key(record: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> str:
    """The model spec a record's numbers belong to: an alias given for its model id, else ``family:checkpoint``
    (``/pretrained`` appended when the model table sets it)."""
    if aliases and record.get("model") in aliases:
        return aliases[str(record["model"])]
    spec = _dig(record, "config", "model")
    family = spec.get("adapter", record.get("adapter"))
    checkpoint = spec.get("checkpoint")
    if checkpoint is None:
        return str(record.get("model"))
    pretrained = spec.get("pretrained")
    return f"{family}:{checkpoint}" + (f"/{pretrained}" if pretrained else "")


def dataset_key(record: Mapping[str, Any]) -> str:
    """The published name of a record's dataset: its format (``senteval_sts`` with ``year = 12``: ``sts12``; a
    ``precomp`` folder: the folder's name, the reference repositories' ``data_name``)."""
    spec = _dig(record, "config", "dataset")
    fmt = str(spec.get("format", record.get("dataset")))
    if fmt == "precomp":  # the reference repositories' data_name: coco_precomp, f30k_precomp
        return Path(str(spec.get("root", "precomp"))).name
    return f"sts{spec.get('year', 12)}" if fmt == "senteval_sts" else fmt


def record_value(record: Mapping[str, Any], name: str, *, rerank: bool = False) -> float | None:
    """A published metric name (``i2t_r1``, ``rsum``, ``eccv_i2t_map_at_r``, ``i2i_r1``, ``sts``) read from a record."""
    metrics = _dig(record, "metrics", "rerank") if rerank else _dig(record, "metrics")
    if "/" in name:  # a choice set's accuracy: "<test>/<subset, average or mean>" (text/swap_obj, group/mean)
        kind, _, sub = name.partition("/")
        value = _dig(metrics, "choice", kind).get(sub)
        return float(value) if isinstance(value, int | float) else None
    if name == "rsum":
        return metrics.get("rsum")
    if isinstance(metrics.get(name), Mapping):  # a block of per-file values and their mean (``sts``)
        return metrics[name].get("mean")
    parts = name.split("_", 2 if name.startswith("eccv_") else 1)
    if name.startswith("eccv_"):
        eccv = _dig(record, "eccv") or _dig(record, "metrics", "eccv")
        return _dig(eccv, parts[1]).get(parts[2])
    return _dig(metrics, parts[0]).get(parts[1])


def _protocol_problem(row: Mapping[str, Any], recs: Sequence[Mapping[str, Any]]) -> str | None:
    want = row.get("protocol") or {}
    rec = recs[0]
    if want.get("task") and rec.get("task") != want["task"]:
        return f"the row is {want['task']}, the record {rec.get('task', 'image-text')}"
    if want.get("trained_on") and rec.get("train_dataset") is not None:
        fmt = _dig(rec, "config", "train_dataset").get("format")
        if fmt != want["trained_on"]:
            return f"the row's model was trained on {want['trained_on']}, the record's on {fmt}"
    if "images" in want:
        n = _dig(rec, "metrics", "i2t").get("n_queries")
        if n is not None and n != want["images"]:
            return f"the row is a {want['images']:,}-image protocol, the record scored {n:,} images"
    if "captions" in want:
        per = _dig(rec, "config", "dataset").get("captions_per_image", 0)
        have = "all" if not per else f"first{per}"
        if have != want["captions"]:
            return f"the row counts {want['captions']} captions per image, the record {have}"
    if want.get("rerank") and not _dig(rec, "metrics", "rerank"):
        return "the row is re-ranked (ITM), the record has no re-ranked metrics ([eval] rerank_k)"
    if "scorer" in want:  # a choice set: scored by embedding cosine or by a pair scorer (ITM)
        have = "pair" if str(rec.get("scored_by") or "").startswith("pair") else "embedding"
        if have != want["scorer"]:
            return f"the row is scored by {want['scorer']}, the record by {have} ({rec.get('scored_by')})"
    if "long_text" in want:  # long captions: cut at the context, or averaged over sentences
        have = _dig(rec, "long_text").get("rule", "truncate")
        if have != want["long_text"]:
            return f"the row's long captions are handled by {want['long_text']!r}, the record's by {have!r}"
    return None


@dataclass
class Verdict:
    """One published row against the records of one cell (seeds averaged)."""

    row: dict[str, Any]
    records: list[dict[str, Any]]
    status: str  # "pass", "fail" or "refused"
    reason: str = ""
    compared: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (ours, published)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        metrics = {k: {"ours": a, "published": b, "delta": a - b} for k, (a, b) in self.compared.items()}
        return {"row": self.row["id"], "source": self.row["source"], "status": self.status, "reason": self.reason,
                "seeds": sorted(int(r.get("seed", 0)) for r in self.records), "metrics": metrics}  # fmt: skip


def verify(
    records: Iterable[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    tolerance: float = 1.0,
    aliases: Mapping[str, str] | None = None,
) -> tuple[list[Verdict], list[str]]:
    """Every published row that some ``ok`` record matches, compared or refused; and the cells no row matches."""
    cells: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        key = (model_key(rec, aliases), str(rec.get("method")), dataset_key(rec), str(rec.get("split")))
        cells.setdefault(key, []).append(dict(rec))
    verdicts, unmatched = [], []
    for (model, method, dataset, split), recs in cells.items():
        matching = [r for r in rows if (r["model"], r["method"], r["dataset"]) == (model, method, dataset)]
        if not matching:
            unmatched.append(f"{model} {method} {dataset}/{split}")
        for row in matching:
            has_eccv = recs[0].get("eccv") or (recs[0].get("metrics") or {}).get("eccv")
            if (row.get("protocol") or {}).get("benchmark") == "eccv" and not has_eccv:
                continue  # another benchmark on the same images: nothing of it was measured, nothing to refuse
            problem = _protocol_problem(row, recs)
            if problem is not None:
                verdicts.append(Verdict(dict(row), recs, "refused", problem))
                continue
            rerank = bool((row.get("protocol") or {}).get("rerank"))
            compared: dict[str, tuple[float, float]] = {}
            missing = []
            for name, published in row["metrics"].items():
                values = [record_value(r, name, rerank=rerank) for r in recs]
                if any(v is None for v in values):
                    missing.append(name)
                    continue
                compared[name] = (float(np.mean(values)), float(published))  # type: ignore[arg-type]
            if missing:
                verdicts.append(Verdict(dict(row), recs, "refused", f"the record has no {', '.join(missing)}"))
                continue
            worst = max(abs(a - b) for a, b in compared.values())
            status = "pass" if worst <= tolerance else "fail"
            reason = f"largest |Δ| {worst:.2f} {'≤' if status == 'pass' else '>'} {tolerance:g}"
            verdicts.append(Verdict(dict(row), recs, status, reason, compared))
    return verdicts, unmatched
