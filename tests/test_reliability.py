"""What a hostile user's inputs found (issue: no traceback reaches the user, nothing is silently wrong, nothing is
lost). Each case is one clear line naming the file and the key, exit code 1 or 2, and no finished result lost."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from bench.adapters.registry import create_adapter
from PIL import Image
from tiny_grid import result_path, run_main, write_config

from bench.atomic import remove_stale_temporaries
from bench.config import load_config
from bench.data import load_split
from bench.data.base import load_image
from bench.errors import ConfigError, DataError
from bench.grid.records import read_record, write_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("bench:")]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")


# ---------------------------------------------------------------------------------------------------------------
# ids are safe paths


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('[models."tw 1"]\nadapter = "towers"\n[models.tw_1]\nadapter = "towers"\n', "would share the result folder"),
        ('[models.".."]\nadapter = "towers"\n', "an id must be a plain name"),
        ('[datasets."a/b"]\nformat = "synthetic"\n', "an id must be a plain name"),
        ('[methods."."]\n', "an id must be a plain name"),
    ],
)
def test_ids_that_are_paths_or_collide_are_refused(config: Path, tables: str, message: str) -> None:
    config.write_text(config.read_text() + "\n" + tables)
    with pytest.raises(ConfigError, match=message):
        load_config(config)
    rc, _, err = run_main(["run", "--config", str(config)])
    assert rc == 2 and "Traceback" not in err and message in _lines(err)[-1]


# ---------------------------------------------------------------------------------------------------------------
# values are range-checked before anything runs


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=-3", "[train].epochs: must be >= 1"),
        ("train.epochs=0", "[train].epochs: must be >= 1"),
        ("train.batch_size=0", "[train].batch_size: must be >= 1"),
        ("train.grad_accum=0", "[train].grad_accum: must be >= 1"),
        ("train.lr=nan", "[train].lr: must be a finite number"),
        ("train.lr=-1e-4", "[train].lr: must be > 0"),
        ("train.val_fraction=1.5", "[train].val_fraction: must be in (0, 1)"),
        ("eval.memory_mb=0", "[eval].memory_mb: must be > 0"),
        ("eval.memory_mb=inf", "[eval].memory_mb: must be a finite number"),
        ("eval.batch_size=0", "[eval].batch_size: must be >= 1"),
        ("grid.seeds=[-1]", "seed -1 must be an integer in [0, 4294967295]"),
        ("grid.seeds=[4294967296]", "seed 4294967296 must be an integer"),
        ("datasets.synthetic.n_test=x", "dataset 'synthetic': option 'n_test' must be int, got str"),
    ],
)
def test_out_of_range_values_are_one_line_and_nothing_runs(config: Path, override: str, key: str) -> None:
    rc, _, err = run_main(["run", "--config", str(config), "--set", override])
    assert rc == 2, err
    assert "Traceback" not in err and key in _lines(err)[-1]
    assert not (config.parent / "results").exists()


def test_negative_cli_seed_and_missing_cuda_are_one_line(config: Path) -> None:
    rc, _, err = run_main(["run", "--config", str(config), "--seeds", "-1"])
    assert rc == 2 and "--seeds: seed -1" in _lines(err)[-1]
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, _, err = run_main(["run", "--config", str(config), "--set", "train.device=cuda"])
    assert rc == 2 and "device 'cuda': CUDA is not available" in _lines(err)[-1]
    assert not list((config.parent / "results").rglob("*.json"))


@pytest.mark.parametrize("bad", ["inf", "nan", "0"])
def test_score_memory_mb_must_be_finite_and_positive(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli.main import main

    with pytest.raises(SystemExit) as info:  # argparse's own one-line usage error
        main(["score", "--image-emb", "I.npy", "--text-emb", "T.npy", "--text-to-image", "M.npy", "--memory-mb", bad])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"argument --memory-mb: must be a finite number > 0, got {bad}" in err.splitlines()[-1]


def _score_files(tmp_path: Path, img: np.ndarray, txt: np.ndarray, c2i: np.ndarray) -> list[str]:
    for name, arr in (("I", img), ("T", txt), ("M", c2i)):
        np.save(tmp_path / f"{name}.npy", arr)
    return ["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy"),
            "--text-to-image", str(tmp_path / "M.npy"), "--json"]  # fmt: skip


def test_score_reads_big_endian_arrays_as_their_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 6)).astype(np.float32)
    c2i = np.repeat(np.arange(20), 2)
    txt = img[c2i] + rng.normal(size=(40, 6)).astype(np.float32)
    rc, native, _ = run_main(_score_files(tmp_path, img, txt, c2i))
    assert rc == 0
    rc, swapped, err = run_main(_score_files(tmp_path, img.astype(">f4"), txt.astype(">f8"), c2i.astype(">i8")))
    assert rc == 0, err
    assert json.loads(swapped) == json.loads(native)


def test_score_values_beyond_float32_name_the_file(tmp_path: Path) -> None:
    img = np.ones((4, 3)) * 1e300
    rc, _, err = run_main(_score_files(tmp_path, img, np.ones((4, 3)), np.arange(4)))
    assert rc == 2 and "Traceback" not in err
    assert "I.npy: row 0 has a value beyond float32's range" in _lines(err)[-1]


# ---------------------------------------------------------------------------------------------------------------
# a failing write never stops the grid silently


def test_a_record_that_cannot_be_written_fails_its_cell_and_the_grid_goes_on(config: Path) -> None:
    results = config.parent / "results"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / "towers").write_text("not a folder")  # every towers record write fails (ENOTDIR)
    rc, _, err = run_main(["run", "--config", str(config), "--methods", "zeroshot", "-q"])
    assert rc == 1 and "Traceback" not in err
    assert any("FAILED: towers" in ln and "cannot write" in ln and "towers/synthetic" in ln for ln in _lines(err)), err
    assert read_record(result_path(results, "vse_infty", "zeroshot"))["status"] == "ok"  # the other cell ran


def test_an_unwritable_results_folder_is_one_line_before_anything_runs(config: Path) -> None:
    (config.parent / "results").write_text("a file where the results folder should be")
    rc, _, err = run_main(["run", "--config", str(config), "-q"])
    assert rc == 2 and "Traceback" not in err
    assert "the results folder is not writable" in _lines(err)[-1]
    assert not (config.parent / "work").exists()  # nothing was loaded or encoded


def test_disk_full_while_writing_is_a_failed_cell(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import bench.grid.execute as execute

    real = execute.write_record

    def full(path: Path, record: dict) -> None:
        if record.get("model") == "vse_infty":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, record)

    monkeypatch.setattr(execute, "write_record", full)
    rc, _, err = run_main(["run", "--config", str(config), "--methods", "zeroshot", "-q"])
    assert rc == 1 and "No space left on device" in err and "Traceback" not in err
    assert read_record(result_path(config.parent / "results", "towers", "zeroshot"))["status"] == "ok"


def test_records_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_record(tmp_path / "r.json", {"schema": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------------------------
# records are validated when read


def test_an_ok_record_without_metrics_is_run_again_and_named(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "-q"])
    assert rc == 0, err
    path = result_path(config.parent / "results", "towers", "zeroshot")
    rec = json.loads(path.read_text())
    del rec["metrics"]
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="invalid record: status ok but no metrics"):
        read_record(path)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers"])
    assert rc == 0 and f"{path}: invalid record: status ok but no metrics; the cell runs again" in caplog.text
    assert any("1 ran, 0 skipped" in ln for ln in _lines(err))
    assert read_record(path)["metrics"]["t2t"]["r1"] >= 0


# ---------------------------------------------------------------------------------------------------------------
# images


def test_sixteen_bit_png_is_scaled_not_white(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    want = np.round(ramp / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], want)
    clipped = np.asarray(Image.open(tmp_path / "g16.png").convert("RGB"))[..., 0]  # what PIL alone gives
    assert (clipped == 255).mean() > 0.9 and not np.array_equal(clipped, want)


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0  # palette entry 0 (black) is transparent
    im.save(tmp_path / "p.png", transparency=0)
    rgb = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)


def test_cmyk_converts_as_pil_does(tmp_path: Path) -> None:
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    want = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "c.jpg")), want)


@pytest.mark.parametrize("side", [40, 200])  # over the limit, and over twice the limit (PIL's own bomb error)
def test_an_image_over_the_pixel_limit_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    Image.new("RGB", (side, side)).save(tmp_path / "big.png")
    monkeypatch.setenv("BENCH_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match=r"big.png: .*over the limit of 1,000 .*BENCH_MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")


def test_symlink_loop_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    with pytest.raises(DataError, match="loop.jpg: image path is a symlink loop"):
        load_image(tmp_path / "loop.jpg")


# ---------------------------------------------------------------------------------------------------------------
# gallery integrity


def _flat(root: Path, rows: list[dict]) -> dict:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "images" / name)
    (root / "test.json").write_text(json.dumps(rows))
    return {"format": "flat_json", "root": str(root)}


def test_one_image_file_under_two_ids_is_an_error_naming_both_rows(tmp_path: Path) -> None:
    spec = _flat(tmp_path, [{"image_path": "images/a.jpg", "caption": "x", "image_id": "1"},
                            {"image_path": "images/a.jpg", "caption": "y", "image_id": "2"}])  # fmt: skip
    with pytest.raises(DataError, match=r"row 1.*images/a.jpg is already image '1' \(.*row 0"):
        load_split("d", spec, "test", work_dir=tmp_path)


def test_a_null_image_id_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "albef"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "a.jpg")
    (root / "coco_karpathy_test.json").write_text(json.dumps([{"image": "images/a.jpg", "caption": ["x"],
                                                               "image_id": None}]))  # fmt: skip
    with pytest.raises(DataError, match="image id is null"):
        load_split("d", {"format": "albef", "root": str(root)}, "test", work_dir=tmp_path)


def test_a_duplicated_karpathy_row_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "val2014").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val2014" / "a.jpg")
    row = {"filepath": "val2014", "filename": "a.jpg", "cocoid": 7, "split": "test", "sentences": [{"raw": "x"}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [row, dict(row)]}))
    with pytest.raises(DataError, match="a.jpg is already image '7'"):
        load_split("coco", {"format": "karpathy", "root": str(tmp_path)}, "test", work_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# refused checkpoints


class _Payload:
    """Anything that is not a tensor: weights_only loading refuses to unpickle it."""


def _pickled(path: Path) -> Path:
    import torch

    torch.save({"state_dict": {}, "extra": _Payload()}, path)
    return path


def test_refused_timm_checkpoint_is_one_line_for_towers(tmp_path: Path, tiny_text_folder: Path) -> None:
    bad = _pickled(tmp_path / "tower.pt")
    opts = {"image_model": "test_byobnet", "image_weights": str(bad), "text_model": str(tiny_text_folder)}
    with pytest.raises(ConfigError, match=rf"refused to unpickle {bad}: .*\(allow_pickle = true runs code from it\)"):
        create_adapter("towers", opts)


def test_refused_clip_checkpoint_is_one_line_not_weights_unavailable(tmp_path: Path) -> None:
    config = Path(__file__).parent / "fixtures" / "tiny_clip.json"
    bad = _pickled(tmp_path / "epoch_1.pt")
    opts = {"checkpoint": config.stem, "pretrained": str(bad), "model_config": str(config)}
    with pytest.raises(ConfigError, match=rf"refused to unpickle {bad}: .*allow_pickle = true runs code from it"):
        create_adapter("clip", opts)


def test_refused_teacher_checkpoint_fails_its_cell_in_one_line(config: Path) -> None:
    bad = _pickled(config.parent / "teacher.pt")
    text = config.read_text() + f'\n[teachers]\nimage_model = "tf_efficientnet_lite0"\nimage_weights = "{bad}"\n'
    config.write_text(text + 'text_model = "all-MiniLM-L6-v2"\n')
    rc, _, err = run_main(["run", "--config", str(config), "--models", "vse_infty", "--methods", "cusa", "-q"])
    assert rc == 1 and "Traceback" not in err
    failed = [ln for ln in _lines(err) if "FAILED" in ln]
    assert len(failed) == 1 and f"refused to unpickle {bad}" in failed[0] and "allow_pickle = true" in failed[0]


# ---------------------------------------------------------------------------------------------------------------
# stale temporaries


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    host = socket.gethostname().split(".")[0]
    dead = tmp_path / "runs" / f".cusa-seed0.json.{host}-999999999.abc123.tmp"
    live = tmp_path / "runs" / f".cusa-seed1.json.{host}-{os.getpid()}.def456.tmp"
    other = tmp_path / "runs" / ".cusa-seed2.json.elsewhere-12.ghi789.tmp"
    for p in (dead, live, other):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and other.exists()  # another host's is kept until it is a day old
    os.utime(other, (0, 0))
    assert remove_stale_temporaries(tmp_path) == [other]


def test_the_next_run_removes_a_killed_runs_temporary(config: Path) -> None:
    host = socket.gethostname().split(".")[0]
    left = config.parent / "results" / "checkpoints" / f".contrastive-seed0-abc.pt.{host}-999999999.x1y2z3.tmp"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"half a checkpoint")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "-q"])
    assert rc == 0, err
    assert not left.exists()


def test_a_json_caption_file_with_a_bom_loads_as_the_csv_loader_does(tmp_path: Path) -> None:
    rows = [{"image_path": "images/a.jpg", "caption": "a red square", "image_id": "1"}]
    spec = _flat(tmp_path, rows)
    (tmp_path / "test.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    split = load_split("d", spec, "test", work_dir=tmp_path)
    assert list(split.captions) == ["a red square"]
