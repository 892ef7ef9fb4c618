"""Records as MTEB ``TaskResult`` files: ``<dir>/<org>__<model>-<method>/<config hash>/<Task>.json``, in the layout
of the MTEB results repository, read back by ``mteb``'s own ``TaskResult.from_disk``.

What maps, and how:

* An image-text record gives two files, one per direction (MTEB's tasks are one-directional): ``hit_rate_at_K``
  is itr-bench's R@K (a query counts when a positive is in its top K), ``ndcg_at_10`` its nDCG@10 (binary gains),
  and ``main_score`` is nDCG@10, as MTEB's Any2AnyRetrieval tasks use. ``recall_at_K`` (MTEB's share of a query's
  positives found) equals R@K only where a query has one positive, so it is written for t2i alone. Values are
  fractions, as MTEB writes them.
* An STS record gives ``cosine_spearman`` (and ``main_score``) from the mean Spearman ρ.
* Image-to-image records (no MTEB task of the same protocol) are not exported.

Task names: Karpathy COCO and Flickr30K records take MTEB's names (``MSCOCOI2TRetrieval``...), STS-B and SICK-R
theirs; every other dataset gets a name of its own (``ItrBench<Dataset><I2T|T2I>Retrieval``). Each file states in
its scores (key ``itr_bench``) where the protocol differs from MTEB's task of that name (MTEB's MSCOCO tasks score
M-BEIR's deduplicated caption set, not Karpathy's 5K test split), and the provenance: config hash, data and weight
fingerprints, versions, the record's path, and the interval of every exported metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.errors import BenchError
from bench.store.rows import record_interval

__all__ = ["MTEB_NAMES", "mteb_task_name", "write_mteb_results"]

# (dataset format, direction) -> MTEB's task of that name
MTEB_NAMES = {
    ("coco", "i2t"): "MSCOCOI2TRetrieval", ("coco", "t2i"): "MSCOCOT2IRetrieval",
    ("flickr30k", "i2t"): "Flickr30kI2TRetrieval", ("flickr30k", "t2i"): "Flickr30kT2IRetrieval",
    ("stsb", "sts"): "STSBenchmark", ("sick", "sts"): "SICK-R",
}  # fmt: skip

_DIFFERS = {
    "coco": "itr-bench scored Karpathy's COCO 5K test split with every caption (R@K as hit rate); MTEB's "
    "MSCOCO tasks score M-BEIR's deduplicated caption set by nDCG@10 (mteb PR #4973): not the same numbers",
    "flickr30k": "itr-bench scored Karpathy's Flickr30K 1K test split with every caption (R@K as hit rate); "
    "MTEB's Flickr30k tasks come from M-BEIR's copy: compare with care",
    "stsb": "Spearman correlation of cosine similarities on STS-B's test pairs, as MTEB's STSBenchmark",
    "sick": "Spearman correlation of cosine similarities on SICK-R's test pairs, as MTEB's SICK-R",
}


_TIES = ("tied scores are ranked pessimistically (a tie never helps a query); MTEB's pytrec_eval orders ties by "
         "document id, so models that emit equal scores can score higher there")


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def mteb_task_name(record: Mapping[str, Any], direction: str) -> tuple[str, str]:
    """The MTEB task name of one direction of a record, and how its protocol relates to MTEB's task of that name."""
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    dataset = config.get("dataset") if isinstance(config.get("dataset"), Mapping) else {}
    fmt = str(dataset.get("format", record.get("dataset")))
    if (fmt, direction) in MTEB_NAMES:
        return MTEB_NAMES[(fmt, direction)], _DIFFERS[fmt]
    kind = "STS" if direction == "sts" else f"{direction.upper()}Retrieval"
    return f"ItrBench{_camel(str(record.get('dataset')))}{kind}", "no MTEB task of this name: itr-bench named it"


def _scores(record: Mapping[str, Any], direction: str) -> dict[str, float] | None:
    metrics = record.get("metrics") if isinstance(record.get("metrics"), Mapping) else {}
    block = metrics.get(direction)
    if not isinstance(block, Mapping):
        return None
    if direction == "sts":
        if not isinstance(block.get("mean"), (int, float)):
            return None
        return {"cosine_spearman": block["mean"] / 100, "main_score": block["mean"] / 100}
    out = {f"hit_rate_at_{k[1:]}": v / 100 for k, v in block.items() if re.fullmatch(r"r\d+", k) and v is not None}
    if direction == "t2i":
        out |= {f"recall_at_{k[1:]}": v / 100 for k, v in block.items() if re.fullmatch(r"r\d+", k) and v is not None}
    if isinstance(block.get("ndcg10"), (int, float)):
        out["ndcg_at_10"] = out["main_score"] = block["ndcg10"] / 100
    return out or None


def _intervals(record: Mapping[str, Any], direction: str) -> dict[str, list[float]]:
    metrics = record.get("metrics")
    block = metrics.get(direction) if isinstance(metrics, Mapping) else None
    names = {"ndcg10": "ndcg_at_10", "mean": "cosine_spearman"}
    out = {}
    for key in block if isinstance(block, Mapping) else ():
        name = names.get(key) or (f"hit_rate_at_{key[1:]}" if re.fullmatch(r"r\d+", key) else None)
        if name and (found := record_interval(record, (direction, key))) is not None:
            out[name] = [found[0][0] / 100, found[0][1] / 100]
    return out


def _languages(record: Mapping[str, Any]) -> list[str]:
    # A multilingual set's records name their language as the set does (xm3600: "de"); others are English.
    lang = record.get("language")
    return [lang] if isinstance(lang, str) and lang else ["eng-Latn"]


def write_mteb_results(records: Iterable[Mapping[str, Any]], out: Path, *, org: str = "itr-bench") -> list[Path]:
    """Write one MTEB ``TaskResult`` file per exported (record, direction) under ``out``; returns their paths.

    Raises:
        BenchError: a file cannot be written (one line naming it).
    """
    from bench.tasks import task_of_record

    written = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        task = task_of_record(rec)
        directions = ("i2t", "t2i") if task == "itr" else ("sts",) if task == "sts" else ()
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{rec.get('model')}-{rec.get('method')}")
        revision = str(rec.get("config_hash") or f"seed{rec.get('seed')}")
        fp = rec.get("fingerprints") if isinstance(rec.get("fingerprints"), Mapping) else {}
        splits = fp.get("data") if isinstance(fp.get("data"), Mapping) else {}
        data = splits.get(f"{rec.get('dataset')}/{rec.get('split')}")
        versions = rec.get("versions") if isinstance(rec.get("versions"), Mapping) else {}
        for direction in directions:
            scores = _scores(rec, direction)
            if scores is None:
                continue
            name, protocol = mteb_task_name(rec, direction)
            if direction != "sts":
                protocol += f"; {_TIES}"
            body = {
                "dataset_revision": json.dumps(data, sort_keys=True) if data else "not recorded",
                "task_name": name,
                "mteb_version": None,  # written by itr-bench, not by an mteb run
                "scores": {str(rec.get("split")): [{
                    "hf_subset": str(rec.get("language") or "default"),
                    "languages": _languages(rec),
                    **scores,
                    "itr_bench": {
                        "protocol": protocol,
                        "dataset": rec.get("dataset"), "split": rec.get("split"), "model": rec.get("model"),
                        "method": rec.get("method"), "seed": rec.get("seed"), "direction": direction,
                        "config_hash": rec.get("config_hash"), "fingerprints": fp, "versions": versions,
                        "git_sha": rec.get("git_sha"), "record": rec.get("_path"),
                        "intervals": _intervals(rec, direction), "bootstrap": rec.get("bootstrap"),
                    },
                }]},
                "evaluation_time": rec.get("wall_time_s"),
                "kg_co2_emissions": None,
                "date": rec.get("created"),
            }  # fmt: skip
            path = Path(out) / f"{org}__{model}" / revision / f"{name}.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, (json.dumps(body, indent=2, default=str) + "\n").encode())
            except OSError as e:
                raise BenchError(f"{path}: cannot write the MTEB result ({e.strerror or e})") from None
            written.append(path)
    return written
