"""Datasets in the forms people keep them: webdataset shards, saved Hugging Face datasets and parquet files.

The same split read from flat JSON, from shards, from a saved dataset and from parquet gives the same captions, the
same image order, the same pixels and the same metrics. The shards are written with webdataset's own ShardWriter and
read back with its own WebDataset as the oracle for sample grouping. Built from ``../shared/data/coco-sample``
(skipped with a reason where it is absent) and from ``synthetic``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
from bench.data import load_split
from bench.data.refs import ArrowImage, TarMember
from bench.errors import DataError
from tests.containers import ToyModel, save_hf, write_parquet, write_shards
from tests.tiny_grid import run_main

pytest.importorskip("webdataset")
pytest.importorskip("datasets")

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"


@pytest.fixture(scope="module")
def coco_test() -> bench.RetrievalSplit:
    """coco-sample's test split from its flat JSON. Four of its captions end in a line break, which the toy shard
    writer of these tests (one caption per line, unescaped) cannot hold; they are written without it here.
    CLIP_benchmark's own writer escapes it instead: see the test with that writer below."""
    if not (COCO / "test.json").is_file():
        pytest.skip(f"{COCO} is absent (real-photo parity)")
    split = load_split("coco-sample", {"format": "flat_json", "root": str(COCO)}, "test", work_dir=Path("/none"))
    assert sum("\n" in c for c in split.captions) == 4
    return dataclasses.replace(split, captions=[c.rstrip("\n") for c in split.captions], _fingerprint=[])


@pytest.fixture(scope="module")
def forms(coco_test: bench.RetrievalSplit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bench.RetrievalSplit]:
    """coco-sample's test split in each form, loaded back through the harness's own loaders."""
    root = tmp_path_factory.mktemp("forms")
    write_shards(coco_test, root / "wds", maxcount=64)
    save_hf(coco_test, root / "saved")
    write_parquet(coco_test, root / "pq" / "test.parquet", row_group_size=50)
    specs = {
        "webdataset": {"format": "webdataset", "root": str(root / "wds")},
        "hf_dataset": {"format": "hf_dataset", "root": str(root / "saved")},
        "parquet": {"format": "parquet", "root": str(root / "pq")},
    }
    return {k: load_split("coco-sample", v, "test", work_dir=root) for k, v in specs.items()}


@pytest.mark.parametrize("form", ["webdataset", "hf_dataset", "parquet"])
def test_each_form_reads_back_the_same_split(forms: dict, coco_test: bench.RetrievalSplit, form: str) -> None:
    got = forms[form]
    assert got.n_images == coco_test.n_images == 201 and got.n_captions == coco_test.n_captions == 1000
    assert list(got.captions) == list(coco_test.captions)
    assert np.array_equal(got.caption_to_image, coco_test.caption_to_image)
    if form != "webdataset":  # shards key samples by position (CLIP_benchmark's s0000000...), the rest by image id
        assert list(got.image_ids) == list(coco_test.image_ids)
    ref = {"webdataset": TarMember, "hf_dataset": ArrowImage, "parquet": ArrowImage}[form]
    assert all(isinstance(p, ref) for p in got.image_paths)
    for i in (0, 57, 200):  # image order and bytes: the same pixels as the JPEG on disk
        assert np.array_equal(np.asarray(got.load_image(i)), np.asarray(coco_test.load_image(i)))


def test_metrics_agree_across_forms(forms: dict, coco_test: bench.RetrievalSplit) -> None:
    toy = ToyModel()
    kw = {"transform": toy.transform, "tokenizer": toy.tokenizer, "device": "cpu", "batch_size": 32}
    want = bench.evaluate(toy, coco_test, **kw)
    for form, split in forms.items():
        got = bench.evaluate(toy, split, **kw)
        for d in ("i2t", "t2i", "t2t"):
            assert got[d] == want[d], (form, d)
        assert got["rsum"] == want["rsum"] > 0


def test_dataloader_workers_decode_from_the_containers(forms: dict, coco_test: bench.RetrievalSplit) -> None:
    """Two DataLoader workers (references pickled to them, each opening the container itself) give the files'
    batches in the files' order."""
    from bench.encode.features import iter_image_batches

    want = torch.cat(list(iter_image_batches(coco_test, ToyModel.transform, 32)))
    for form, split in forms.items():
        got = torch.cat(list(iter_image_batches(split, ToyModel.transform, 32, num_workers=2)))
        assert torch.equal(got, want), form


def test_webdataset_itself_reads_the_same_samples(forms: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    """webdataset's own reader (the oracle) groups the members into the same samples, keys and captions."""
    import webdataset as wds

    split = forms["webdataset"]
    shards = sorted({p.container for p in split.image_paths}, key=lambda p: int(p.stem))
    assert len(shards) == 4  # 201 images at 64 per shard
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == list(split.image_ids)
    per_image = split.image_to_captions()
    for i, s in enumerate(samples):
        assert s["txt"].decode().split("\n") == [split.captions[j] for j in per_image[i]]
        assert s["jpg"] == split.image_paths[i].read_bytes()


def test_parquet_with_image_paths_and_one_file_for_every_split(coco_test: bench.RetrievalSplit, tmp_path: Path) -> None:
    """The to_parquet form (the Image column names files instead of embedding them), with a split column."""
    import datasets
    import pyarrow.parquet as pq

    rows = {"filepath": ["pics"] * coco_test.n_images, "filename": [Path(p).name for p in coco_test.image_paths],
            "sentences": [[coco_test.captions[j] for j in js] for js in coco_test.image_to_captions()],
            "split": ["test"] * coco_test.n_images}  # fmt: skip  (yerevann/coco-karpathy's columns)
    rows["split"][:20] = ["restval"] * 20  # Karpathy COCO uploads: restval counts as train
    pq.write_table(datasets.Dataset.from_dict(rows).data.table, tmp_path / "coco_karpathy.parquet")
    spec = {"format": "parquet", "root": str(tmp_path), "split_column": "split", "image_column": "filename",
            "folder_column": "filepath", "id_column": "filename", "image_dir": str(COCO)}  # fmt: skip
    test = load_split("k", spec, "test", work_dir=tmp_path)
    train = load_split("k", spec, "train", work_dir=tmp_path)
    assert (test.n_images, train.n_images) == (181, 20)
    assert list(train.image_ids) == [Path(p).name for p in coco_test.image_paths[:20]]
    assert all(isinstance(p, Path) and p.is_file() for p in test.image_paths)
    with pytest.raises(DataError, match=r"no rows with split = 'val'; values there: test, train"):
        load_split("k", spec, "val", work_dir=tmp_path)
    path_only = write_parquet(coco_test, tmp_path / "paths" / "test.parquet", embed=False)
    split = load_split("p", {"format": "parquet", "root": str(path_only.parent)}, "test", work_dir=tmp_path)
    assert [str(p) for p in split.image_paths] == [str(p) for p in coco_test.image_paths]


def test_synthetic_through_shards_and_parquet(tmp_path: Path) -> None:
    syn = load_split("synthetic", {"format": "synthetic", "n_train": 4, "n_val": 4, "n_test": 12}, "test",
                     work_dir=tmp_path)  # fmt: skip
    write_shards(syn, tmp_path / "wds", maxcount=5, ext="png")
    write_parquet(syn, tmp_path / "pq" / "data" / "test-00000-of-00001.parquet")  # the Hub's file layout
    for spec in ({"format": "webdataset", "root": str(tmp_path / "wds")},
                 {"format": "parquet", "root": str(tmp_path / "pq")}):  # fmt: skip
        got = load_split("synthetic", spec, "test", work_dir=tmp_path)
        assert list(got.captions) == list(syn.captions)
        assert all(np.array_equal(np.asarray(got.load_image(i)), np.asarray(syn.load_image(i))) for i in range(12))


def test_split_fingerprint_follows_the_container(tmp_path: Path) -> None:
    syn = load_split("s", {"format": "synthetic", "n_train": 4, "n_val": 4, "n_test": 6}, "test", work_dir=tmp_path)
    shards = write_shards(syn, tmp_path / "wds", maxcount=10)
    spec = {"format": "webdataset", "root": str(tmp_path / "wds")}
    before = load_split("s", spec, "test", work_dir=tmp_path).fingerprint("images")
    assert load_split("s", spec, "test", work_dir=tmp_path).fingerprint("images") == before
    os.utime(shards[0], ns=(1, 1))  # same bytes, another mtime
    assert load_split("s", spec, "test", work_dir=tmp_path).fingerprint("images") != before


# ---------------------------------------------------------------------------------------------------------------
# malformed containers: one line naming the file and the key


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"a.png": b"", "a.txt": b"x", "b.txt": b"a dog"},
         r"0\.tar: sample 'b' has no image \(webp/png/jpg/jpeg\); it holds: txt"),
        ({"a.png": b"", "a.txt": b"caf\xe9 au lait"}, r"0\.tar: a\.txt: not UTF-8 text \(byte 3\)"),
        ({"a.png": b"", "a.cls": b"1"}, r"0\.tar: sample 'a' has no 'txt' captions; it holds: cls, png"),
    ],
)  # fmt: skip
def test_malformed_shards_name_the_file_and_the_key(tmp_path: Path, members: dict, message: str) -> None:
    members = {k: (_png() if k.endswith(".png") else v) for k, v in members.items()}
    _tar(tmp_path / "test" / "0.tar", members)
    with pytest.raises(DataError, match=message):
        load_split("w", {"format": "webdataset", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_a_parquet_without_the_named_column_fails_in_one_line(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [b"x"], "text": ["a dog"]}), tmp_path / "test.parquet")
    cfg = tmp_path / "bench.toml"
    cfg.write_text(f'[datasets.p]\nformat = "parquet"\nroot = "{tmp_path}"\ncaption_column = "caption"\n'
                   f'[paths]\nwork_dir = "{tmp_path / "work"}"\nresults_dir = "{tmp_path / "res"}"\n')  # fmt: skip
    rc, out, err = run_main(["data", "--config", str(cfg), "p", "--splits", "test"])
    assert rc != 0 and "Traceback" not in err
    assert f"{tmp_path / 'test.parquet'}: no column 'caption' (option 'caption_column'); columns: image, text" in err


def test_a_corrupt_embedded_image_names_the_file_and_the_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [_png(), b"not an image"], "caption": ["a", "b"]}), tmp_path / "test.parquet")
    split = load_split("p", {"format": "parquet", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert np.asarray(split.load_image(0)).shape == (4, 4, 3)
    with pytest.raises(DataError, match=r"test\.parquet::row 1: cannot decode image"):
        split.load_image(1)


def test_a_single_saved_dataset_is_only_a_test_split(tmp_path: Path) -> None:
    """Never train on the rows a cell is scored on: a plain Dataset folder serves ``test`` alone."""
    import datasets

    from bench.errors import SplitNotFoundError
    from tests.containers import hf_rows

    syn = load_split("s", {"format": "synthetic", "n_train": 4, "n_val": 4, "n_test": 5}, "test", work_dir=tmp_path)
    datasets.Dataset.from_dict(hf_rows(syn)).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "ds"))
    spec = {"format": "hf_dataset", "root": str(tmp_path / "ds")}
    assert list(load_split("s", spec, "test", work_dir=tmp_path).captions) == list(syn.captions)
    with pytest.raises(SplitNotFoundError, match=r"a single saved Dataset is only a test split, not 'train'"):
        load_split("s", spec, "train", work_dir=tmp_path)


def test_parquet_images_are_read_one_row_group_at_a_time(coco_test: bench.RetrievalSplit, tmp_path: Path) -> None:
    """Decoding an image decodes its row group's image column, not the file's: memory is bounded by a group."""
    from bench.data import refs

    write_parquet(coco_test, tmp_path / "test.parquet", row_group_size=25)
    split = load_split("p", {"format": "parquet", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    refs._TABLES.clear()
    for i in (0, 30, 200):
        split.load_image(i)
    assert sorted(k[2] for k in refs._TABLES) == [0, 1, 8]  # the groups of rows 0, 30 and 200
    assert all(len(col) <= 25 for col in refs._TABLES.values())


def test_a_changed_shard_or_parquet_file_reruns_its_cells(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tests.tiny_grid import write_config

    syn = load_split("s", {"format": "synthetic", "n_train": 4, "n_val": 4, "n_test": 8}, "test", work_dir=tmp_path)
    write_shards(syn, tmp_path / "wds", maxcount=4)
    write_parquet(syn, tmp_path / "pq" / "test.parquet")
    cfg = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cfg.write_text(cfg.read_text() + f'\n[datasets.w]\nformat = "webdataset"\nroot = "{tmp_path / "wds"}"\n'
                   f'\n[datasets.p]\nformat = "parquet"\nroot = "{tmp_path / "pq"}"\n')  # fmt: skip
    argv = ["run", "--config", str(cfg), "--models", "towers", "--datasets", "w,p", "-q", "--no-table"]

    def run() -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            rc, _, err = run_main(argv)
        assert rc == 0, err
        return err + caplog.text

    assert "2 ran, 0 skipped" in run()
    assert "0 ran, 2 skipped" in run()
    changed = dataclasses.replace(syn, captions=["a caption nobody wrote", *syn.captions[1:]], _fingerprint=[])
    for f in (tmp_path / "wds" / "test").glob("*.tar"):
        f.unlink()
    write_shards(changed, tmp_path / "wds", maxcount=4)
    out = run()
    # the shard was rewritten, so its images' container changed with the caption
    assert "1 ran, 1 skipped" in out and "the images/captions of w/test changed since the record" in out
    write_parquet(dataclasses.replace(syn, image_paths=[syn.image_paths[1], *syn.image_paths[1:]], _fingerprint=[]),
                  tmp_path / "pq" / "test.parquet")  # fmt: skip
    out = run()
    assert "1 ran, 1 skipped" in out and "the images of p/test changed since the record" in out


def test_shards_written_by_clip_benchmark_read_back_as_clip_benchmark_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIP_benchmark's writer (``convert_retrieval_dataset``) escapes a line break inside a caption as the two
    characters ``\\n``, and its reader (``build_wds_dataset``: ``str.splitlines`` on ``txt``) keeps them. The harness
    reads the same captions, escape kept, so both tools score the same text."""
    cb_builder = pytest.importorskip("clip_benchmark.webdataset_builder")
    from clip_benchmark.datasets.builder import build_wds_dataset

    if not (COCO / "test.json").is_file():
        pytest.skip(f"{COCO} is absent (real-photo parity)")
    split = load_split("coco-sample", {"format": "flat_json", "root": str(COCO)}, "test", work_dir=Path("/none"))
    per_image = split.image_to_captions()
    samples = [(str(split.image_paths[i]), [split.captions[j] for j in per_image[i]]) for i in range(split.n_images)]
    # Its writer starts 8 DataLoader workers; the conversion is the same in one process.
    real_loader = cb_builder.torch.utils.data.DataLoader
    monkeypatch.setattr(cb_builder.torch.utils.data, "DataLoader",
                        lambda *a, **kw: real_loader(*a, **{**kw, "num_workers": 0}))  # fmt: skip
    cb_builder.convert_retrieval_dataset(samples, "test", str(tmp_path), transform=cb_builder.path_to_bytes,
                                         max_count=80, verbose=False)  # fmt: skip
    monkeypatch.undo()
    theirs = [caps for _, caps in build_wds_dataset("wds/coco", transform=None, split="test", data_dir=str(tmp_path))]
    ours = load_split("cb", {"format": "webdataset", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert len(theirs) == ours.n_images == 201
    assert list(ours.captions) == [c for caps in theirs for c in caps]
    escaped = [c for c in ours.captions if c.endswith("\\n")]
    assert len(escaped) == 4 and [c[:-2] + "\n" for c in escaped] == [c for c in split.captions if "\n" in c]
    assert np.array_equal(ours.caption_to_image, split.caption_to_image)
