"""Uni-modal columns in the tables: image retrieval and STS records join the ITR rows of their model and method."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd
import pytest
from test_tables import _block, _md_row, _md_tables, _problem, _rec

from bench.report.tables import collect, render


def _uni(model: str, method: str, dataset: str, *, train: str | None = None, seed: int = 0, **m: Any) -> dict:
    task = "sts" if "sts" in m else "image_retrieval"
    return {"schema": 1, "status": "ok", "model": model, "adapter": model, "dataset": dataset, "split": "test",
            "method": method, "seed": seed, "task": task, "train_dataset": train, "metrics": m}  # fmt: skip


def _img(r1: float, map_at_r: float) -> dict[str, float]:
    return {"r1": r1, "r2": r1 + 5, "r4": r1 + 10, "r8": r1 + 15, "map_at_r": map_at_r, "r_precision": 20.0}


def _records() -> list[dict[str, Any]]:
    itr = dict(i2t=_block(10, 20, 30), t2i=_block(5, 15, 25))
    return [
        _rec("vse", "zeroshot", **itr),
        _rec("vse", "usa", **itr),
        _rec("towers", "zeroshot", i2t=None, t2i=None, t2t=_block(30, 60, 70)),
        _uni("vse", "zeroshot", "cub", i2i=_img(40.0, 20.0)),
        _uni("vse", "usa", "cub", train="synthetic", i2i=_img(50.0, 25.0)),
        _uni("vse", "usa", "cub", train="synthetic", seed=1, i2i=_img(52.0, 27.0)),
        _uni("towers", "zeroshot", "cub", i2i=_img(45.0, 30.0)),
        _uni("towers", "zeroshot", "stsb", sts={"sts-test": 80.0, "mean": 80.0}),
    ]


def test_uni_modal_columns_join_the_itr_rows_and_missing_ones_show_a_dash() -> None:
    md = render(_records(), "markdown")
    tables = _md_tables(md)
    assert list(tables) == ["synthetic (test)"]  # no table of its own for cub or stsb
    rows = tables["synthetic (test)"]
    assert list(rows[0])[-3:] == ["cub R@1", "cub mAP@R", "stsb ρ"]
    assert _md_row(rows, "vse", "zeroshot")["cub R@1"] == "40.0"
    usa = _md_row(rows, "vse", "usa")
    assert usa["cub R@1"] == "**51.0** ± 1.4" and usa["cub mAP@R"] == "26.0 ± 1.4" and usa["Seeds"] == "2"
    assert usa["stsb ρ"] == "–" and _md_row(rows, "vse", "zeroshot")["stsb ρ"] == "–"
    towers = _md_row(rows, "towers", "zeroshot")
    assert towers["cub mAP@R"] == "**30.0**" and towers["stsb ρ"] == "80.0" and towers["i2t R@1"] == "n/a"
    assert "R@2" not in md and "R-P" not in md  # Markdown keeps the paper's columns; CSV has them all


def test_csv_carries_every_uni_modal_metric() -> None:
    back = pd.read_csv(io.StringIO(render(_records(), "csv")))
    for col in ("cub_r1", "cub_r2", "cub_r4", "cub_r8", "cub_map_at_r", "cub_r_precision", "stsb_rho_mean",
                "stsb_rho_sts-test", "cub_r1_std"):  # fmt: skip
        assert col in back.columns, col
    usa = back[back["method"] == "usa"].iloc[0]
    assert usa["cub_r8"] == pytest.approx(66.0) and math.isnan(usa["stsb_rho_mean"])


def test_latex_groups_uni_modal_columns_under_the_dataset() -> None:
    tex = render(_records(), "latex")
    assert r"\multicolumn{2}{c}{cub}" in tex and r"\multicolumn{1}{c}{stsb}" in tex
    assert r"mAP@R & $\rho$ \\" in tex and "STS Spearman" in tex


def test_a_model_trained_on_another_dataset_gets_that_datasets_table() -> None:
    recs = [*_records(), _uni("vse", "cusa", "cub", train="coco", i2i=_img(60.0, 33.0))]
    tables = _md_tables(render(recs, "markdown"))
    assert list(tables) == ["synthetic (test)", "coco (test)"]
    coco = tables["coco (test)"]
    # No ITR numbers were run on coco: those columns are dropped. Zero-shot rows stay where their ITR row is.
    assert [(r["Model"], r["Method"]) for r in coco] == [("vse", "cusa")]
    assert "RSUM" not in coco[0] and _md_row(coco, "vse", "cusa")["cub R@1"] == "60.0"
    assert "cusa" not in {r["Method"] for r in tables["synthetic (test)"]}


def test_only_uni_modal_records_make_one_uni_modal_table() -> None:
    recs = [r for r in _records() if r.get("task")]
    zs = [r for r in recs if r["method"] == "zeroshot"]
    assert list(_md_tables(render(zs, "markdown"))) == ["uni-modal (test)"]
    tables = _md_tables(render(recs, "markdown"))
    assert list(tables) == ["synthetic (test)"]  # the trained row names its table; zero-shot rows join it
    assert len(tables["synthetic (test)"]) == 3


def test_failed_uni_modal_cell_is_noted_on_its_row() -> None:
    bad = {**_problem("vse", "usa", "failed", "out of memory", dataset="sop"), "task": "image_retrieval",
           "train_dataset": "synthetic"}  # fmt: skip
    rows = _md_tables(render([*_records(), bad], "markdown"))["synthetic (test)"]
    assert _md_row(rows, "vse", "usa")["Note"] == "sop: failed: out of memory"
    assert "sop R@1" not in rows[0]  # no number anywhere: no column


def test_status_record_is_recognised_from_its_config_snapshot() -> None:
    bad = {
        **_problem("vse", "zeroshot", "unavailable", "offline", dataset="cub"),
        "config": {"dataset": {"format": "cub"}},
    }
    df = collect([*_records(), bad])
    assert "cub" not in set(df["dataset"])
    assert "cub: unavailable: offline" in df[(df["model"] == "vse") & (df["method"] == "zeroshot")]["note"].iloc[0]


def test_dataset_filter_keeps_the_uni_modal_columns_of_its_rows() -> None:
    recs = [*_records(), _rec("vse", "zeroshot", dataset="coco", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3))]
    only = _md_tables(render(recs, "markdown", dataset="synthetic"))
    assert list(only) == ["synthetic (test)"] and "cub R@1" in only["synthetic (test)"][0]
    cub = _md_tables(render(recs, "markdown", dataset="cub"))
    assert list(cub) == ["synthetic (test)"]  # the usa row names its training set
