"""Hyperparameter sweeps as a grid axis (``[sweep]``, ``bench run --sweep``): variants side by side in one results
folder, the skip rule, selection on validation, the all-variants table, comparisons and exports of a variant, and
bad sweeps as one line before anything runs.

The end-to-end test trains CUSA on the tiny synthetic grid with the packaged teachers, sweeping the teacher
temperature (0.05 against 1.0: sharp against nearly uniform soft labels), over two seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from tiny_grid import run_main, write_config

from bench.config import load_config
from bench.errors import ConfigError
from bench.grid.cell import Cell
from bench.grid.local import expand_grid
from bench.grid.plan import plan_cell
from bench.grid.records import cell_stem, read_record
from bench.grid.sweep import format_value, parse_variant_id, sweep_of, variant_id, variants_of
from bench.report.sweeps import render_variants, select_variants, val_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUNS = ("runs", "vse_infty", "synthetic", "test")
SWEEP = "methods.cusa.tau_teacher"


def _config(tmp: Path) -> Path:
    return write_config(tmp / "bench.toml", results=tmp / "results", work=tmp / "work")


def _run(cfg: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(["run", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa", "--seeds", "0,1",
                     "-q", *extra])  # fmt: skip


def _stems(results: Path) -> list[str]:
    return sorted(p.name for p in results.joinpath(*RUNS).glob("*.json"))


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two values of a method option over two seeds, run once: 4 records."""
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = _config(tmp)
    rc, out, err = _run(cfg, "--sweep", f"{SWEEP}=0.05,1.0")
    assert rc == 0, err
    assert "4 ran, 0 skipped" in err
    return tmp


def test_a_sweep_writes_one_record_per_variant_and_seed_side_by_side(swept: Path) -> None:
    assert _stems(swept / "results") == [
        "cusa@tau_teacher=0.05-seed0.json", "cusa@tau_teacher=0.05-seed1.json",
        "cusa@tau_teacher=1.0-seed0.json", "cusa@tau_teacher=1.0-seed1.json",
    ]  # fmt: skip
    recs = {p.name: read_record(p) for p in swept.joinpath("results", *RUNS).glob("*.json")}
    for name, rec in recs.items():
        value = float(re.search(r"tau_teacher=([0-9.]+)", name).group(1))
        assert rec["method"] == f"cusa[tau_teacher={value!r}]"
        assert rec["variant"] == {SWEEP: value}
        assert rec["config"]["method"]["tau_teacher"] == value  # the value reached the config, hence the hash
        assert rec["method_settings"]["tau_teacher"] == value  # and the objective that trained
    hashes = {r["config_hash"] for r in recs.values()}
    assert len(hashes) == 4  # two values x two seeds: no two cells share a configuration
    # The soft labels differ, so training differs: the CSA losses of one seed are not equal across the two values.
    a, b = (recs[f"cusa@tau_teacher={v}-seed0.json"]["history"][0]["csa_loss"] for v in ("0.05", "1.0"))
    assert not math.isclose(a, b, rel_tol=1e-3)


def test_select_val_keeps_the_variant_best_on_validation_and_says_from_how_many(swept: Path) -> None:
    cfg = _config(swept)
    rc, out, err = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                             "--seeds", "0,1", "--select", "val"])  # fmt: skip
    assert rc == 0, err
    recs = [read_record(p) for p in swept.joinpath("results", *RUNS).glob("*.json")]
    val = {v: np.mean([val_score(r) for r in recs if r["variant"][SWEEP] == v]) for v in (0.05, 1.0)}
    best = max(val, key=lambda v: val[v])
    shown = [line for line in out.splitlines() if line.startswith("| vse_infty")]
    assert len(shown) == 1 and f"cusa[tau_teacher={best!r}]" in shown[0]
    assert f"best of 2 variants on val rsum ({val[best]:.1f}); test not used" in out
    # The test numbers shown are the chosen variant's mean over its seeds.
    rsum = np.mean([r["metrics"]["rsum"] for r in recs if r["variant"][SWEEP] == best])
    assert f"{rsum:.1f}" in shown[0]


def test_selection_never_reads_the_test_split() -> None:
    # Two variants: A is better on test, B on validation. Selection must keep B.
    def rec(v: float, seed: int, val: float, test: float) -> dict:
        return {"status": "ok", "model": "m", "dataset": "d", "split": "test",
                "method": variant_id("cusa", ((SWEEP, v),)), "seed": seed, "variant": {SWEEP: v},
                "selected_epoch": 2, "select_metric": "rsum",
                "history": [{"epoch": 1, "val": 0.0}, {"epoch": 2, "val": val}], "metrics": {"rsum": test}}  # fmt: skip

    records = [rec(0.1, 0, 300.0, 450.0), rec(0.1, 1, 310.0, 440.0),
               rec(0.5, 0, 320.0, 400.0), rec(0.5, 1, 305.0, 410.0)]  # fmt: skip
    kept, (choice,) = select_variants(records)
    assert {r["method"] for r in kept} == {"cusa[tau_teacher=0.5]"}  # mean val 312.5 > 305.0
    assert (choice.variants, choice.val) == (2, 312.5)
    # A tie on validation goes to the variant listed first, not to the one better on test.
    records[3]["history"][1]["val"] = 290.0
    kept, _ = select_variants(records)
    assert {r["method"] for r in kept} == {"cusa[tau_teacher=0.1]"}


def test_all_variants_table_has_the_swept_values_as_columns(swept: Path) -> None:
    cfg = _config(swept)
    rc, out, err = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                             "--seeds", "0,1", "--all-variants", "--format", "csv"])  # fmt: skip
    assert rc == 0, err
    reader = csv.DictReader(io.StringIO(out.strip()))
    rows = list(reader)
    assert reader.fieldnames[:6] == ["dataset", "split", "model", "method", "variant", SWEEP]
    assert [r[SWEEP] for r in rows] == ["0.05", "1.0"]
    assert [r["seeds"] for r in rows] == ["2", "2"]
    assert sum(r["selected"] == "1" for r in rows) == 1
    recs = [read_record(p) for p in swept.joinpath("results", *RUNS).glob("*.json")]
    for r in rows:
        mine = [x for x in recs if x["method"] == r["variant"]]
        assert float(r["rsum"]) == pytest.approx(np.mean([x["metrics"]["rsum"] for x in mine]), abs=1e-3)
    rc, md, _ = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                          "--seeds", "0,1", "--all-variants", "--plot", str(swept / "plot.png")])  # fmt: skip
    assert rc == 0 and "| tau_teacher |" in md.replace("  ", " ").replace("  ", " ")
    assert (swept / "plot-sweep.png").stat().st_size > 10_000 and (swept / "plot.png").is_file()
    rc, _, err = run_main(["report", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                           "--seeds", "0,1", "--html", str(swept / "report")])  # fmt: skip
    page = (swept / "report" / "synthetic-test.html").read_text()
    assert rc == 0 and "<h2>Sweep</h2>" in page and "<td>0.05</td>" in page, err
    assert (swept / "report" / "synthetic-test-sweep.png").stat().st_size > 10_000
    latex = render_variants(recs, "latex")
    assert "tau\\_teacher" in latex and "$\\pm$" in latex and latex.count("\\\\") == 3  # header and two rows


def test_compare_export_and_status_take_a_variant(swept: Path, tmp_path: Path) -> None:
    cfg = _config(swept)
    a, b = "vse_infty:cusa[tau_teacher=0.05]", "vse_infty:cusa[tau_teacher=1.0]"
    rc, out, err = run_main(["compare", "--config", str(cfg), a, b, "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["a"]["spec"] == a and result["a"]["seeds"] == [0, 1] and result["b"]["seeds"] == [0, 1]
    folder = swept.joinpath("results", *RUNS)
    rsum = {v: np.mean([read_record(p)["metrics"]["rsum"] for p in folder.glob(f"cusa@tau_teacher={v}-*.json")])
            for v in ("0.05", "1.0")}  # fmt: skip
    assert result["metrics"]["rsum"]["a"] == pytest.approx(rsum["0.05"], abs=0.01)
    assert result["metrics"]["rsum"]["b"] == pytest.approx(rsum["1.0"], abs=0.01)
    rc, out, err = run_main(["export", "--config", str(cfg), f"{b}:1", "--dataset", "synthetic",
                             "--out", str(tmp_path / "exported")])  # fmt: skip
    assert rc == 0, err
    body = json.loads((tmp_path / "exported" / "export.json").read_text())
    assert body["cell"]["method"] == "cusa[tau_teacher=1.0]" and body["method"]["options"]["tau_teacher"] == 1.0
    rc, out, err = run_main(["status", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                             "--seeds", "0,1", "--sweep", f"{SWEEP}=0.05,1.0,2.0"])  # fmt: skip
    summary = out.split("variant")[-1]
    assert "cusa[tau_teacher=0.05]" in summary and "2 done" in summary and "2 missing" in summary
    assert rc == 1  # 2.0 has not run


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (["methods.cusa.tau_teacher=0"], "methods.cusa.tau_teacher = 0: [methods.cusa].tau_teacher: must be > 0"),
        (["methods.cusa.tau_teachr=1"], "unknown key 'tau_teachr'"),
        (["methods.cusa.cross_heads=1,0"], "expected bool"),
        (["train.lr=-1"], "train.lr = -1: [train].lr: must be > 0"),
        (["train.epochs=1.5"], "expected int"),
        (["train.lr="], "expected a non-empty list"),
        (["train.lr=1e-4,1e-4"], "value 0.0001 is listed twice"),
        (["train.lr=1e-4", "train.lr=1e-3"], "train.lr is swept twice"),
        (["train.device=cpu,cuda"], "not swept"),
        (["paths.results_dir=a,b"], "only keys of [train], [eval], [methods.<m>] and [models.<id>]"),
        (["methods.nope.x=1"], "unknown method 'nope'"),
        (["models.vse_infty.nope=1"], "has no option 'nope'"),
        (["methods.csa.alpha=0.1,0.2"], "methods.csa.alpha changes no cell of this grid"),
        (["lr"], "expected KEY=V1,V2"),
    ],
)
def test_a_bad_sweep_is_one_line_before_anything_runs(tmp_path: Path, sweep: list[str], message: str) -> None:
    cfg = _config(tmp_path)
    rc, out, err = _run(cfg, *(x for item in sweep for x in ("--sweep", item)))
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ") and message in lines[0], err
    assert not (tmp_path / "results").exists() and not (tmp_path / "work").exists()


def test_more_cells_than_the_limit_need_yes(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + "\n[sweep]\nlimit = 3\n")
    rc, _, err = run_main(["status", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                           "--seeds", "0,1", "--sweep", f"{SWEEP}=0.05,1.0"])  # fmt: skip
    assert rc == 2 and "the sweep makes 4 cells, more than its limit of 3" in err and "--yes" in err
    rc, out, _ = run_main(["status", "--config", str(cfg), "--models", "vse_infty", "--methods", "cusa",
                           "--seeds", "0,1", "--sweep", f"{SWEEP}=0.05,1.0", "--yes"])  # fmt: skip
    assert rc == 1 and out.count("missing") >= 4  # planned, none run


def test_the_default_limit_is_a_thousand_cells(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    values = ",".join(str(i) for i in range(1, 502))
    with pytest.raises(ConfigError, match="the sweep makes 1002 cells, more than its limit of 1000"):
        expand_grid(cfg, models=["vse_infty"], methods=["cusa"], seeds=[0, 1], sweep=[f"train.epochs={values}"])


def test_sweep_keys_apply_only_to_the_cells_they_change(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    sweep = ["methods.cusa.alpha=0.1,0.2", "train.lr=1e-4,5e-4", "models.vse_infty.embed_dim=128,256"]
    cells = expand_grid(cfg, methods=["zeroshot", "contrastive", "cusa"], seeds=[0], sweep=sweep)
    ids = {(c.model, c.method_id) for c in cells}
    # towers only runs zeroshot: nothing swept applies to it. zeroshot does not train: train.lr does not apply.
    assert ("towers", "zeroshot") in ids and sum(m == "towers" for m, _ in ids) == 1
    assert {i for m, i in ids if m == "vse_infty" and i.startswith("zeroshot")} == {
        "zeroshot[model.embed_dim=128]", "zeroshot[model.embed_dim=256]"}  # fmt: skip
    assert sum(i.startswith("contrastive[") for _, i in ids) == 4  # embed_dim x lr
    assert sum(i.startswith("cusa[") for _, i in ids) == 8  # alpha x embed_dim x lr
    cusa = next(c for c in cells if c.method_id == "cusa[alpha=0.2,model.embed_dim=128,train.lr=0.0001]")
    plan = plan_cell(cusa, cfg)
    assert plan.options["embed_dim"] == 128 and plan.train.lr == 1e-4 and plan.method_options["alpha"] == 0.2
    assert plan.record_path.name == "cusa@alpha=0.2,model.embed_dim=128,train.lr=0.0001-seed0.json"
    # A plain cell of the same grid keeps the name and hash it had before sweeps existed.
    plain = plan_cell(Cell("towers", "synthetic", "zeroshot", 0), cfg)
    assert plain.record_path.name == "zeroshot-seed0.json" and "variant" not in plain.snapshot


def test_random_search_draws_the_same_combinations_for_every_seed(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    cfg_text = _config(tmp_path).read_text() + (
        '\n[sweep]\nsearch = "random"\ncount = 3\nseed = 7\nmethods.cusa.alpha = [0.0, 0.1, 0.2, 0.5]\n'
        "methods.cusa.beta = [0.0, 0.5, 1.0]\n"
    )
    path = tmp_path / "random.toml"
    path.write_text(cfg_text)
    cfg = load_config(path)
    cells = expand_grid(cfg, models=["vse_infty"], methods=["cusa"], seeds=[0, 1, 2])
    by_seed = {s: sorted(c.method_id for c in cells if c.seed == s) for s in (0, 1, 2)}
    assert len(by_seed[0]) == 3 and by_seed[0] == by_seed[1] == by_seed[2]
    again = expand_grid(cfg, models=["vse_infty"], methods=["cusa"], seeds=[0])
    assert sorted(c.method_id for c in again) == by_seed[0]
    path.write_text(cfg_text.replace("seed = 7", "seed = 8"))
    other = expand_grid(load_config(path), models=["vse_infty"], methods=["cusa"], seeds=[0])
    assert sorted(c.method_id for c in other) != by_seed[0]  # another seed, another draw (of 12 choose 3)


@pytest.mark.parametrize("value", [0.1, 1e-05, 3, True, False, "normal", "1.5", "a b", 'say "x"', "x,y"])
def test_a_variant_id_reads_back_to_its_values(value: object) -> None:
    variant = (("methods.cusa.head_init", value), ("train.lr", 0.0005))
    vid = variant_id("cusa", variant)
    assert vid.startswith("cusa[head_init=") and vid.endswith(",train.lr=0.0005]")
    method, back = parse_variant_id(vid, "vse_infty")
    assert method == "cusa" and back == variant and [type(v) for _, v in back] == [type(value), float]
    assert "[" not in cell_stem(vid, 0) and "]" not in cell_stem(vid, 0) and "/" not in cell_stem(vid, 0)
    assert format_value(value) in vid


def test_values_from_toml_and_the_command_line_agree(tmp_path: Path) -> None:
    plain = load_config(_config(tmp_path))
    path = tmp_path / "swept.toml"
    path.write_text(_config(tmp_path).read_text() + '\n[sweep]\nmethods.cusa.head_init = ["identity", "normal"]\n')
    cfg = load_config(path)
    table = sweep_of(cfg)
    cli = sweep_of(plain, ["methods.cusa.head_init=identity,normal"])
    assert table.keys == cli.keys == {"methods.cusa.head_init": ["identity", "normal"]}
    assert variants_of(cfg, table, "vse_infty", "cusa") == variants_of(cfg, cli, "vse_infty", "cusa")


def test_a_sweep_goes_through_submitit_like_any_grid(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    grid = ["--config", str(cfg), "--models", "towers", "--sweep", "eval.topk=5,10"]
    rc, _, err = run_main(["run", *grid, "-q", "--launcher", "debug"])
    assert rc == 0 and "submitted 2 cell(s) to debug" in err, err
    folder = tmp_path / "results" / "runs" / "towers" / "synthetic" / "test"
    assert sorted(p.name for p in folder.glob("*.json")) == ["zeroshot@eval.topk=10-seed0.json",
                                                             "zeroshot@eval.topk=5-seed0.json"]  # fmt: skip
    for k in (5, 10):
        rec = read_record(folder / f"zeroshot@eval.topk={k}-seed0.json")
        assert rec["per_query"]["topk"] == k and rec["variant"] == {"eval.topk": k} and rec.get("job_id")
    rc, out, _ = run_main(["status", *grid])
    assert rc == 0 and "zeroshot[eval.topk=5]" in out and "zeroshot[eval.topk=10]" in out
    rc, _, err = run_main(["run", *grid, "-q", "--launcher", "debug"])
    assert rc == 0 and "submitted 0 cell(s)" in err and "2 done" in err


def test_a_rerun_skips_every_variant_and_a_third_value_runs_only_its_cells(swept: Path) -> None:
    # Last in the module: it adds a third value's cells to the shared folder (a copy would not skip: its synthetic
    # images live elsewhere, so its fingerprints differ).
    tmp = swept
    cfg = _config(tmp)
    before = {p.name: p.stat().st_mtime_ns for p in tmp.joinpath("results", *RUNS).glob("*.json")}
    rc, _, err = _run(cfg, "--sweep", f"{SWEEP}=0.05,1.0")
    assert rc == 0 and "0 ran, 4 skipped" in err, err
    rc, _, err = _run(cfg, "--sweep", f"{SWEEP}=0.05,0.2,1.0")
    assert rc == 0 and "2 ran, 4 skipped" in err, err
    after = {p.name: p.stat().st_mtime_ns for p in tmp.joinpath("results", *RUNS).glob("*.json")}
    assert {k: after[k] for k in before} == before  # the first four records were not touched
    assert sorted(set(after) - set(before)) == ["cusa@tau_teacher=0.2-seed0.json", "cusa@tau_teacher=0.2-seed1.json"]
    # The same sweep written in the config's [sweep] table names the same cells: all six are skipped.
    text = cfg.read_text() + f"\n[sweep]\n{SWEEP} = [0.05, 0.2, 1.0]\n"
    cfg.write_text(text)
    rc, _, err = _run(cfg)
    assert rc == 0 and "0 ran, 6 skipped" in err, err
