"""``bench`` end to end through ``main([...])``: run, skip, force, filters, table formats, list, score.

One module-scoped grid run (vse_infty zeroshot + contrastive, towers zeroshot on a tiny synthetic set, real offline
towers on CPU) is shared by the tests; tests that write results work on a copy of its results folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tiny_grid import EPOCHS, result_path, run_main, snapshot, write_config

from bench.cli.main import main
from bench.grid.records import config_hash, read_record
from bench.scoring.itr import TIE_RULE

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models below are the packaged offline weights; never the hub

GROUPS = ("i2t", "t2i", "rsum", "t2t", "i2i")
CELLS = [("vse_infty", "zeroshot"), ("vse_infty", "contrastive"), ("towers", "zeroshot")]


def parse_markdown(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The rows of the pipe table(s) in ``text``, keyed by (model, method), bold markers removed."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines, f"no Markdown table in:\n{text}"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        row = dict(zip(header, cells, strict=True))
        rows[(row["Model"], row["Method"])] = row
    return rows


def bench_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench:")]


@dataclass
class Run:
    root: Path
    config: Path
    results: Path
    work: Path
    rc: int
    out: str
    err: str

    def record(self, model: str, method: str) -> dict:
        return read_record(result_path(self.results, model, method))

    def clone(self, dest: Path) -> tuple[Path, Path]:
        """A copy of the results folder (same work_dir, so the feature cache is shared) and its config."""
        results = dest / "results"
        shutil.copytree(self.results, results)
        return write_config(dest / "bench.toml", results=results, work=self.work), results


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("cli_grid")
    results, work = root / "results", root / "work"
    config = write_config(root / "bench.toml", results=results, work=work)
    rc, out, err = run_main(["run", "--config", str(config), "-q"])
    return Run(root, config, results, work, rc, out, err)


# ---------------------------------------------------------------------------------------------------------------
# bench run


def test_run_exits_0_and_prints_markdown_table_of_every_cell(grid: Run) -> None:
    assert grid.rc == 0, grid.err
    assert "### synthetic (test)" in grid.out
    rows = parse_markdown(grid.out)
    assert set(rows) == set(CELLS)
    assert rows[("towers", "zeroshot")]["i2t R@1"] == "n/a"
    assert rows[("towers", "zeroshot")]["RSUM"] == "n/a"
    assert rows[("vse_infty", "zeroshot")]["i2t R@1"] != "n/a"
    assert any("3 cell(s)" in line for line in bench_lines(grid.err))
    assert any("3 ran, 0 skipped" in line for line in bench_lines(grid.err))


def test_run_writes_one_complete_json_per_cell(grid: Run) -> None:
    files = sorted(p.relative_to(grid.results / "runs").as_posix() for p in (grid.results / "runs").rglob("*.json"))
    assert files == sorted(f"{m}/synthetic/test/{meth}-seed0.json" for m, meth in CELLS)
    for model, method in CELLS:
        rec = grid.record(model, method)
        assert rec["status"] == "ok"
        assert (rec["model"], rec["dataset"], rec["split"], rec["method"], rec["seed"]) == (
            model,
            "synthetic",
            "test",
            method,
            0,
        )
        assert set(GROUPS) <= set(rec["metrics"])
        for group in ("t2t", "i2i"):  # synthetic images have labels, so i2i exists for every model
            assert set(rec["metrics"][group]) >= {"r1", "r5", "r10"}
            assert all(0 <= rec["metrics"][group][k] <= 100 for k in ("r1", "r5", "r10"))
        assert rec["config"]["model"]["adapter"] == model
        assert rec["config"]["dataset"]["n_test"] == 24
        assert rec["config_hash"] == config_hash(rec["config"])
        assert rec["tie_rule"] == TIE_RULE
        assert "torch" in rec["versions"] and "itr-bench" in rec["versions"]
        assert rec["wall_time_s"] > 0
        assert rec["device"].startswith("cpu")
        assert "selected_epoch" in rec and "trained_parts" in rec


def test_joint_model_metrics_are_consistent_and_towers_are_na(grid: Run) -> None:
    for method in ("zeroshot", "contrastive"):
        m = grid.record("vse_infty", method)["metrics"]
        parts = [m[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10")]
        assert m["rsum"] == pytest.approx(sum(parts))
        for d in ("i2t", "t2i"):
            assert m[d]["r1"] <= m[d]["r5"] <= m[d]["r10"]
    towers = grid.record("towers", "zeroshot")["metrics"]
    assert towers["i2t"] is None and towers["t2i"] is None and towers["rsum"] is None


def test_trained_cell_records_training(grid: Run) -> None:
    zs, ft = grid.record("vse_infty", "zeroshot"), grid.record("vse_infty", "contrastive")
    assert zs["selected_epoch"] is None and zs["trained_parts"] == [] and zs["history"] == []
    assert "train" not in zs["config"]
    assert 1 <= ft["selected_epoch"] <= EPOCHS
    assert len(ft["history"]) == EPOCHS
    assert ft["trained_parts"], "a contrastive cell must name what it trained"
    assert ft["frozen_backbone"] is True  # CPU: frozen backbone on cached features
    assert ft["config"]["train"]["epochs"] == EPOCHS
    assert ft["metrics_last"] is not None


def test_contrastive_rsum_beats_zeroshot(grid: Run) -> None:
    rows = parse_markdown(grid.out)
    table_zs, table_ft = (
        float(rows[("vse_infty", "zeroshot")]["RSUM"]),
        float(rows[("vse_infty", "contrastive")]["RSUM"]),
    )
    assert table_ft > table_zs
    zs, ft = grid.record("vse_infty", "zeroshot"), grid.record("vse_infty", "contrastive")
    assert ft["metrics"]["rsum"] > zs["metrics"]["rsum"]
    assert table_ft == pytest.approx(ft["metrics"]["rsum"], abs=0.051)
    assert table_zs == pytest.approx(zs["metrics"]["rsum"], abs=0.051)


def test_rerun_skips_every_cell_and_leaves_files_alone(grid: Run) -> None:
    before = snapshot(grid.results)
    rc, out, err = run_main(["run", "--config", str(grid.config), "-q"])
    assert rc == 0, err
    assert any("0 ran, 3 skipped" in line for line in bench_lines(err))
    assert snapshot(grid.results) == before
    assert parse_markdown(out) == parse_markdown(grid.out)


def test_force_reruns_a_done_cell(grid: Run, tmp_path: Path) -> None:
    config, results = grid.clone(tmp_path)
    towers, vse = result_path(results, "towers", "zeroshot"), result_path(results, "vse_infty", "zeroshot")
    towers_before, vse_before = towers.stat().st_mtime_ns, vse.stat().st_mtime_ns
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "--force", "-q"])
    assert rc == 0, err
    assert any("1 ran, 0 skipped" in line for line in bench_lines(err))
    assert towers.stat().st_mtime_ns != towers_before
    assert vse.stat().st_mtime_ns == vse_before
    assert read_record(towers)["metrics"] == grid.record("towers", "zeroshot")["metrics"]


def test_models_and_methods_select_one_cell(grid: Run, tmp_path: Path) -> None:
    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=grid.work)
    rc, out, err = run_main(["run", "--config", str(config), "--models", "towers", "--methods", "zeroshot", "-q"])
    assert rc == 0, err
    assert any("1 cell(s)" in line for line in bench_lines(err))
    assert [p.relative_to(results / "runs").as_posix() for p in (results / "runs").rglob("*.json")] == [
        "towers/synthetic/test/zeroshot-seed0.json"
    ]
    assert set(parse_markdown(out)) == {("towers", "zeroshot")}


def test_unknown_model_exits_2_with_one_line_listing_known(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(grid.results)
    assert main(["run", "--config", str(grid.config), "--models", "nope"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bench: error:")
    assert "'nope'" in lines[0] and "towers" in lines[0] and "vse_infty" in lines[0]
    assert snapshot(grid.results) == before


def test_unknown_set_key_exits_2_naming_it(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(grid.results)
    assert main(["run", "--config", str(grid.config), "--set", "train.nope=1"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert "'nope'" in lines[0] and "[train]" in lines[0] and "epochs" in lines[0]
    assert snapshot(grid.results) == before


# ---------------------------------------------------------------------------------------------------------------
# bench table


def test_table_markdown_matches_the_run(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--config", str(grid.config)]) == 0
    out, _ = capsys.readouterr()
    assert "### synthetic (test)" in out
    assert parse_markdown(out) == parse_markdown(grid.out)


def _row_order(out: str) -> list[tuple[str, str]]:
    return list(parse_markdown(out))  # dicts keep the table's row order


def test_table_rows_follow_the_grid_not_the_alphabet(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--config", str(grid.config)]) == 0
    assert _row_order(capsys.readouterr()[0]) == CELLS  # models as configured, zeroshot before contrastive
    assert _row_order(grid.out) == CELLS  # and bench run prints the same order
    assert main(["table", "--config", str(grid.config), "--models", "towers"]) == 0
    assert _row_order(capsys.readouterr()[0]) == [("towers", "zeroshot")]
    assert main(["table", "--config", str(grid.config), "--methods", "contrastive"]) == 0
    assert _row_order(capsys.readouterr()[0]) == [("vse_infty", "contrastive")]


def test_an_ad_hoc_unavailable_row_stays_out_of_later_tables(
    grid: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, results = grid.clone(tmp_path)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "clip:ViT-B-32/openai", "--methods", "zeroshot"])
    assert rc == 1 and "weights unavailable" in err  # nothing ran, offline
    assert "Failed to download" not in err  # open_clip's own root-logger error is not shown before our line
    assert main(["table", "--config", str(config)]) == 0
    assert _row_order(capsys.readouterr()[0]) == CELLS
    assert main(["table", "--config", str(config), "--all"]) == 0
    assert ("clip:ViT-B-32/openai", "zeroshot") in _row_order(capsys.readouterr()[0])
    assert main(["rm", "--config", str(config), "--status", "unavailable", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr()[0]
    assert main(["rm", "--config", str(config), "--status", "unavailable"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("removed ") == 1 and "clip" in out
    assert main(["table", "--config", str(config), "--all"]) == 0
    assert _row_order(capsys.readouterr()[0]) == CELLS
    assert sum(1 for _ in (results / "runs").rglob("*.json")) == len(CELLS)  # the ok records are untouched


def test_rm_needs_a_selection(grid: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, results = grid.clone(tmp_path)
    assert main(["rm", "--config", str(config), "--status", "any"]) == 2
    assert "name what to remove" in capsys.readouterr()[1]
    assert sum(1 for _ in (results / "runs").rglob("*.json")) == len(CELLS)


def test_table_csv_holds_the_stored_numbers(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--config", str(grid.config), "--format", "csv"]) == 0
    out, _ = capsys.readouterr()
    rows = {(r["model"], r["method"]): r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == set(CELLS)
    for model, method in CELLS:
        metrics = grid.record(model, method)["metrics"]
        assert float(rows[(model, method)]["t2t_r1"]) == pytest.approx(metrics["t2t"]["r1"], abs=1e-5)
        assert rows[(model, method)]["status"] == "ok"
    for model, method in CELLS[:2]:
        assert float(rows[(model, method)]["rsum"]) == pytest.approx(grid.record(model, method)["metrics"]["rsum"])
    assert rows[("towers", "zeroshot")]["i2t_r1"] == "n/a"
    assert rows[("towers", "zeroshot")]["rsum"] == "n/a"


def test_table_latex_fragment(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--config", str(grid.config), "--format", "latex"]) == 0
    out, _ = capsys.readouterr()
    assert r"\begin{tabular}" in out and r"\toprule" in out and r"\bottomrule" in out
    assert r"\documentclass" not in out
    assert r"vse\_infty" in out and "n/a" in out
    zs = grid.record("vse_infty", "zeroshot")["metrics"]["rsum"]
    assert f"{zs:.1f}" in out


def test_table_latex_standalone_to_file(grid: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "sub" / "f.tex"
    argv = ["table", "--config", str(grid.config), "--format", "latex", "--standalone", "--out", str(out_file)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert str(out_file) in err
    tex = out_file.read_text()
    assert tex.startswith(r"\documentclass")
    assert r"\usepackage{booktabs}" in tex
    assert tex.rstrip().endswith(r"\end{document}")
    assert tex.count(r"\begin{tabular}") == 1


def test_table_plot_writes_png(grid: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    png = tmp_path / "p.png"
    assert main(["table", "--config", str(grid.config), "--plot", str(png)]) == 0
    out, err = capsys.readouterr()
    assert "### synthetic (test)" in out
    assert str(png) in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.width > 100 and im.height > 100


def test_table_without_results_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=tmp_path / "work")
    assert main(["table", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:")
    assert str(results) in lines[0] and "no results" in lines[0] and "bench run" in lines[0]
    assert not results.exists()


# ---------------------------------------------------------------------------------------------------------------
# bench list, bench score


def test_list_shows_adapters_models_and_methods(grid: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--config", str(grid.config)]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    adapters = next(line for line in lines if line.startswith("adapters:"))
    assert {"clip", "towers", "vse_infty"} <= {a.strip() for a in adapters.removeprefix("adapters:").split(",")}
    methods = next(line for line in lines if line.startswith("methods:"))
    assert {"zeroshot", "contrastive"} <= {m.strip() for m in methods.removeprefix("methods:").split(",")}
    formats = next(line for line in lines if line.startswith("dataset formats:"))
    assert "synthetic" in formats and "flat_json" in formats
    models = lines[lines.index("models:") + 1 : lines.index("datasets:")]
    assert sorted(line.split()[0] for line in models) == ["towers", "vse_infty"]


def test_score_is_dispatched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 8)).astype(np.float32)
    c2i = np.repeat(np.arange(6), 2)
    for name, arr in (("I", images), ("T", images[c2i]), ("M", c2i)):
        np.save(tmp_path / f"{name}.npy", arr)
    argv = ["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy")]
    assert main([*argv, "--text-to-image", str(tmp_path / "M.npy"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"i2t", "t2i", "t2t", "rsum"}
    assert result["i2t"]["r1"] == result["t2i"]["r1"] == 100.0  # each caption is its image's own embedding
