"""Dataset loaders: each format on small fixtures, every bad input's error message, and the real coco-sample."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench.data as data
from bench.data import RetrievalSplit, list_formats, load_image, load_split, register_format
from bench.data.presets import coco_1k_folds
from bench.errors import ConfigError, DataError, UnknownNameError

COCO_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
needs_coco = pytest.mark.skipif(
    not (COCO_SAMPLE / "train.json").is_file(), reason=f"coco-sample not found at {COCO_SAMPLE}"
)

# Captions per image in the fixtures: every count from 1 to 7, so nothing may assume five.
N_CAPS = [1, 2, 3, 4, 5, 6, 7]


def _img(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _flat_rows(root: Path, prefix: str, n_caps: list[int]) -> list[dict]:
    rows = []
    for i, n in enumerate(n_caps):
        name = f"{prefix}{i}.jpg"
        _img(root / "pics" / name, (i * 30 % 255, 80, 160))
        rows += [{"image_path": f"pics/{name}", "caption": f"{prefix} image {i} caption {k}", "image_id": name}
                 for k in range(n)]  # fmt: skip
    return rows


def _caps_per_image(s: RetrievalSplit) -> list[int]:
    return [len(c) for c in s.image_to_captions()]


# ---------------------------------------------------------------------------------------------------------------
# registry and load_split


def test_registry_lists_builtin_formats() -> None:
    assert {"karpathy", "albef", "flat_json", "csv", "flickr30k", "coco", "synthetic"} <= set(list_formats())
    assert list_formats() == sorted(list_formats())


def test_register_duplicate_raises_and_custom_loader_gets_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_format("csv")(lambda root, split: None)

    @register_format("_test_custom")
    def loader(root: Path, split: str, *, level: int = 1) -> RetrievalSplit:
        _img(root / "a.png")
        return RetrievalSplit("whatever", split, [root / "a.png"], ["a"], ["cap"] * level, np.zeros(level, int))

    try:
        s = load_split("mine", {"format": "_test_custom", "root": str(tmp_path), "level": 3}, "test", work_dir=tmp_path)
        assert s.dataset == "mine" and s.n_captions == 3
        with pytest.raises(ConfigError, match=r"'level' must be int"):
            load_split(
                "mine", {"format": "_test_custom", "root": str(tmp_path), "level": "3"}, "test", work_dir=tmp_path
            )
    finally:
        data.FORMATS._items.pop("_test_custom")


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset format 'nope'; known: albef, (\w+, )*coco, csv"):
        load_split("d", {"format": "nope", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_unknown_option_key_names_dataset_key_and_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_split("mycoco", {"format": "flat_json", "root": str(tmp_path), "fils": {}}, "test", work_dir=tmp_path)
    msg = str(e.value)
    assert "'mycoco'" in msg and "'fils'" in msg
    assert ("valid keys: format, captions_per_image, files, image_dir, long_text, max_words, pre_caption, root, "
            "sort_images") in msg


def test_missing_root_and_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset 'd' \(format 'karpathy'\): missing required key 'root'"):
        load_split("d", {"format": "karpathy"}, "test", work_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"dataset 'mine' has no 'format' key"):
        load_split("mine", {"root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_bool_option_type_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"option 'restval_in_train' must be bool, got str"):
        load_split(
            "c", {"format": "karpathy", "root": str(tmp_path), "restval_in_train": "no"}, "test", work_dir=tmp_path
        )


def test_format_defaults_to_dataset_name_and_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_json(tmp_path / "ds" / "test.json", _flat_rows(tmp_path / "ds", "t", [2, 3]))
    monkeypatch.chdir(tmp_path)
    s = load_split("flat_json", {"root": "ds"}, "test", work_dir=tmp_path)
    assert s.dataset == "flat_json" and s.n_images == 2
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in s.image_paths)
    assert Path(s.image_paths[0]) == tmp_path / "ds" / "pics" / "t0.jpg"


# ---------------------------------------------------------------------------------------------------------------
# flat_json


def test_flat_json_variable_captions_and_splits(tmp_path: Path) -> None:
    _write_json(tmp_path / "train.json", _flat_rows(tmp_path, "tr", N_CAPS))
    _write_json(tmp_path / "test.json", _flat_rows(tmp_path, "te", [5, 1]))
    spec = {"format": "flat_json", "root": str(tmp_path)}
    tr = load_split("coco_s", spec, "train", work_dir=tmp_path)
    assert (tr.dataset, tr.split, tr.n_images, tr.n_captions) == ("coco_s", "train", 7, sum(N_CAPS))
    assert _caps_per_image(tr) == N_CAPS
    assert tr.image_ids == [f"tr{i}.jpg" for i in range(7)]
    for j, cap in enumerate(tr.captions):
        assert cap.startswith(f"tr image {tr.caption_to_image[j]} ")
    assert tr.source == tmp_path / "train.json"
    te = load_split("coco_s", spec, "test", work_dir=tmp_path)
    assert (te.n_images, te.n_captions) == (2, 6) and _caps_per_image(te) == [5, 1]


def test_flat_json_groups_non_contiguous_rows_and_sorts(tmp_path: Path) -> None:
    for n in ("b.jpg", "a.jpg", "c.jpg"):
        _img(tmp_path / n)
    rows = [
        {"image_path": "b.jpg", "caption": "b1", "image_id": "b"},
        {"image_path": "a.jpg", "caption": "a1", "image_id": "a"},
        {"image_path": "b.jpg", "caption": "b2", "image_id": "b"},
        {"image_path": "c.jpg", "caption": "c1", "image_id": "c"},
        {"image_path": "a.jpg", "caption": "a2", "image_id": "a"},
    ]
    _write_json(tmp_path / "val.json", rows)
    s = load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "val", work_dir=tmp_path)
    assert list(s.image_ids) == ["b", "a", "c"]  # order of first appearance
    assert list(s.captions) == ["b1", "b2", "a1", "a2", "c1"]
    assert s.caption_to_image.tolist() == [0, 0, 1, 1, 2]
    s = load_split("d", {"format": "flat_json", "root": str(tmp_path), "sort_images": True}, "val", work_dir=tmp_path)
    assert list(s.image_ids) == ["a", "b", "c"]
    assert [s.captions[j] for j in range(5)] == ["a1", "a2", "b1", "b2", "c1"]
    assert s.caption_to_image.tolist() == [0, 0, 1, 1, 2]
    assert Path(s.image_paths[0]).name == "a.jpg"


def test_flat_json_files_option(tmp_path: Path) -> None:
    _write_json(tmp_path / "ann" / "my_test.json", _flat_rows(tmp_path, "x", [3]))
    spec = {"format": "flat_json", "root": str(tmp_path), "files": {"test": "ann/my_test.json"}}
    assert load_split("d", spec, "test", work_dir=tmp_path).n_captions == 3
    with pytest.raises(DataError, match=r"unknown split 'train'; available splits \(option 'files'\): test"):
        load_split("d", spec, "train", work_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# karpathy


def _karpathy(root: Path, *, coco: bool) -> dict:
    images = []
    layout = [("train", 3), ("restval", 2), ("val", 1), ("test", 4), ("restval", 7), ("test", 5)]
    for i, (split, n) in enumerate(layout):
        fp = ("val2014" if split != "train" else "train2014") if coco else None
        name = f"img{i}.jpg"
        _img(root / "images" / (fp or "") / name)
        row = {"filename": name, "split": split, "sentences": [{"raw": f"{split} {i} s{k}", "tokens": []}
                                                                for k in range(n)]}  # fmt: skip
        if coco:
            row |= {"filepath": fp, "cocoid": 1000 + i}
        else:
            row["imgid"] = i
        images.append(row)
    return {"images": images, "dataset": "coco" if coco else "flickr30k"}


def test_karpathy_splits_restval_and_paths(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_coco.json", _karpathy(tmp_path, coco=True))
    spec = {"format": "karpathy", "root": str(tmp_path), "image_dir": "images"}
    tr = load_split("coco", spec, "train", work_dir=tmp_path)
    assert list(tr.image_ids) == ["1000", "1001", "1004"]  # restval counted as train, file order kept
    assert _caps_per_image(tr) == [3, 2, 7]
    assert Path(tr.image_paths[1]) == tmp_path / "images" / "val2014" / "img1.jpg"
    te = load_split("coco", spec, "test", work_dir=tmp_path)
    assert list(te.image_ids) == ["1003", "1005"] and _caps_per_image(te) == [4, 5]
    assert te.captions[0] == "test 3 s0" and te.caption_to_image.tolist() == [0] * 4 + [1] * 5
    assert load_split("coco", spec, "val", work_dir=tmp_path).n_captions == 1
    with pytest.raises(DataError, match=r"unknown split 'restval' \(restval is counted as train.*available splits: "
                                        r"test, train, val"):  # fmt: skip
        load_split("coco", spec, "restval", work_dir=tmp_path)

    spec["restval_in_train"] = False
    tr = load_split("coco", spec, "train", work_dir=tmp_path)
    assert list(tr.image_ids) == ["1000"]
    assert list(load_split("coco", spec, "restval", work_dir=tmp_path).image_ids) == ["1001", "1004"]


def test_karpathy_flickr_without_filepath_autodetects_file(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_flickr30k.json", _karpathy(tmp_path, coco=False))
    s = load_split("f", {"format": "karpathy", "root": str(tmp_path), "image_dir": "images"}, "test", work_dir=tmp_path)
    assert list(s.image_ids) == ["img3.jpg", "img5.jpg"]
    assert Path(s.image_paths[0]) == tmp_path / "images" / "img3.jpg"


def test_karpathy_missing_raw_names_row(tmp_path: Path) -> None:
    d = _karpathy(tmp_path, coco=True)
    del d["images"][3]["sentences"][2]["raw"]
    _write_json(tmp_path / "dataset_coco.json", d)
    with pytest.raises(DataError, match=r"dataset_coco\.json: images\[3\]\.sentences\[2\] has no field 'raw'"):
        load_split("c", {"format": "karpathy", "root": str(tmp_path), "image_dir": "images"}, "test", work_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# albef


def test_albef_train_rows_per_caption_and_test_caption_lists(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / "val2014" / f"{i}.jpg")
    train = [{"image": f"val2014/{i}.jpg", "caption": f"c{i}-{k}", "image_id": f"id{i}"}
             for i, n in enumerate([2, 1, 3]) for k in range(n)]  # fmt: skip
    test = [
        {"image": "val2014/3.jpg", "caption": ["t3-0", "t3-1", "t3-2", "t3-3", "t3-4", "t3-5", "t3-6"]},
        {"image": "val2014/0.jpg", "caption": ["t0-0"]},
        {"image": "val2014/1.jpg", "caption": "t1-0"},  # a train-shaped row in a test file
    ]
    _write_json(tmp_path / "coco_karpathy_train.json", train)
    _write_json(tmp_path / "coco_karpathy_test.json", test)
    spec = {"format": "albef", "root": str(tmp_path)}  # prefix found in root
    tr = load_split("a", spec, "train", work_dir=tmp_path)
    assert list(tr.image_ids) == ["id0", "id1", "id2"] and _caps_per_image(tr) == [2, 1, 3]
    te = load_split("a", spec, "test", work_dir=tmp_path)
    assert list(te.image_ids) == ["val2014/3.jpg", "val2014/0.jpg", "val2014/1.jpg"]
    assert _caps_per_image(te) == [7, 1, 1] and te.captions[7] == "t0-0"
    with pytest.raises(DataError, match=r"coco_karpathy_val\.json: annotation file for split 'val' not found; "
                                        r"available splits: train, test"):  # fmt: skip
        load_split("a", spec, "val", work_dir=tmp_path)
    spec = {"format": "albef", "root": str(tmp_path), "files": {"test": "coco_karpathy_test.json"}}
    assert load_split("a", spec, "test", work_dir=tmp_path).n_captions == 9


def test_albef_empty_caption_list(tmp_path: Path) -> None:
    _img(tmp_path / "x.jpg")
    _write_json(tmp_path / "f30k_test.json", [{"image": "x.jpg", "caption": ["ok"]}, {"image": "x.jpg", "caption": []}])
    with pytest.raises(DataError, match=r"f30k_test\.json: row 1 field 'caption' is empty"):
        load_split("a", {"format": "albef", "root": str(tmp_path), "prefix": "f30k"}, "test", work_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# csv


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_custom_columns_and_grouping(tmp_path: Path) -> None:
    for n in ("p.png", "q.png"):
        _img(tmp_path / "imgs" / n)
    rows = [["p.png", "a red, round thing", "x"], ["q.png", "two", "x"], ["p.png", 'a "quoted" one', "x"]]
    _write_csv(tmp_path / "val.csv", ["path", "text", "other"], rows)
    spec = {
        "format": "csv",
        "root": str(tmp_path),
        "image_dir": "imgs",
        "image_column": "path",
        "caption_column": "text",
    }
    s = load_split("c", spec, "val", work_dir=tmp_path)
    assert list(s.image_ids) == ["p.png", "q.png"]
    assert list(s.captions) == ["a red, round thing", 'a "quoted" one', "two"]
    assert s.caption_to_image.tolist() == [0, 0, 1]
    assert Path(s.image_paths[1]) == tmp_path / "imgs" / "q.png"


def test_csv_errors_name_file_column_and_row(tmp_path: Path) -> None:
    _img(tmp_path / "p.png")
    _write_csv(tmp_path / "test.csv", ["filepath", "text"], [["p.png", "x"]])
    with pytest.raises(DataError, match=r"test\.csv: no column 'caption' \(option 'caption_column'\).*filepath, text"):
        load_split("c", {"format": "csv", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    _write_csv(tmp_path / "test.csv", ["filepath", "caption"], [["p.png", "x"], ["p.png", "  "]])
    with pytest.raises(DataError, match=r"test\.csv: row 2 \(line 3\) field 'caption' is empty"):
        load_split("c", {"format": "csv", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    _write_csv(tmp_path / "test.csv", ["filepath", "caption"], [["p.png", "x"], ["gone.png", "y"]])
    with pytest.raises(DataError, match=r"test\.csv: row 2 \(line 3\) references image .*gone\.png, which does not"):
        load_split("c", {"format": "csv", "root": str(tmp_path)}, "test", work_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# presets and COCO 1K folds


@pytest.mark.parametrize("folder", ["flickr30k-images", "images"])
def test_flickr30k_preset_finds_image_folder(tmp_path: Path, folder: str) -> None:
    d = _karpathy(tmp_path / "unused", coco=False)
    for row in d["images"]:
        _img(tmp_path / folder / row["filename"])
    _write_json(tmp_path / "dataset_flickr30k.json", d)
    s = load_split("f30k", {"format": "flickr30k", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert s.dataset == "f30k" and Path(s.image_paths[0]) == tmp_path / folder / "img3.jpg"
    assert load_split("f30k", {"format": "flickr30k", "root": str(tmp_path)}, "train", work_dir=tmp_path).n_images == 3


def test_flickr30k_preset_without_image_folder(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset_flickr30k.json", {"images": []})
    with pytest.raises(DataError, match=r"no image folder; expected .*flickr30k-images or .*images"):
        load_split("f", {"format": "flickr30k", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_coco_preset_and_1k_folds(tmp_path: Path) -> None:
    n_caps = [(i % 7) + 1 for i in range(10)]
    images = []
    for i, n in enumerate(n_caps):
        _img(tmp_path / "val2014" / f"{i}.jpg")
        images.append({"filepath": "val2014", "filename": f"{i}.jpg", "cocoid": i, "split": "test",
                       "sentences": [{"raw": f"{i}/{k}"} for k in range(n)]})  # fmt: skip
    _write_json(tmp_path / "dataset_coco.json", {"images": images})
    s = load_split("coco", {"format": "coco", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert s.n_images == 10 and _caps_per_image(s) == n_caps
    assert s.fold_size is None and s.fold_rows() is None  # only COCO's 5K test declares the 1K protocol
    declared = dataclasses.replace(s, fold_size=2)
    assert [r.tolist() for r in declared.fold_rows()] == [[2 * k, 2 * k + 1] for k in range(5)]
    folds = coco_1k_folds(s, n_folds=5, fold_size=2)
    assert len(folds) == 5
    for k, f in enumerate(folds):
        assert f.split == f"test_1k_fold{k}" and list(f.image_ids) == [str(2 * k), str(2 * k + 1)]
        assert _caps_per_image(f) == n_caps[2 * k : 2 * k + 2]
        # every caption still belongs to its own image
        assert all(cap.split("/")[0] == f.image_ids[i] for cap, i in zip(f.captions, f.caption_to_image, strict=True))
    assert sum(f.n_captions for f in folds) == s.n_captions
    with pytest.raises(DataError, match=r"has 10 images; 5 folds of 1000 need exactly 5000"):
        coco_1k_folds(s)


# ---------------------------------------------------------------------------------------------------------------
# bad inputs: each error names the file and the field


def test_missing_annotation_file(tmp_path: Path) -> None:
    _write_json(tmp_path / "train.json", [])
    with pytest.raises(DataError, match=r"test\.json: annotation file for split 'test' not found; available splits: "
                                        r"train"):  # fmt: skip
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    with pytest.raises(DataError, match=r"nope\.json: annotation file not found"):
        load_split("d", {"format": "karpathy", "root": str(tmp_path), "file": "nope.json"}, "test", work_dir=tmp_path)


def test_malformed_json_names_position(tmp_path: Path) -> None:
    (tmp_path / "test.json").write_text('[{"image_path": "a.jpg",\n "caption": "x" "image_id": "a"}]')
    with pytest.raises(DataError, match=r"test\.json: malformed JSON at line 2 column 17 \(char 41\): Expecting ','"):
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_row_missing_caption(tmp_path: Path) -> None:
    rows = _flat_rows(tmp_path, "t", [3])
    del rows[2]["caption"]
    _write_json(tmp_path / "train.json", rows)
    with pytest.raises(DataError, match=r"train\.json: row 2 has no field 'caption'"):
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "train", work_dir=tmp_path)


def test_empty_caption(tmp_path: Path) -> None:
    rows = _flat_rows(tmp_path, "t", [3])
    rows[1]["caption"] = " \t"
    _write_json(tmp_path / "train.json", rows)
    with pytest.raises(DataError, match=r"train\.json: row 1 field 'caption' is empty"):
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "train", work_dir=tmp_path)


def test_missing_image_file(tmp_path: Path) -> None:
    rows = _flat_rows(tmp_path, "t", [2, 2])
    (tmp_path / "pics" / "t1.jpg").unlink()
    _write_json(tmp_path / "train.json", rows)
    with pytest.raises(DataError, match=r"train\.json: row 2 references image .*pics/t1\.jpg, which does not exist"):
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "train", work_dir=tmp_path)


def test_not_a_list(tmp_path: Path) -> None:
    _write_json(tmp_path / "train.json", {"rows": []})
    with pytest.raises(DataError, match=r"train\.json: expected a JSON list of rows, got dict"):
        load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "train", work_dir=tmp_path)


def test_corrupt_jpeg_surfaces_on_load_image(tmp_path: Path) -> None:
    rows = _flat_rows(tmp_path, "t", [1, 1])
    (tmp_path / "pics" / "t1.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 4)
    _write_json(tmp_path / "test.json", rows)
    s = load_split("d", {"format": "flat_json", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert s.load_image(0).size == (8, 8)
    with pytest.raises(DataError, match=r"t1\.jpg: cannot decode image"):
        s.load_image(1)
    with pytest.raises(DataError, match=r"missing\.jpg: image file not found"):
        load_image(tmp_path / "missing.jpg")


# ---------------------------------------------------------------------------------------------------------------
# the real coco-sample (CUSA reference format)


@pytest.mark.coco
@needs_coco
def test_coco_sample_train() -> None:
    s = load_split("coco-sample", {"format": "flat_json", "root": str(COCO_SAMPLE)}, "train", work_dir=COCO_SAMPLE)
    assert (s.n_captions, s.n_images) == (3000, 600)
    assert Counter(_caps_per_image(s)) == {5: 598, 6: 1, 4: 1}
    assert all(str(i).startswith("COCO_train2014_") for i in s.image_ids)
    assert s.load_image(0).mode == "RGB"


@pytest.mark.coco
@needs_coco
def test_coco_sample_test_sorted_and_unsorted() -> None:
    spec = {"format": "flat_json", "root": str(COCO_SAMPLE)}
    s = load_split("coco-sample", spec, "test", work_dir=COCO_SAMPLE)
    assert (s.n_captions, s.n_images) == (1000, 201)
    assert Counter(_caps_per_image(s)) == {5: 198, 2: 2, 6: 1}
    raw = json.loads((COCO_SAMPLE / "test.json").read_text())
    assert list(s.captions) == [r["caption"] for r in raw]  # contiguous rows: file order is kept exactly
    srt = load_split("coco-sample", spec | {"sort_images": True}, "test", work_dir=COCO_SAMPLE)
    assert list(srt.image_ids) == sorted(s.image_ids)
    assert sorted(srt.captions) == sorted(s.captions)
    i = list(srt.image_ids).index(s.image_ids[0])
    assert [srt.captions[j] for j in srt.image_to_captions()[i]] == [s.captions[j] for j in s.image_to_captions()[0]]
