"""Uni-modal loaders: each reads a fixture in its published layout and rejects a broken one with a clear error.

The image fixtures are built at test time from the real photos of ``../shared/data/coco-sample`` (grouped by the COCO
object their captions name; see ``benchmarks/unimodal_fixtures.py``); those tests skip where that folder is absent.
The STS fixtures are hand-written sentence pairs and always run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.data import format_options, format_task, load_split
from bench.data.image_sets import ImageRetrievalSplit
from bench.data.sts import STSSplit
from bench.errors import ConfigError, DataError, SplitNotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import unimodal_fixtures as fx  # noqa: E402

needs_coco = pytest.mark.skipif(
    not (fx.COCO / "train.json").is_file(), reason=f"{fx.COCO} is absent (image fixtures are built from its photos)"
)


def _load(fmt: str, root: Path, split: str = "test", **options: object) -> object:
    return load_split(fmt, {"format": fmt, "root": str(root), **options}, split, work_dir=root)


@pytest.fixture(scope="module")
def classes() -> dict[str, list[Path]]:
    if not (fx.COCO / "train.json").is_file():
        pytest.skip(f"{fx.COCO} is absent (image fixtures are built from its photos)")
    return dict(list(fx.coco_classes(fx.COCO, max_per_class=4).items())[:6])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------------------------
# registry


def test_uni_modal_formats_are_eval_only_tasks_with_train_on() -> None:
    for fmt in ("cub", "cars196", "sop", "inshop"):
        assert format_task(fmt) == "image_retrieval" and "train_on" in format_options(fmt)
    for fmt in ("stsb", "sick", "sts_tsv"):
        assert format_task(fmt) == "sts" and "train_on" in format_options(fmt)
    assert format_task("flat_json") == "itr" and "train_on" not in format_options("flat_json")


# --------------------------------------------------------------------------------------------------------------------
# image sets: the published layouts


@needs_coco
def test_cub_reads_classes_101_to_200_as_test(tmp_path: Path, classes: dict[str, list[Path]]) -> None:
    root = fx.build_cub(tmp_path / "CUB_200_2011", classes, n_train_classes=2)
    test = _load("cub", tmp_path)  # the folder holding CUB_200_2011/ works too
    assert isinstance(test, ImageRetrievalSplit) and test.query_rows is None
    assert sorted(set(test.labels.tolist())) == [101, 102, 103, 104]
    assert test.n_images == 16 and all(Path(p).is_file() for p in test.image_paths)
    assert test.image_ids[0].startswith("101.")
    train = _load("cub", root, "train")
    assert sorted(set(train.labels.tolist())) == [1, 2] and train.n_images == 8
    images = test.images()  # a caption-less RetrievalSplit for the encoders
    assert images.n_images == 16 and images.n_captions == 0 and images.dataset == "cub"
    with pytest.raises(SplitNotFoundError, match="train, test"):
        _load("cub", root, "val")


@needs_coco
@pytest.mark.parametrize("mat", [True, False], ids=["cars_annos.mat", "csv export"])
def test_cars196_reads_classes_99_to_196_as_test(tmp_path: Path, classes: dict[str, list[Path]], mat: bool) -> None:
    if mat:
        pytest.importorskip("scipy.io")
    fx.build_cars196(tmp_path, classes, n_train_classes=2, mat=mat)
    test = _load("cars196", tmp_path)
    assert sorted(set(test.labels.tolist())) == [99, 100, 101, 102] and test.n_images == 16
    assert test.image_ids[0] == "car_ims/000001.jpg"
    assert sorted(set(_load("cars196", tmp_path, "train").labels.tolist())) == [1, 2]


@needs_coco
def test_sop_reads_ebay_test(tmp_path: Path, classes: dict[str, list[Path]]) -> None:
    fx.build_sop(tmp_path / "Stanford_Online_Products", classes, n_train_classes=2)
    test = _load("sop", tmp_path / "Stanford_Online_Products")
    assert test.n_images == 16 and sorted(set(test.labels.tolist())) == [1, 2, 3, 4]
    assert _load("sop", tmp_path, "train").n_images == 8  # the parent folder works too


@needs_coco
def test_inshop_reads_query_and_gallery(tmp_path: Path, classes: dict[str, list[Path]]) -> None:
    fx.build_inshop(tmp_path, classes, n_train_classes=2)
    test = _load("inshop", tmp_path)
    assert test.n_images == 16 and len(test.query_rows) == 8 and len(test.gallery_rows) == 8
    assert set(test.labels[test.query_rows]) == set(test.labels[test.gallery_rows])
    train = _load("inshop", tmp_path, "train")
    assert train.query_rows is None and train.n_images == 8


# --------------------------------------------------------------------------------------------------------------------
# image sets: broken fixtures


def _cub_broken(root: Path, case: str) -> tuple[str, str]:
    if case == "missing list":
        (root / "image_class_labels.txt").unlink()
        return "image_class_labels.txt", "not found"
    if case == "unknown class":
        lines = _lines(root / "image_class_labels.txt")
        lines[4] = lines[4].split()[0] + " 999"
        _write(root / "image_class_labels.txt", lines)
        return "image_class_labels.txt line 5", "unknown class_id 999"
    lines = _lines(root / "images.txt")
    (root / "images" / lines[10].split()[1]).unlink()
    return "images.txt line 11", "listed but does not exist"


def _cars_broken(root: Path, case: str) -> tuple[str, str]:
    if case == "missing list":
        (root / "cars_annos.csv").unlink()
        return "cars_annos.mat", "not found"
    lines = _lines(root / "cars_annos.csv")
    if case == "unknown class":
        parts = lines[3].split(",")
        lines[3] = ",".join([*parts[:5], "197", *parts[6:]])
        _write(root / "cars_annos.csv", lines)
        return "cars_annos.csv line 4", "unknown class 197"
    (root / lines[12].split(",")[0]).unlink()
    return "cars_annos.csv line 13", "listed but does not exist"


def _sop_broken(root: Path, case: str) -> tuple[str, str]:
    if case == "missing list":
        (root / "Ebay_test.txt").unlink()
        return "Ebay_test.txt", "not found"
    lines = _lines(root / "Ebay_test.txt")
    if case == "unknown class":
        parts = lines[2].split()
        lines[2] = " ".join([parts[0], "0", *parts[2:]])
        _write(root / "Ebay_test.txt", lines)
        return "Ebay_test.txt line 3", "unknown class_id 0"
    (root / lines[5].split()[3]).unlink()
    return "Ebay_test.txt line 6", "listed but does not exist"


def _inshop_broken(root: Path, case: str) -> tuple[str, str]:
    if case == "missing list":
        (root / "list_eval_partition.txt").unlink()
        return "list_eval_partition.txt", "not found"
    lines = _lines(root / "list_eval_partition.txt")
    if case == "unknown class":
        lines[12] = lines[12].replace(" id_", " item_")
        _write(root / "list_eval_partition.txt", lines)
        return "list_eval_partition.txt line 13", "unknown item_id"
    (root / lines[14].split()[0]).unlink()
    return "list_eval_partition.txt line 15", "listed but does not exist"


_BUILD: dict[str, tuple[Callable[..., Path], Callable[[Path, str], tuple[str, str]]]] = {
    "cub": (fx.build_cub, _cub_broken),
    "cars196": (lambda root, c, n: fx.build_cars196(root, c, n, mat=False), _cars_broken),
    "sop": (fx.build_sop, _sop_broken),
    "inshop": (fx.build_inshop, _inshop_broken),
}


@needs_coco
@pytest.mark.parametrize("case", ["missing list", "unknown class", "absent image"])
@pytest.mark.parametrize("fmt", list(_BUILD))
def test_broken_image_fixtures_raise_data_error_naming_file_and_line(
    tmp_path: Path, classes: dict[str, list[Path]], fmt: str, case: str
) -> None:
    build, breaker = _BUILD[fmt]
    root = tmp_path / fmt
    build(root, classes, 2)
    where, what = breaker(root, case)
    with pytest.raises(DataError) as info:
        _load(fmt, root)
    msg = str(info.value)
    assert where in msg and what in msg, msg


@needs_coco
def test_inshop_query_item_without_gallery_is_an_error(tmp_path: Path, classes: dict[str, list[Path]]) -> None:
    fx.build_inshop(tmp_path, classes, n_train_classes=2)
    lines = _lines(tmp_path / "list_eval_partition.txt")
    item = lines[10].split()[1]
    _write(tmp_path / "list_eval_partition.txt", [ln for ln in lines if not (item in ln and ln.endswith("gallery"))])
    with pytest.raises(DataError, match=f"query item_id {item} has no gallery image"):
        _load("inshop", tmp_path)


@needs_coco
def test_sop_class_with_two_super_classes_is_an_error(tmp_path: Path, classes: dict[str, list[Path]]) -> None:
    fx.build_sop(tmp_path, classes, n_train_classes=2)
    lines = _lines(tmp_path / "Ebay_test.txt")
    parts = lines[2].split()
    lines[2] = " ".join([parts[0], parts[1], "9", parts[3]])
    _write(tmp_path / "Ebay_test.txt", lines)
    with pytest.raises(DataError, match=r"Ebay_test.txt line 3: class_id \d+ has super_class_id 9, but line 2 gave"):
        _load("sop", tmp_path)


def test_cars196_mat_without_scipy_names_the_csv_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cars_annos.mat").write_bytes(b"MATLAB 5.0")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io now raises ImportError
    with pytest.raises(DataError, match="needs scipy.*cars_annos.csv"):
        _load("cars196", tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# STS


def test_stsb_reads_the_tab_separated_layout(tmp_path: Path) -> None:
    fx.build_stsb(tmp_path)
    with open(tmp_path / "sts-test.csv", "a") as f:  # STS-B lines may carry extra source columns and bare quotes
        f.write('main-news\theadlines\t2015\t0099\t1.500\tHe said "no".\tShe said "yes".\tsrc-a\tsrc-b\n')
    test = _load("stsb", tmp_path)
    assert isinstance(test, STSSplit) and test.n_pairs == len(fx.PAIRS) + 1
    assert test.sentence1[-1] == 'He said "no".' and test.scores[-1] == 1.5
    assert test.group_names() == ["sts-test"]
    assert _load("stsb", tmp_path, "val").n_pairs == len(fx.PAIRS) // 4
    sentences, a, b = test.sentences()
    assert [sentences[i] for i in a] == list(test.sentence1) and [sentences[i] for i in b] == list(test.sentence2)
    with pytest.raises(SplitNotFoundError, match="available splits: dev, test"):
        _load("stsb", tmp_path, "train")


def test_sick_reads_the_full_file_and_the_senteval_files(tmp_path: Path) -> None:
    fx.build_sick(tmp_path)
    test = _load("sick", tmp_path)
    n_train = len(fx.PAIRS) // 3
    assert test.n_pairs == len(fx.PAIRS) - n_train and _load("sick", tmp_path, "train").n_pairs == n_train
    assert test.scores.min() >= 1.0 and test.scores.max() <= 5.0
    (tmp_path / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA dog runs.\tA dog is running.\t4.9\tENTAILMENT\n2\tA cat sits.\tA man sings.\t1.1\tNEUTRAL\n"
    )
    senteval = _load("sick", tmp_path)
    assert senteval.n_pairs == 2 and senteval.group_names() == ["SICK_test_annotated"]


def test_sts_tsv_groups_by_file(tmp_path: Path) -> None:
    fx.build_sts_tsv(tmp_path)
    split = _load("sts_tsv", tmp_path, files={"test": ["captions.tsv", "objects.tsv"]})
    assert split.group_names() == ["captions", "objects"] and split.n_pairs == len(fx.PAIRS)  # header skipped
    (tmp_path / "test.tsv").write_text("a b\tc d\t3\n")
    assert _load("sts_tsv", tmp_path).n_pairs == 1  # default file: {split}.tsv


@pytest.mark.parametrize(
    ("fmt", "content", "match"),
    [
        ("stsb", "main\tMSRvid\t2012\t1\tfive\tA b.\tC d.\n", r"sts-test.csv line 1: field 'score' must be a number"),
        ("stsb", "main\tMSRvid\t2012\t1\t3.0\tA b.\n", r"sts-test.csv line 1: expected 7 tab-separated fields"),
        ("stsb", "main\tMSRvid\t2012\t1\t3.0\t \tC d.\n", r"sts-test.csv line 1: field 'sentence1' is empty"),
        ("sick", "pair_ID\tsentence_A\tsentence_B\n1\ta\tb\n", r"SICK.txt line 1: header lacks relatedness_score"),
        ("sts_tsv", "a\tb\t1\nc\td\n", r"test.tsv line 2: expected 3 tab-separated fields"),
        ("sts_tsv", "a\tb\t1\nc\td\tnan\n", r"test.tsv line 2: field 'score' is 'nan'"),
    ],
)
def test_broken_sts_files_name_file_line_and_field(tmp_path: Path, fmt: str, content: str, match: str) -> None:
    name = {"stsb": "sts-test.csv", "sick": "SICK.txt", "sts_tsv": "test.tsv"}[fmt]
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match):
        _load(fmt, tmp_path)


def test_missing_sts_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="SICK.txt found"):
        _load("sick", tmp_path)
    with pytest.raises(DataError, match="not found"):
        _load("sts_tsv", tmp_path, files={"test": "absent.tsv"})
    with pytest.raises(ConfigError, match="unknown key 'train_one'"):
        _load("stsb", tmp_path, train_one="synthetic")


def test_train_on_is_a_grid_key_not_a_loader_option(tmp_path: Path) -> None:
    fx.build_stsb(tmp_path)
    split = _load("stsb", tmp_path, train_on="synthetic")  # accepted and not passed to the loader
    assert split.n_pairs == len(fx.PAIRS)


def test_image_split_checks_its_rows() -> None:
    with pytest.raises(DataError, match="given together"):
        ImageRetrievalSplit("d", "test", [Path("a")], ["a"], np.zeros(1), query_rows=np.zeros(1))
    with pytest.raises(DataError, match="out of range"):
        ImageRetrievalSplit("d", "test", [Path("a")], ["a"], np.zeros(1), np.array([0]), np.array([3]))
