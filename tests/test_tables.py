"""Tests for bench.report.tables: aggregation over seeds, Markdown/CSV/LaTeX rendering, record files, pdflatex and the
plot."""

from __future__ import annotations

import difflib
import io
import math
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.report.tables import collect, plot_recall_at_k, render

RECORDS = Path(__file__).parent / "records"
KS = ("r1", "r5", "r10")
MD_METRIC_HEADERS = [f"{g} R@{k}" for g in ("i2t", "t2i") for k in (1, 5, 10)]


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _block(r1: float, r5: float, r10: float) -> dict[str, float]:
    return {"r1": r1, "r5": r5, "r10": r10, "medr": 2.0, "meanr": 5.0}


def _rec(
    model: str,
    method: str,
    seed: int = 0,
    *,
    dataset: str = "synthetic",
    split: str = "test",
    i2t: dict[str, float] | None = None,
    t2i: dict[str, float] | None = None,
    **extra_metrics: dict[str, float] | None,
) -> dict[str, Any]:
    """A result record as bench.grid.records writes it; RSUM is derived from i2t and t2i like the runner does."""
    rsum = None if i2t is None or t2i is None else sum(i2t[k] + t2i[k] for k in KS)
    metrics: dict[str, Any] = {"i2t": i2t, "t2i": t2i, "rsum": rsum, **extra_metrics}
    return {
        "schema": 1,
        "model": model,
        "adapter": model,
        "dataset": dataset,
        "split": split,
        "method": method,
        "seed": seed,
        "metrics": metrics,
    }


def _problem(model: str, method: str, status: str, reason: str, *, dataset: str = "synthetic") -> dict[str, Any]:
    return {"schema": 1, "model": model, "dataset": dataset, "split": "test", "method": method, "seed": 0,
            "status": status, "reason": reason, "metrics": None}  # fmt: skip


def _two_seed_records() -> list[dict[str, Any]]:
    return [
        _rec("vse", "contrastive", 0, i2t=_block(40.0, 70.0, 80.0), t2i=_block(30.0, 60.0, 70.0)),
        _rec("vse", "contrastive", 1, i2t=_block(42.0, 71.0, 83.0), t2i=_block(31.0, 62.0, 74.0)),
        _rec("vse", "zeroshot", 0, i2t=_block(20.0, 50.0, 60.0), t2i=_block(15.0, 40.0, 50.0)),
    ]


def _md_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Parse rendered Markdown: heading -> rows as {header: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header = "", None
    for line in text.splitlines():
        if line.startswith("### "):
            heading, header = line[4:], None
            tables[heading] = []
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set(":-"):
                tables[heading].append(dict(zip(header, cells, strict=True)))
    return tables


def _md_row(rows: list[dict[str, str]], model: str, method: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["Model"] == model and r["Method"] == method]
    return row


def _tex_rows(table: str) -> list[list[str]]:
    """Header and body rows (``a & b \\\\``) of one LaTeX table, the multicolumn header row left out."""
    return [
        [cell.strip() for cell in re.split(r"(?<!\\)&", line.removesuffix(r"\\"))]
        for line in table.splitlines()
        if line.endswith(r"\\") and r"\multicolumn" not in line
    ]


def _tex_tables(text: str) -> list[str]:
    return [t.split(r"\end{table}")[0] for t in text.split(r"\begin{table}")[1:]]


def _tex_as_dicts(table: str) -> list[dict[str, str]]:
    """Body rows of one LaTeX table as {header: cell}, with "i2t R@1"-style keys like the Markdown headers."""
    header, *body = _tex_rows(table)
    names = {r"Image $\to$ Text": "i2t", r"Text $\to$ Image": "t2i", r"Text $\to$ Text": "t2t",
             r"Image $\to$ Image": "i2i"}  # fmt: skip
    groups = iter([names[g] for g in re.findall(r"\\multicolumn\{3\}\{c\}\{([^}]*)\}", table) for _ in range(3)])
    keys = [f"{next(groups)} {h}" if h.startswith("R@") else h for h in header]
    return [dict(zip(keys, cells, strict=True)) for cells in body]


def _check_record(name: str, text: str) -> None:
    """Compare ``text`` with the record file ``tests/records/<name>`` (submitit style)."""
    path = RECORDS / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.fail(f"record file {path} did not exist, so it was created from this run; check it and rerun")
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "rendered now")
        )
        pytest.fail(f"rendering differs from {path}; delete the record file to accept the change.\n{diff}")


def _fixed_records() -> list[dict[str, Any]]:
    """A small grid touching every rendering rule: seeds, ties, n/a, missing values, failures, specials, 2 datasets."""
    return [
        _rec("vse_infty", "contrastive", 0, i2t=_block(41.0, 70.2, 80.0), t2i=_block(30.0, 60.0, 71.0),
             t2t=_block(20.0, 40.0, 50.0)),
        _rec("vse_infty", "contrastive", 1, i2t=_block(43.0, 71.0, 81.6), t2i=_block(31.0, 61.5, 72.0),
             t2t=_block(22.0, 41.0, 52.0)),
        _rec("vse_infty", "zeroshot", 0, i2t=_block(20.0, 45.0, 81.0), t2i=_block(18.0, 40.0, 50.0)),
        _rec("vse_infty", "cusa", 0, i2t=_block(44.5, 72.0, 81.8), t2i=_block(33.0, 62.0, 72.5),
             t2t=_block(25.0, 44.0, 55.0)),
        _rec("bow_50%&#", "zeroshot", 0, i2t=None, t2i=None, t2t=_block(35.0, 55.0, 66.0)),
        _problem("clip_vit", "zeroshot", "unavailable", "weights not cached and the hub is offline"),
        _problem("clip_vit", "contrastive", "failed", "CUDA out of memory (batch 128)"),
        _rec("vse_infty", "zeroshot", 0, dataset="coco", split="test_5k", i2t=_block(10.0, 30.0, 40.0),
             t2i=_block(8.0, 25.0, 35.0), i2i=_block(12.0, 30.0, 41.0)),
        _rec("vse_infty", "contrastive", 0, dataset="coco", split="test_5k", i2t=_block(15.0, 38.0, 50.0),
             t2i=_block(11.0, 30.0, 42.0), i2i=_block(12.0, 33.0, 44.0)),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# collect


def test_collect_aggregates_seeds_with_sample_std() -> None:
    df = collect(_two_seed_records())
    row = df[(df["model"] == "vse") & (df["method"] == "contrastive")].iloc[0]
    assert row["seeds"] == 2
    assert row["i2t_r1"] == pytest.approx(41.0)
    assert row["i2t_r1_std"] == pytest.approx(statistics.stdev([40.0, 42.0]))
    assert row["rsum"] == pytest.approx((350.0 + 363.0) / 2)
    assert row["rsum_std"] == pytest.approx(statistics.stdev([350.0, 363.0]))
    single = df[df["method"] == "zeroshot"].iloc[0]
    assert single["seeds"] == 1 and math.isnan(single["i2t_r1_std"])


def test_collect_orders_zeroshot_first_then_first_appearance() -> None:
    recs = [
        _rec("b", "cusa", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),
        _rec("a", "contrastive", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),
        _rec("b", "zeroshot", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),
        _rec("b", "contrastive", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),
        _rec("a", "zeroshot", dataset="coco", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),
    ]
    df = collect(recs)
    assert list(zip(df["dataset"], df["model"], df["method"], strict=True)) == [
        ("synthetic", "b", "zeroshot"),
        ("synthetic", "b", "cusa"),
        ("synthetic", "b", "contrastive"),
        ("synthetic", "a", "contrastive"),
        ("coco", "a", "zeroshot"),
    ]


def test_collect_derives_rsum_when_the_record_has_none() -> None:
    rec = _rec("m", "zeroshot", i2t=_block(10, 20, 30), t2i=_block(5, 15, 25))
    del rec["metrics"]["rsum"]
    assert collect([rec])["rsum"].iloc[0] == pytest.approx(105.0)


def test_collect_averages_ok_seeds_and_notes_a_failed_one() -> None:
    recs = [*_two_seed_records()[:1], {**_problem("vse", "contrastive", "failed", "disk full"), "seed": 1}]
    row = collect(recs).iloc[0]
    assert row["status"] == "ok" and row["seeds"] == 1
    assert row["i2t_r1"] == pytest.approx(40.0)
    assert "seed 1" in row["note"] and "disk full" in row["note"]


# --------------------------------------------------------------------------------------------------------------------
# means, stds, bold


def test_markdown_shows_mean_pm_std_and_seed_count() -> None:
    text = render(_two_seed_records(), "markdown")
    assert text.startswith("### synthetic (test)\n")
    rows = _md_tables(text)["synthetic (test)"]
    row = _md_row(rows, "vse", "contrastive")
    assert row["Seeds"] == "2"
    assert row["i2t R@1"] == "**41.0** ± 1.4"
    assert row["RSUM"] == f"**356.5** ± {statistics.stdev([350.0, 363.0]):.1f}"
    zs = _md_row(rows, "vse", "zeroshot")
    assert zs["Seeds"] == "1" and zs["i2t R@1"] == "20.0"  # one seed: no ± and not the best


def test_latex_shows_mean_pm_std() -> None:
    (table,) = _tex_tables(render(_two_seed_records(), "latex"))
    rows = {(r["Model"], r["Method"]): r for r in _tex_as_dicts(table)}
    assert rows[("vse", "contrastive")]["i2t R@1"] == r"\textbf{41.0} {\scriptsize$\pm$1.4}"
    assert rows[("vse", "contrastive")]["Seeds"] == "2"
    assert rows[("vse", "zeroshot")]["t2i R@10"] == "50.0"


def test_csv_parses_back_to_the_same_numbers() -> None:
    recs = [*_two_seed_records(), _rec("txt", "zeroshot", i2t=None, t2i=None, t2t=_block(5, 6, 7))]
    back = pd.read_csv(io.StringIO(render(recs, "csv")))
    df = collect(recs)
    assert len(back) == len(df) == 3
    assert list(back[["model", "method"]].itertuples(index=False, name=None)) == [
        ("vse", "zeroshot"),
        ("vse", "contrastive"),
        ("txt", "zeroshot"),
    ]
    for col in ("i2t_r1", "i2t_r1_std", "t2i_r10", "rsum", "rsum_std", "t2t_r5", "seeds"):
        assert pd.api.types.is_numeric_dtype(back[col]), col
        pd.testing.assert_series_equal(back[col], df[col], check_names=False, check_dtype=False, atol=1e-5)
    assert back.loc[1, "i2t_r1"] == pytest.approx(41.0)
    assert back.loc[1, "i2t_r1_std"] == pytest.approx(statistics.stdev([40.0, 42.0]), abs=1e-5)
    assert not any("**" in str(v) or "±" in str(v) for v in back.to_numpy().ravel())
    # n/a is spelled out in the file (not 0, not blank) yet still reads back as a missing number.
    raw = render(recs, "csv").splitlines()[3]
    assert raw.startswith("synthetic,test,txt,zeroshot,ok,1,n/a,")
    assert math.isnan(back.loc[2, "i2t_r1"]) and math.isnan(back.loc[2, "rsum"])


def _bold_expectation(recs: list[dict[str, Any]], header: str) -> set[tuple[str, str]]:
    """Rows whose rounded mean is the column maximum, computed from the records, not from the rendering."""
    direction, k = header.split(" R@")
    means: dict[tuple[str, str], list[float]] = {}
    for r in recs:
        block = r["metrics"][direction]
        if block is not None:
            means.setdefault((r["model"], r["method"]), []).append(block[f"r{k}"])
    rounded = {key: round(statistics.mean(v), 1) for key, v in means.items()}
    return {key for key, v in rounded.items() if v == max(rounded.values())}


def _bold_records() -> list[dict[str, Any]]:
    return [
        _rec("a", "zeroshot", i2t=_block(30.0, 60.0, 90.0), t2i=_block(20.0, 50.0, 70.0)),
        _rec("a", "contrastive", i2t=_block(35.0, 60.0, 85.0), t2i=_block(25.0, 49.0, 71.0)),
        _rec("b", "zeroshot", i2t=_block(35.04, 55.0, 80.0), t2i=_block(10.0, 30.0, 40.0)),  # ties 35.0 as shown
        _rec("c", "zeroshot", i2t=None, t2i=None, t2t=_block(1.0, 2.0, 3.0)),
    ]


def test_markdown_bolds_exactly_the_best_per_column_ties_included() -> None:
    recs = _bold_records()
    rows = _md_tables(render(recs, "markdown"))["synthetic (test)"]
    for header in MD_METRIC_HEADERS:
        bold = {(r["Model"], r["Method"]) for r in rows if r[header].startswith("**")}
        assert bold == _bold_expectation(recs, header), header
    assert {(r["Model"], r["Method"]) for r in rows if r["i2t R@1"].startswith("**")} == {
        ("a", "contrastive"),
        ("b", "zeroshot"),
    }


def test_latex_bolds_exactly_the_best_per_column() -> None:
    recs = _bold_records()
    (table,) = _tex_tables(render(recs, "latex"))
    rows = _tex_as_dicts(table)
    for header in MD_METRIC_HEADERS:
        bold = {(r["Model"], r["Method"]) for r in rows if r[header].startswith(r"\textbf{")}
        assert bold == _bold_expectation(recs, header), header


# --------------------------------------------------------------------------------------------------------------------
# n/a, missing values, dropped groups


def test_null_metrics_print_na_never_zero_never_bold() -> None:
    recs = _bold_records()
    for fmt, bold in (("markdown", "**"), ("latex", r"\textbf")):
        text = render(recs, fmt)
        if fmt == "markdown":
            row = _md_row(_md_tables(text)["synthetic (test)"], "c", "zeroshot")
        else:
            (row,) = [r for r in _tex_as_dicts(_tex_tables(text)[0]) if r["Model"] == "c"]
        for header in [*MD_METRIC_HEADERS, "RSUM"]:
            assert row[header] == "n/a", (fmt, header)
        assert not any(bold in v and "n/a" in v for v in row.values())


def test_na_is_not_bold_even_when_it_is_the_only_entry() -> None:
    recs = [
        _rec("c", "zeroshot", i2t=None, t2i=None, t2t=_block(1.0, 2.0, 3.0)),
        _rec("d", "zeroshot", i2t=None, t2i=None, t2t=_block(4.0, 5.0, 6.0)),
        _rec("e", "zeroshot", i2t=_block(1.0, 2.0, 3.0), t2i=_block(1.0, 2.0, 3.0), t2t=_block(0.5, 1.0, 2.0)),
    ]
    rows = _md_tables(render(recs, "markdown"))["synthetic (test)"]
    assert [r["i2t R@1"] for r in rows] == ["n/a", "n/a", "1.0"]  # the one number has nothing to beat
    assert [r["t2t R@1"] for r in rows] == ["1.0", "**4.0**", "0.5"]


def test_value_missing_for_one_row_shows_dash_and_absent_group_is_dropped() -> None:
    recs = [
        _rec("a", "zeroshot", i2t=_block(10, 20, 30), t2i=_block(10, 20, 30), t2t=_block(5, 6, 7)),
        _rec("a", "contrastive", i2t=_block(11, 21, 31), t2i=_block(11, 21, 31)),  # no t2t measured
    ]
    md = render(recs, "markdown")
    rows = _md_tables(md)["synthetic (test)"]
    assert _md_row(rows, "a", "contrastive")["t2t R@1"] == "–"
    assert _md_row(rows, "a", "zeroshot")["t2t R@1"] == "5.0"
    assert "i2i" not in md and "Seeds" not in rows[0] and "Note" not in rows[0]
    tex = render(recs, "latex")
    assert "Text $\\to$ Text" in tex and "Image $\\to$ Image" not in tex
    assert " & -- & -- & -- \\\\" in tex
    assert "i2i_r1" not in render(recs, "csv")


# --------------------------------------------------------------------------------------------------------------------
# ΔRSUM and unavailable rows


def test_delta_rsum_against_the_baseline_method() -> None:
    recs = [
        _rec("m", "zeroshot", i2t=_block(10, 20, 30), t2i=_block(10, 20, 30)),  # RSUM 120
        _rec("m", "contrastive", i2t=_block(20, 30, 40), t2i=_block(10, 20, 30)),  # 150
        _rec("m", "cusa", i2t=_block(21.2, 30, 40), t2i=_block(10, 20, 30)),  # 151.2
        _rec("n", "zeroshot", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3)),  # no baseline for n
    ]
    rows = _md_tables(render(recs, "markdown", baseline_method="contrastive"))["synthetic (test)"]
    assert [(r["Model"], r["Method"], r["ΔRSUM"]) for r in rows] == [
        ("m", "zeroshot", "-30.0"),
        ("m", "contrastive", ""),
        ("m", "cusa", "+1.2"),
        ("n", "zeroshot", ""),
    ]
    assert "ΔRSUM" not in render(recs, "markdown")
    tex_rows = _tex_as_dicts(_tex_tables(render(recs, "latex", baseline_method="contrastive"))[0])
    assert [r["$\\Delta$RSUM"] for r in tex_rows] == ["$-$30.0", "", "+1.2", ""]
    back = pd.read_csv(io.StringIO(render(recs, "csv", baseline_method="contrastive")))
    assert back["delta_rsum"].tolist()[0] == pytest.approx(-30.0)
    assert back["delta_rsum"].tolist()[2] == pytest.approx(1.2)
    assert back["delta_rsum"].isna().tolist() == [False, True, False, True]


def test_unavailable_and_failed_rows_show_their_reason() -> None:
    recs = [
        *_two_seed_records(),
        _problem("clip", "zeroshot", "unavailable", "weights not cached (offline)"),
        _problem("blip", "contrastive", "failed", "CUDA out of memory"),
    ]
    rows = _md_tables(render(recs, "markdown"))["synthetic (test)"]
    clip = _md_row(rows, "clip", "zeroshot")
    assert clip["Note"] == "unavailable: weights not cached (offline)"
    assert all(clip[h] == "–" for h in [*MD_METRIC_HEADERS, "RSUM", "Seeds"])
    assert _md_row(rows, "blip", "contrastive")["Note"] == "failed: CUDA out of memory"
    assert _md_row(rows, "vse", "zeroshot")["Note"] == ""

    tex = render(recs, "latex")
    assert r"\textsuperscript{a}\,unavailable: weights not cached (offline)" in tex
    assert r"\textsuperscript{b}\,failed: CUDA out of memory" in tex
    assert r"clip & zeroshot\textsuperscript{a} & -- & --" in tex

    back = pd.read_csv(io.StringIO(render(recs, "csv")))
    row = back[back["model"] == "clip"].iloc[0]
    assert row["status"] == "unavailable" and "offline" in row["note"] and math.isnan(row["i2t_r1"])


# --------------------------------------------------------------------------------------------------------------------
# formats, filters, errors


def test_latex_structure_per_dataset_group() -> None:
    recs = _fixed_records()
    tex = render(recs, "latex")
    assert r"\documentclass" not in tex
    tables = _tex_tables(tex)
    assert len(tables) == 2
    for table, (dataset, split) in zip(tables, [("synthetic", "test"), ("coco", "test\\_5k")], strict=True):
        for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn{3}{c}", r"\cmidrule(lr)"):
            assert needle in table
        (caption,) = [line for line in table.splitlines() if line.startswith(r"\caption{")]
        assert dataset in caption and split in caption
    doc = render(recs, "latex", standalone=True)
    assert doc.startswith(r"\documentclass{article}") and r"\usepackage{booktabs}" in doc
    assert doc.rstrip().endswith(r"\end{document}") and r"\begin{document}" in doc


def test_latex_escapes_specials_in_names() -> None:
    recs = [_rec("a_b%c&d#e", "zeroshot", i2t=_block(1, 2, 3), t2i=_block(1, 2, 3))]
    tex = render(recs, "latex")
    assert r"a\_b\%c\&d\#e & zeroshot" in tex
    assert "a_b" not in tex and "–" not in tex


def test_markdown_heading_per_dataset_group_and_dataset_filter() -> None:
    recs = _fixed_records()
    md = render(recs, "markdown")
    assert list(_md_tables(md)) == ["synthetic (test)", "coco (test_5k)"]
    only = render(recs, "markdown", dataset="coco")
    assert list(_md_tables(only)) == ["coco (test_5k)"]
    with pytest.raises(ValueError, match="coco"):
        render(recs, "markdown", dataset="flickr30k")


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="csv, latex, markdown"):
        render(_two_seed_records(), "html")


def test_no_records_is_an_error() -> None:
    with pytest.raises(ValueError, match="no records"):
        render([], "markdown")


# --------------------------------------------------------------------------------------------------------------------
# record files, pdflatex, plot


def test_latex_matches_record_file() -> None:
    _check_record("table.tex", render(_fixed_records(), "latex", baseline_method="contrastive"))


def test_markdown_matches_record_file() -> None:
    _check_record("table.md", render(_fixed_records(), "markdown", baseline_method="contrastive"))


def test_standalone_latex_compiles_with_pdflatex(tmp_path: Path) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-base, texlive-latex-recommended)")
    tex = tmp_path / "tables.tex"
    tex.write_text(render(_fixed_records(), "latex", standalone=True, baseline_method="contrastive"))
    proc = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


def test_plot_recall_at_k_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    out = plot_recall_at_k(_fixed_records(), tmp_path / "plots" / "recall.png")
    assert out == tmp_path / "plots" / "recall.png"
    assert out.stat().st_size > 10_000
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.width > 500 and img.height > 300
        assert len(img.getcolors(maxcolors=1 << 20) or []) > 20  # lines, text and legend, not a blank canvas
