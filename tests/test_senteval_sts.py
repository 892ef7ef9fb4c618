"""SentEval's STS12-16 layout: loading, dropped pairs without gold, and the paper's "all" Spearman (scipy parity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from bench.data import load_split
from bench.errors import ConfigError, DataError
from bench.scoring.unimodal import sts_metrics

SUBSETS = {
    "MSRpar": [("A man is  playing a guitar.", "A man plays the guitar.", "4.2"),
               ("A dog runs.", "A cat sleeps.", ""),  # no gold score: SentEval drops the pair
               ("Two kids are swimming.", "Children swim in a pool.", "3.8")],
    "headlines": [("Stocks fall in Asia", "Asian markets drop", "4.6"), ("Rain expected", "Sunny day ahead", "0.4"),
                  ("Team wins final", "Club takes the title", "3.9")],
}  # fmt: skip


def make_sts(root: Path, year: int = 12) -> Path:
    folder = root / f"STS{year}-en-test"
    folder.mkdir(parents=True)
    for subset, rows in SUBSETS.items():
        (folder / f"STS.input.{subset}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in rows), encoding="utf-8")
        (folder / f"STS.gs.{subset}.txt").write_text("".join(f"{g}\n" for _, _, g in rows), encoding="utf-8")
    return root


def test_senteval_sts_loads_and_scores_all_as_the_paper(tmp_path: Path) -> None:
    root = make_sts(tmp_path)
    split = load_split("sts12", {"format": "senteval_sts", "root": str(root), "year": 12}, "test", work_dir=tmp_path)
    assert split.n_pairs == 5 and set(split.groups) == {"STS12"}
    assert split.sentence1[0] == "A man is playing a guitar."  # whitespace tokens joined, as SentEval reads them
    assert "A dog runs." not in split.sentence1
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    got = sts_metrics(e1, e2, split.scores, split.groups)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert got["STS12"] == pytest.approx(100 * spearmanr(cos, split.scores).statistic, abs=1e-9)
    per = load_split("s", {"format": "senteval_sts", "root": str(root), "groups": "subsets"}, "test", work_dir=tmp_path)
    assert per.group_names() == ["MSRpar", "headlines"]


def test_senteval_sts_refuses_broken_layouts(tmp_path: Path) -> None:
    root = make_sts(tmp_path)
    spec = {"format": "senteval_sts", "root": str(root)}
    with pytest.raises(ConfigError, match="option 'year'"):
        load_split("s", {**spec, "year": 17}, "test", work_dir=tmp_path)
    with pytest.raises(DataError, match="STS13-en-test: no STS.input"):
        load_split("s", {**spec, "year": 13}, "test", work_dir=tmp_path)
    gold = root / "STS12-en-test" / "STS.gs.headlines.txt"
    gold.write_text("4.6\nhigh\n3.9\n")
    with pytest.raises(DataError, match=r"STS.gs.headlines.txt line 2: field 'score' must be a number"):
        load_split("s", spec, "test", work_dir=tmp_path)
    gold.write_text("4.6\n")
    with pytest.raises(DataError, match="STS.gs.headlines.txt: 1 lines, but STS.input.headlines.txt has 3"):
        load_split("s", spec, "test", work_dir=tmp_path)
    gold.unlink()
    with pytest.raises(DataError, match="no gold file STS.gs.headlines.txt"):
        load_split("s", spec, "test", work_dir=tmp_path)
    (root / "STS12-en-test" / "STS.input.MSRpar.txt").write_bytes(b"caf\xe9\tok\n")
    with pytest.raises(DataError, match="STS.input.MSRpar.txt"):
        load_split("s", spec, "test", work_dir=tmp_path)
