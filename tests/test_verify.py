"""``bench verify`` on crafted records: a reproduction that passes, one that fails, and protocol mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_grid import run_main

from bench.verify.check import dataset_key, load_published, model_key, verify

ROWS = {r["id"]: r for r in load_published()}
B32_CUSA_COCO = ROWS["clip-vit-b/32-cusa-coco"]


def record(metrics: dict, *, seed: int = 0, method: str = "cusa", images: int = 5000, dataset: dict | None = None,
           model: dict | None = None, model_id: str = "b32", **extra) -> dict:  # fmt: skip
    blocks = {d: {k.split("_")[1]: v for k, v in metrics.items() if k.startswith(d)} for d in ("i2t", "t2i")}
    blocks["i2t"]["n_queries"] = images
    return {"schema": 1, "status": "ok", "model": model_id, "adapter": "clip", "dataset": "mscoco", "split": "test",
            "method": method, "seed": seed,
            "metrics": {**blocks, "rsum": metrics.get("rsum"), "t2t": None, "i2i": None},
            "config": {"model": model or {"adapter": "clip", "checkpoint": "ViT-B-32/openai"},
                       "dataset": dataset or {"format": "coco", "root": "/data/coco"}}, **extra}  # fmt: skip


def shifted(delta: float) -> dict:
    return {k: v + delta for k, v in B32_CUSA_COCO["metrics"].items()}


def test_published_rows_hold_the_papers_tables() -> None:
    assert len(ROWS) == len(load_published())  # ids are unique
    assert B32_CUSA_COCO["metrics"]["i2t_r1"] == 57.3 and B32_CUSA_COCO["metrics"]["rsum"] == 429.7
    for row in ROWS.values():  # every Table 8 row's RSUM is its six recalls summed, to rounding
        m = row["metrics"]
        if "rsum" in m:
            assert m["rsum"] == pytest.approx(sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)),
                                              abs=0.25), row["id"]  # fmt: skip


def test_keys_of_a_record() -> None:
    rec = record(shifted(0))
    assert model_key(rec) == "clip:ViT-B-32/openai" and dataset_key(rec) == "coco"
    assert model_key(rec, {"b32": "clip:ViT-L-14-336/openai"}) == "clip:ViT-L-14-336/openai"
    sts = {"config": {"dataset": {"format": "senteval_sts", "year": 14}}}
    assert dataset_key(sts) == "sts14"


def test_seeds_averaged_then_pass_or_fail() -> None:
    recs = [record(shifted(+0.4), seed=0), record(shifted(-0.2), seed=1)]  # mean +0.1 of every number
    (v,), unmatched = verify(recs, list(ROWS.values()), tolerance=0.5)
    assert v.status == "pass" and v.row["id"] == B32_CUSA_COCO["id"] and not unmatched
    assert v.compared["rsum"][0] == pytest.approx(429.8) and len(v.records) == 2
    (v,), _ = verify([record(shifted(-1.5))], list(ROWS.values()), tolerance=1.0)
    assert v.status == "fail" and "1.50 > 1" in v.reason


def test_protocol_mismatches_are_refused_not_compared() -> None:
    rows = list(ROWS.values())
    (v,), _ = verify([record(shifted(0), images=1000)], rows)  # a COCO 1K record against the 5K row
    assert v.status == "refused" and "5,000-image protocol" in v.reason and not v.compared
    first5 = record(shifted(0), dataset={"format": "coco", "root": "/d", "captions_per_image": 5})
    (v,), _ = verify([first5], rows)
    assert v.status == "refused" and "first5" in v.reason
    blip_model = {"adapter": "blip", "checkpoint": "Salesforce/blip-itm-base-coco"}
    blip = record(shifted(0), method="zeroshot", model=blip_model)
    (v,), _ = verify([blip], rows)
    assert v.status == "refused" and "re-ranked" in v.reason
    _, unmatched = verify([record(shifted(0), model={"adapter": "clip", "checkpoint": "/local/ckpt.pt"})], rows)
    assert unmatched == ["clip:/local/ckpt.pt cusa coco/test"]


def test_bench_verify_command(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs" / "b32" / "mscoco" / "test"
    runs.mkdir(parents=True)
    (runs / "cusa-seed0.json").write_text(json.dumps(record(shifted(0.3))))
    (runs / "contrastive-seed0.json").write_text(json.dumps(record(
        {k: v - 3 for k, v in ROWS["clip-vit-b/32-contrastive-coco"]["metrics"].items()}, method="contrastive")))
    cfg = tmp_path / "bench.toml"
    cfg.write_text(f'[paths]\nresults_dir = {json.dumps(str(tmp_path / "results"))}\n')
    rc, out, err = run_main(["verify", "--config", str(cfg), "--all"])
    assert rc == 1 and "1 passed, 1 failed, 0 refused" in err
    assert "PASS    CLIP ViT-B/32 + CUSA · coco" in out and "FAIL    CLIP ViT-B/32 · coco" in out
    assert "Δ  +0.30" in out
    rc, out, _ = run_main(["verify", "--config", str(cfg), "--all", "--json", "--tolerance", "5"])
    assert rc == 0 and {v["status"] for v in json.loads(out)["verdicts"]} == {"pass"}
    rc, _, err = run_main(["verify", "--config", str(cfg), "--all", "--model-as", "b32=clip:RN50/openai"])
    assert rc == 1 and "no record could be compared" in err
    rc, _, err = run_main(["verify", "--config", str(cfg), "--all", "--model-as", "b32"])
    assert rc == 2 and "expected ID=SPEC" in err


def test_choice_and_long_caption_rows_check_their_protocol() -> None:
    """Rows of the choice and long-caption sets (crafted here: itr-bench ships none of their published rows yet)."""
    sugar = {"id": "toy-sugarcrepe", "source": "a test", "label": "B/32", "model": "clip:ViT-B-32/openai",
             "method": "zeroshot", "dataset": "sugarcrepe", "protocol": {"task": "choice", "scorer": "embedding"},
             "metrics": {"text/swap_obj": 60.0, "text/replace": 80.0}}  # fmt: skip
    block = {"text": {"swap_obj": 60.4, "replace": 79.8, "mean": 70.0}, "averages": ["replace"], "n_items": 10}
    rec = {**record({}, method="zeroshot"), "task": "choice", "metrics": {"choice": block},
           "scored_by": "cosine of the joint embeddings"}  # fmt: skip
    rec["config"]["dataset"] = {"format": "sugarcrepe", "root": "/d"}
    (v,), _ = verify([rec], [sugar], tolerance=0.5)
    assert v.status == "pass" and v.compared["text/swap_obj"] == (pytest.approx(60.4), 60.0)
    itm = {**rec, "scored_by": "pair scorer: itm logit"}
    (v,), _ = verify([itm], [sugar])
    assert v.status == "refused" and "scored by embedding, the record by pair" in v.reason
    urban = {"id": "toy-urban1k", "source": "a test", "label": "B/32", "model": "clip:ViT-B-32/openai",
             "method": "zeroshot", "dataset": "urban1k", "protocol": {"long_text": "truncate"},
             "metrics": {"i2t_r1": 50.0}}  # fmt: skip
    long = record({"i2t_r1": 50.2}, method="zeroshot", images=1000, dataset={"format": "urban1k", "root": "/u"},
                  long_text={"rule": "sentences"})  # fmt: skip
    (v,), _ = verify([long], [urban])
    assert v.status == "refused" and "'truncate', the record's by 'sentences'" in v.reason
    (v,), _ = verify([{**long, "long_text": {"rule": "truncate", "truncated": 3}}], [urban])
    assert v.status == "pass"


def test_region_model_rows_match_by_precomp_folder() -> None:
    """The SCAN / SGR / SAF / SGRAF rows (the authors' released models, scored zero-shot) match a precomp dataset by
    its folder's name, as the reference repositories' ``data_name``; the model by the alias a user gives it."""
    row = ROWS["sgraf-zeroshot-f30k_precomp"]
    assert row["metrics"]["rsum"] == 500.8 and ROWS["scan-zeroshot-coco_precomp"]["metrics"]["i2t_r1"] == 50.4
    model = {"adapter": "sgraf", "checkpoint": ["/m/SGR/model_best.pth.tar", "/m/SAF/model_best.pth.tar"]}
    rec = record(row["metrics"], method="zeroshot", images=1000, model=model, model_id="sgraf",
                 dataset={"format": "precomp", "root": "/data/f30k_precomp"})  # fmt: skip
    assert dataset_key(rec) == "f30k_precomp"
    (v,), unmatched = verify([rec], list(ROWS.values()), aliases={"sgraf": "sgraf:SGRAF"})
    assert v.status == "pass" and v.row["id"] == row["id"] and not unmatched
    named = record(row["metrics"], method="zeroshot", images=1000, model=model, model_id="sgraf",
                   dataset={"format": "precomp", "root": "/d/coco_precomp"})  # fmt: skip
    (v,), _ = verify([named], list(ROWS.values()), aliases={"sgraf": "sgraf:SGRAF"})
    assert v.row["id"] == "sgraf-zeroshot-coco_precomp" and v.status == "refused" and "5,000-image" in v.reason
