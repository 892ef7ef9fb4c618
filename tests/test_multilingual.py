"""Multilingual sets: XM3600's and Multi30K's release layouts, one cell per language, records naming the language,
and ``bench table``'s column per language."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bench.config import config_from_dict, dataset_members
from bench.data import load_split
from bench.errors import ConfigError, DataError
from tests.tiny_grid import run_main, write_config

CAPTIONS = {
    "en": ["a red square on a white field", "a red block"],
    "de": ["ein rotes Quadrat auf weißem Grund", "ein roter Block", "rot"],
    "zh": ["白色背景上的红色方块"],
}


def _images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (32, 32), (40 * i % 255, 90, 200 - 20 * i)).save(folder / name, format="JPEG")


def write_xm3600(root: Path, n: int = 6) -> Path:
    """A tiny release in Google's layout: captions.jsonl and images/<key>.jpg."""
    keys = [f"{i:016x}" for i in range(n)]
    _images(root / "images", [f"{k}.jpg" for k in keys])
    with open(root / "captions.jsonl", "w", encoding="utf-8") as f:
        for i, k in enumerate(keys):
            row = {"image/key": k, "image/locale": "en"}
            for lang, caps in CAPTIONS.items():
                row[lang] = {"caption": [f"{c} {i}" for c in caps], "caption/tokenized": []}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return root


def test_xm3600_reads_every_caption_of_the_language(tmp_path: Path) -> None:
    root = write_xm3600(tmp_path)
    de = load_split("xm", {"format": "xm3600", "root": str(root), "language": "de"}, "test", work_dir=tmp_path)
    assert de.n_images == 6 and de.n_captions == 18
    assert de.captions[:3] == ["ein rotes Quadrat auf weißem Grund 0", "ein roter Block 0", "rot 0"]
    zh = load_split("xm", {"format": "xm3600", "root": str(root), "language": "zh"}, "test", work_dir=tmp_path)
    assert zh.captions[5] == "白色背景上的红色方块 5"
    first = load_split("xm", {"format": "xm3600", "root": str(root), "language": "de", "first_caption_only": True},
                       "test", work_dir=tmp_path)  # fmt: skip
    assert first.n_captions == 6 and list(first.captions) == [de.captions[3 * i] for i in range(6)]
    with pytest.raises(ConfigError, match=r"no captions in language 'fr' \(option 'language'\); languages: de, en, zh"):
        load_split("xm", {"format": "xm3600", "root": str(root), "language": "fr"}, "test", work_dir=tmp_path)


def test_multi30k_task1_layout_with_gzip(tmp_path: Path) -> None:
    names = [f"{1000 + i}.jpg" for i in range(5)]
    _images(tmp_path / "images", names)
    (tmp_path / "data/task1/image_splits").mkdir(parents=True)
    (tmp_path / "data/task1/raw").mkdir(parents=True)
    (tmp_path / "data/task1/image_splits/test_2016_flickr.txt").write_text("\n".join(names) + "\n")
    with gzip.open(tmp_path / "data/task1/raw/test_2016_flickr.de.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(f"Ein Hund läuft {i}." for i in range(5)) + "\n")
    (tmp_path / "data/task1/raw/test_2016_flickr.en").write_text("\n".join(f"A dog runs {i}." for i in range(4)))
    de = load_split("m", {"format": "multi30k", "root": str(tmp_path), "language": "de"}, "test", work_dir=tmp_path)
    assert list(de.image_ids) == names and de.captions[4] == "Ein Hund läuft 4."
    with pytest.raises(DataError, match=r"test_2016_flickr\.en: 4 captions for the 5 images of test_2016_flickr\.txt"):
        load_split("m", {"format": "multi30k", "root": str(tmp_path), "language": "en"}, "test", work_dir=tmp_path)


def test_languages_expand_into_one_dataset_each() -> None:
    cfg = config_from_dict({"datasets": {"xm": {"format": "xm3600", "root": "/x", "languages": ["en", "de"]}}})
    assert dataset_members(cfg, "xm") == ["xm-en", "xm-de"]
    assert cfg.datasets["xm-de"] == {"format": "xm3600", "root": "/x", "language": "de"}
    with pytest.raises(ConfigError, match=r"\[datasets\.xm\]\.languages: expected a list of language codes"):
        config_from_dict({"datasets": {"xm": {"format": "xm3600", "languages": "en"}}})
    with pytest.raises(ConfigError, match=r"\[datasets\.xm-de\] differs from language 'de' of \[datasets\.xm\]"):
        config_from_dict({"datasets": {"xm": {"format": "xm3600", "languages": ["de"]},
                                       "xm-de": {"format": "xm3600", "language": "fr"}}})  # fmt: skip


def test_a_grid_runs_a_cell_per_language_and_tables_them_side_by_side(tmp_path: Path) -> None:
    root = write_xm3600(tmp_path / "xm3600", n=8)
    cfg = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cfg.write_text(cfg.read_text() + f'\n[datasets.xm]\nformat = "xm3600"\nroot = "{root}"\nlanguages = ["en", "de"]\n')
    rc, _, err = run_main(["run", "--config", str(cfg), "--models", "towers", "--methods", "zeroshot",
                           "--datasets", "xm", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    runs = tmp_path / "results" / "runs" / "towers"
    records = {lang: json.loads((runs / f"xm-{lang}" / "test" / "zeroshot-seed0.json").read_text()) for lang in
               ("en", "de")}  # fmt: skip
    assert {r["language"] for r in records.values()} == {"en", "de"}
    assert records["de"]["metrics"]["t2t"]["n_queries"] != records["en"]["metrics"]["t2t"]["n_queries"]  # 24 vs 16
    rc, out, err = run_main(["table", "--config", str(cfg), "--models", "towers", "--methods", "zeroshot",
                             "--datasets", "xm", "--languages", "t2t_r1", "--format", "csv"])  # fmt: skip
    assert rc == 0, err
    header, row = out.strip().splitlines()[:2]
    assert header == "set,split,model,method,en,de,mean"
    en, de = (records[x]["metrics"]["t2t"]["r1"] for x in ("en", "de"))
    assert row.split(",")[:4] == ["xm", "test", "towers", "zeroshot"]
    assert [float(v) for v in row.split(",")[4:]] == pytest.approx([en, de, (en + de) / 2], abs=1e-6)
    rc, out, _ = run_main(["table", "--config", str(cfg), "--models", "towers", "--methods", "zeroshot",
                           "--datasets", "xm"])  # fmt: skip
    assert rc == 0 and "### xm (test): rsum per language" in out and "### xm-de (test)" in out


def test_language_tables_escape_names_and_average_the_languages() -> None:
    from bench.report.languages import render_languages

    recs = [{"dataset": f"xm-{lang}", "split": "test", "model": "clip_b&w", "method": "zeroshot", "seed": 0,
             "status": "ok", "language": lang, "metrics": {"i2t": {"r1": 1.0, "r5": 2.0, "r10": 3.0},
                                                           "t2i": {"r1": 1.0, "r5": 2.0, "r10": 3.0}, "rsum": v}}
            for lang, v in (("en", 12.0), ("de", 8.0))]  # fmt: skip
    latex = render_languages(recs, "latex")
    assert r"clip\_b\&w & zeroshot & 12.0 & 8.0 & 10.0 \\" in latex  # a name with LaTeX specials compiles
    assert "| clip_b&w | zeroshot | 12.0 |  8.0 |   10.0 |" in render_languages(recs, "markdown")
    assert render_languages(recs[:1], "markdown") == ""  # one language: no side-by-side table
