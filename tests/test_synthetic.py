"""The built-in synthetic dataset: determinism, sizes, paraphrases, near-duplicates, caching."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import load_split
from bench.data.synthetic import LABEL_NAMES, SPLITS, ensure_generated, synthetic_dir
from bench.errors import ConfigError, DataError

SMALL = {"n_train": 40, "n_val": 10, "n_test": 10, "image_size": 64}


def _load(work_dir: Path, split: str = "train", **opts: object):
    return load_split("synthetic", {"format": "synthetic", **SMALL, **opts}, split, work_dir=work_dir)


def _folder(work_dir: Path, seed: int = 0) -> Path:
    return synthetic_dir(work_dir / "synthetic", seed, 40, 10, 10, 64)


def _index(work_dir: Path, seed: int = 0) -> dict:
    return json.loads((_folder(work_dir, seed) / "index.json").read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def test_sizes_captions_and_labels(wd: Path) -> None:
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        s = _load(wd, split)
        assert (s.dataset, s.split, s.n_images, s.n_captions) == ("synthetic", split, n, 5 * n)
        assert [len(c) for c in s.image_to_captions()] == [5] * n
        assert s.image_labels is not None and s.image_labels.shape == (n,)
        assert s.image_labels.min() >= 0 and s.image_labels.max() < len(LABEL_NAMES)
        assert all(Path(p).is_file() for p in s.image_paths)
        with Image.open(s.image_paths[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert len(set(_load(wd, "train").image_labels.tolist())) > 5  # labels vary


def test_captions_are_pairwise_distinct_paraphrases(wd: Path) -> None:
    s = _load(wd)
    for i, rows in enumerate(s.image_to_captions()):
        caps = [s.captions[j] for j in rows]
        assert len(set(caps)) == 5, (i, caps)
    # Synonyms are used: the same colour is named in more than one way across the set.
    text = " ".join(s.captions).lower()
    assert sum(w in text for w in ("crimson", "cobalt", "emerald", "violet", "golden", "tangerine")) >= 2
    assert " box" in text or " block" in text or " disc" in text or " dot" in text


def test_label_is_first_and_largest_group_and_captions_name_it(wd: Path) -> None:
    idx = _index(wd)
    colours, shapes = ("red", "green", "blue", "yellow", "purple", "orange"), ("circle", "square", "triangle", "star")
    for row in idx["splits"]["train"]:
        g0 = row["scene"]["groups"][0]
        assert LABEL_NAMES[row["label"]] == f"{g0['colour']} {g0['shape']}"
        assert colours.index(g0["colour"]) * 4 + shapes.index(g0["shape"]) == row["label"]
        if any(g["size"] == "large" for g in row["scene"]["groups"]):
            assert g0["size"] == "large"
        # Objects stay inside the part of the image a 224 centre crop of a 256 resize keeps.
        for g in row["scene"]["groups"]:
            for x, y, r, _rgb in g["objects"]:
                assert 0.0625 * 64 <= min(x, y) - r and max(x, y) + r <= 0.9375 * 64


def test_determinism_same_seed_identical_bytes(tmp_path: Path, wd: Path) -> None:
    a = _load(wd, "test")
    b = _load(tmp_path, "test")
    assert list(a.captions) == list(b.captions)
    assert np.array_equal(a.image_labels, b.image_labels)
    assert _files(_folder(wd)) == _files(_folder(tmp_path))
    assert (_folder(wd) / "index.json").read_bytes() == (_folder(tmp_path) / "index.json").read_bytes()


def test_different_seed_differs(wd: Path) -> None:
    a, b = _load(wd, "test"), _load(wd, "test", seed=1)
    assert list(a.captions) != list(b.captions)
    assert _files(_folder(wd, 0)) != _files(_folder(wd, 1))


def test_splits_are_independent_streams(tmp_path: Path, wd: Path) -> None:
    tr, te = _load(wd, "train"), _load(wd, "test")
    assert not set(te.captions) <= set(tr.captions)
    # A split does not change when another split's size does.
    other = load_split("s", {**SMALL, "n_train": 7, "format": "synthetic"}, "test", work_dir=tmp_path)
    assert list(other.captions) == list(te.captions)


def test_near_duplicates_are_marked_and_alike(wd: Path) -> None:
    idx = _index(wd)
    for split in SPLITS:
        rows = idx["splits"][split]
        dups = [(i, r["duplicate_of"]) for i, r in enumerate(rows) if r["duplicate_of"] is not None]
        assert 1 <= len(dups) <= 0.3 * len(rows) + 1, split
        same_caps = 0
        for i, src in dups:
            assert 0 <= src < i and rows[src]["duplicate_of"] is None  # points at an earlier original
            a, b = rows[i], rows[src]
            assert a["label"] == b["label"]
            assert a["scene"]["background"] == b["scene"]["background"]

            def desc(row: dict) -> list:
                return [{k: v for k, v in g.items() if k != "objects"} for g in row["scene"]["groups"]]

            assert desc(a) == desc(b)
            assert [g["objects"] for g in a["scene"]["groups"]] != [g["objects"] for g in b["scene"]["groups"]]
            same_caps += a["captions"] == b["captions"]
        assert same_caps >= 1, split  # verbatim-caption duplicates exist: true false negatives
    # Their images differ (jittered), yet they are near: both render the same objects' colours.
    s = _load(wd)
    i, src = next((i, r["duplicate_of"]) for i, r in enumerate(idx["splits"]["train"]) if r["duplicate_of"] is not None)
    assert Path(s.image_paths[i]).read_bytes() != Path(s.image_paths[src]).read_bytes()
    assert s.image_labels[i] == s.image_labels[src]


def test_cached_folder_is_reused(wd: Path) -> None:
    _load(wd)
    index = _folder(wd) / "index.json"
    before = index.stat().st_mtime_ns
    time.sleep(0.01)
    _load(wd, "val")
    assert index.stat().st_mtime_ns == before


def test_half_written_folder_is_regenerated(tmp_path: Path) -> None:
    _load(tmp_path)
    folder = _folder(tmp_path)
    good = _files(folder)
    # Simulate an interrupted run: index missing, one image truncated, another never written.
    (folder / "index.json").unlink()
    (folder / "train" / "000003.png").write_bytes(b"\x89PNG")
    (folder / "val" / "000009.png").unlink()
    s = _load(tmp_path, "val")
    assert s.n_images == 10
    assert _files(folder) == good
    assert (folder / "index.json").is_file()
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_stale_index_is_regenerated(tmp_path: Path) -> None:
    _load(tmp_path)
    index = _folder(tmp_path) / "index.json"
    doc = json.loads(index.read_text())
    doc["splits"]["test"] = doc["splits"]["test"][:3]
    index.write_text(json.dumps(doc))
    assert _load(tmp_path, "test").n_images == 10
    (_folder(tmp_path) / "test" / "000001.png").unlink()  # index intact but a file gone
    assert _load(tmp_path, "test").n_images == 10
    assert (_folder(tmp_path) / "test" / "000001.png").is_file()


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown split 'dev'; available splits: train, val, test"):
        _load(tmp_path, "dev")
    with pytest.raises(
        ConfigError,
        match=r"dataset 'synthetic'.*unknown key 'n_tests'.*valid keys: format, captions_per_image, image_size",
    ):
        _load(tmp_path, n_tests=3)
    with pytest.raises(ConfigError, match=r"option 'seed' must be int, got str"):
        _load(tmp_path, seed="0")
    with pytest.raises(ConfigError, match=r"'image_size' must be >= 32"):
        _load(tmp_path, image_size=16)


def test_root_overrides_work_dir(tmp_path: Path) -> None:
    s = load_split("syn", {"root": str(tmp_path / "cache"), "format": "synthetic", **SMALL}, "val", work_dir=tmp_path)
    assert s.dataset == "syn"
    assert Path(s.image_paths[0]).is_relative_to(tmp_path / "cache")
    assert not (tmp_path / "synthetic").exists()


@pytest.mark.slow
def test_default_sizes_generate_quickly(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    folder = ensure_generated(tmp_path)
    elapsed = time.perf_counter() - t0
    assert len(list(folder.rglob("*.png"))) == 1400
    assert elapsed < 30, f"default synthetic set took {elapsed:.1f} s"
