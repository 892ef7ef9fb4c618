"""Records as a model card's ``model-index`` block (the Hugging Face Hub's evaluation-results metadata), one entry
per model × method with one result per dataset, split and direction, the seeds averaged.

Values are percentages as itr-bench reports them. Each metric's ``args`` carries the number of seeds, the record's
bootstrap interval (``ci`` at ``ci_level``) where there is one seed, the standard deviation over seeds
(``seed_std``) where there are several, and the provenance: config hashes, itr-bench version and the sha256 of
each weight file read; the dataset's ``revision`` is the split's fingerprint. A number on the Hub can so be traced
to the run and checked with ``bench verify``. ``huggingface_hub``'s own parser reads the block back (the tests do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import mean, stdev
from typing import Any

from bench.store.rows import record_interval

__all__ = ["model_index"]

_TASKS = {
    "i2t": ("image-text-retrieval", "Image-to-text retrieval"),
    "t2i": ("image-text-retrieval", "Text-to-image retrieval"),
    "t2t": ("text-retrieval", "Text-to-text retrieval"),
    "i2i": ("image-retrieval", "Image-to-image retrieval"),
    "sts": ("sentence-similarity", "Semantic textual similarity"),
}
_METRICS = {"r1": ("recall_at_1", "R@1"), "r5": ("recall_at_5", "R@5"), "r10": ("recall_at_10", "R@10"),
            "ndcg10": ("ndcg_at_10", "nDCG@10"), "map_at_r": ("map_at_r", "mAP@R"),
            "mean": ("spearman", "Spearman ρ×100")}  # fmt: skip


def _data_key(rec: Mapping[str, Any]) -> str | None:
    """The scored split's content keys (its fingerprint), as one string."""
    fp = rec.get("fingerprints")
    data = fp.get("data") if isinstance(fp, Mapping) else None
    keys = data.get(f"{rec.get('dataset')}/{rec.get('split')}") if isinstance(data, Mapping) else None
    return ",".join(f"{k}:{v}" for k, v in sorted(keys.items())) if isinstance(keys, Mapping) else None


def _weights(recs: list[Mapping[str, Any]]) -> dict[str, str]:
    """The weight files the records read, with their sha256 (packaged weights are covered by the versions)."""
    out: dict[str, str] = {}
    for rec in recs:
        fp = rec.get("fingerprints")
        weights = fp.get("weights") if isinstance(fp, Mapping) else None
        if isinstance(weights, Mapping):
            out.update({str(k): str(v) for k, v in weights.items()})
    return dict(sorted(out.items()))


def model_index(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``model-index`` list of the ``ok`` records (YAML-ready: plain lists, dicts, strings and numbers)."""
    rows: dict[tuple[str, str], dict[tuple[str, str, str], list[Mapping[str, Any]]]] = {}
    for rec in records:
        if rec.get("status") != "ok" or not isinstance(rec.get("metrics"), Mapping):
            continue
        row = rows.setdefault((str(rec.get("model")), str(rec.get("method"))), {})
        row.setdefault((str(rec.get("dataset")), str(rec.get("split")), str(rec.get("language") or "")), []).append(rec)
    out = []
    for (model, method), cells in rows.items():
        results = []
        for (dataset, split, language), recs in cells.items():
            for direction, (task_type, task_name) in _TASKS.items():
                blocks = [r["metrics"].get(direction) for r in recs]
                if not all(isinstance(b, Mapping) for b in blocks):
                    continue
                metrics = []
                for key, (kind, label) in _METRICS.items():
                    values = [b.get(key) for b in blocks]
                    if not all(isinstance(v, (int, float)) for v in values):
                        continue
                    args: dict[str, Any] = {
                        "seeds": len(values),
                        "config_hashes": sorted(str(r.get("config_hash")) for r in recs),
                        "itr_bench": sorted({str((r.get("versions") or {}).get("itr-bench")) for r in recs}),
                    }
                    if weights := _weights(recs):
                        args["weights_sha256"] = weights
                    if len(recs) == 1 and (found := record_interval(recs[0], (direction, key))) is not None:
                        args["ci"], args["ci_level"] = [round(x, 2) for x in found[0]], found[1]
                    elif len(values) > 1:
                        args["seed_std"] = round(stdev(values), 2)
                    metrics.append({"type": kind, "value": round(mean(values), 2), "name": f"{label} {direction}",
                                    "args": args, "verified": False})  # fmt: skip
                if metrics:
                    dataset_entry = {"type": dataset, "name": dataset + (f" ({language})" if language else ""),
                                     "split": split}  # fmt: skip
                    if (revision := _data_key(recs[0])) is not None:
                        dataset_entry["revision"] = revision
                    results.append({"task": {"type": task_type, "name": task_name}, "dataset": dataset_entry,
                                    "metrics": metrics})  # fmt: skip
        if results:
            out.append({"name": f"{model}-{method}", "results": results})
    return out
