"""Bad input to ``bench``: every problem gives one clear error naming the file or key, and never a new or
half-written result file; results that other cells already finished stay byte-for-byte intact.

Exit codes: 2 for config and input errors raised before any cell runs, 1 for a grid in which a cell failed.
A module-scoped run of towers × zeroshot over a tiny valid ``flat_json`` dataset provides the finished results.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_grid import run_main, snapshot

from bench.grid.records import read_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # towers are the packaged offline weights; never the hub

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (235, 205, 40)}
SPLITS = {"train": [("red", "square"), ("green", "circle"), ("blue", "circle"), ("yellow", "square")],
          "test": [("red", "circle"), ("green", "square"), ("blue", "square"), ("yellow", "circle")]}  # fmt: skip


def make_flat_json(root: Path) -> Path:
    """A tiny valid flat_json dataset: real JPEGs under images/, train.json and test.json (2 captions per image)."""
    (root / "images").mkdir(parents=True)
    for split, scenes in SPLITS.items():
        rows = []
        for colour, shape in scenes:
            name = f"{split}_{colour}_{shape}.jpg"
            im = Image.new("RGB", (48, 40), (235, 235, 230))
            box = (12, 8, 36, 32)
            draw = ImageDraw.Draw(im)
            (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
            im.save(root / "images" / name, format="JPEG", quality=90)
            for caption in (f"a {colour} {shape}", f"one {colour} {shape} on a white background"):
                rows.append({"image_path": f"images/{name}", "caption": caption, "image_id": name})
        (root / f"{split}.json").write_text(json.dumps(rows, indent=1))
    return root


def write_config(
    path: Path,
    *,
    results: Path,
    work: Path,
    datasets: dict[str, Path],
    grid_datasets: list[str] | None = None,
    grid_models: list[str] | None = None,
    grid_methods: list[str] | None = None,
    train_extra: str = "",
    extra: str = "",
) -> Path:
    tables = "".join(
        f'\n[datasets.{name}]\nformat = "flat_json"\nroot = {json.dumps(str(root))}\n'
        for name, root in datasets.items()
    )
    path.write_text(
        f"""
[paths]
results_dir = {json.dumps(str(results))}
work_dir = {json.dumps(str(work))}

[grid]
models = {json.dumps(grid_models or ["towers"])}
datasets = {json.dumps(grid_datasets or list(datasets))}
methods = {json.dumps(grid_methods or ["zeroshot"])}
seeds = [0]

[train]
device = "cpu"
{train_extra}

[models.towers]
adapter = "towers"
{tables}
{extra}
"""
    )
    return path


def one_error_line(err: str) -> str:
    """The single ``bench: error:`` line that is all of stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("bench: error: ")
    return lines[0]


def one_failure(err: str) -> str:
    """The single ``bench: FAILED:`` line of a grid with one failed cell; no traceback anywhere."""
    failed = [line for line in err.splitlines() if line.startswith("bench: FAILED:")]
    assert len(failed) == 1, err
    assert "Traceback" not in err, err
    assert any(line.startswith("bench: ") and "1 failed" in line for line in err.splitlines()), err
    return failed[0]


def result_file(results: Path, dataset: str, model: str = "towers") -> Path:
    return results / "runs" / model / dataset / "test" / "zeroshot-seed0.json"


@dataclass
class Baseline:
    good: Path
    results: Path
    work: Path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("bad_input")
    good = make_flat_json(root / "good")
    results, work = root / "results", root / "work"
    config = write_config(root / "bench.toml", results=results, work=work, datasets={"good": good})
    rc, _, err = run_main(["run", "--config", str(config), "-q"])
    assert rc == 0, err
    assert read_record(result_file(results, "good"))["status"] == "ok"
    return Baseline(good, results, work)


@dataclass
class Env:
    """A test's own copy of the finished results; ``config(...)`` writes a bench.toml that includes ``good``."""

    tmp: Path
    base: Baseline
    results: Path
    before: dict[str, tuple[bytes, int]]

    def dataset(self, name: str) -> Path:
        """A fresh copy of the good dataset to break."""
        return Path(shutil.copytree(self.base.good, self.tmp / name))

    def config(self, datasets: dict[str, Path] | None = None, **kwargs: object) -> str:
        all_sets = {"good": self.base.good, **(datasets or {})}
        return str(
            write_config(
                self.tmp / "bench.toml", results=self.results, work=self.base.work, datasets=all_sets, **kwargs
            )
        )

    def assert_untouched(self, failed: tuple[str, ...] = ()) -> None:
        """No finished result added, removed or rewritten; the only new files are the ``failed`` records of the
        datasets named (a failed cell leaves a record that says why, never over an ``ok`` one)."""
        after = snapshot(self.results)
        assert {name: after.get(name) for name in self.before} == self.before, "a finished result was rewritten"
        expected = sorted(str(result_file(self.results, d).relative_to(self.results)) for d in failed)
        assert sorted(set(after) - set(self.before)) == expected
        for d in failed:
            assert read_record(result_file(self.results, d))["status"] == "failed"

    def failed_reason(self, dataset: str) -> str:
        return read_record(result_file(self.results, dataset))["reason"]


@pytest.fixture
def env(baseline: Baseline, tmp_path: Path) -> Env:
    results = Path(shutil.copytree(baseline.results, tmp_path / "results"))
    return Env(tmp_path, baseline, results, snapshot(results))


def set_caption(dataset: Path, split: str, row: int, caption: str) -> None:
    path = dataset / f"{split}.json"
    rows = json.loads(path.read_text())
    rows[row]["caption"] = caption
    path.write_text(json.dumps(rows))


# ---------------------------------------------------------------------------------------------------------------
# data errors: the cell fails (exit 1), other cells are unaffected


def test_missing_image_fails_its_cell_naming_the_file(env: Env) -> None:
    bad = env.dataset("bad")
    missing = bad / "images" / "test_green_square.jpg"
    missing.unlink()
    rc, _, err = run_main(["run", "--config", env.config({"bad": bad}), "-q"])
    assert rc == 1
    line = one_failure(err)
    assert "bad/test" in line and str(missing) in line and "test.json" in line
    assert "0 ran, 1 skipped" in err
    env.assert_untouched(failed=("bad",))
    assert str(missing) in env.failed_reason("bad")


def test_unreadable_jpeg_fails_its_cell_and_the_rest_of_the_grid_completes(env: Env) -> None:
    bad, other = env.dataset("bad"), env.dataset("other")
    broken = bad / "images" / "test_blue_square.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body " * 8)
    config = env.config({"bad": bad, "other": other}, grid_datasets=["bad", "other", "good"])
    rc, out, err = run_main(["run", "--config", config, "-q"])
    assert rc == 1
    line = one_failure(err)
    assert "bad/test" in line and str(broken) in line
    assert "1 ran, 1 skipped" in err
    assert str(broken) in env.failed_reason("bad")
    done = read_record(result_file(env.results, "other"))
    assert done["status"] == "ok"
    # `other` holds the same images and captions as `good`, so the completed cell scores exactly the same.
    assert done["metrics"] == read_record(result_file(env.results, "good"))["metrics"]
    assert "### other (test)" in out and "### good (test)" in out
    assert "failed: " in out.split("### bad (test)")[1].split("###")[0]  # the bad dataset's row says why
    after = snapshot(env.results)
    assert {name: after.get(name) for name in env.before} == env.before, "a finished result was rewritten"
    new = sorted(set(after) - set(env.before))
    records = [str(result_file(env.results, d).relative_to(env.results)) for d in ("bad", "other")]
    # The two new records, and the per-query file of the one that finished (a failed cell has none).
    assert new == sorted([*records, records[1].replace(".json", ".queries.npz")])


def test_unreadable_jpeg_with_loader_workers_is_still_one_line(env: Env) -> None:
    bad = env.dataset("bad")
    broken = bad / "images" / "test_blue_square.jpg"
    broken.write_bytes(b"garbage" * 20)
    config = env.config({"bad": bad}, grid_datasets=["bad"])
    rc, _, err = run_main(["run", "--config", config, "--set", "train.num_workers=1", "-q"])
    assert rc == 1
    line = one_failure(err)
    assert str(broken) in line
    env.assert_untouched(failed=("bad",))


@pytest.mark.parametrize("caption", ["", "   \t "], ids=["empty", "blank"])
def test_empty_caption_names_file_row_and_field(env: Env, caption: str) -> None:
    bad = env.dataset("bad")
    set_caption(bad, "test", 3, caption)
    rc, _, err = run_main(["run", "--config", env.config({"bad": bad}, grid_datasets=["bad", "good"]), "-q"])
    assert rc == 1
    line = one_failure(err)
    assert "test.json" in line and "row 3" in line and "'caption'" in line
    env.assert_untouched(failed=("bad",))


# ---------------------------------------------------------------------------------------------------------------
# config and name errors: nothing runs (exit 2)


@pytest.mark.parametrize("where", ["flag", "toml"])
def test_unknown_model_name(env: Env, where: str) -> None:
    if where == "flag":
        argv = ["run", "--config", env.config(), "--models", "towers,nope"]
    else:
        argv = ["run", "--config", env.config(grid_models=["towers", "nope"])]
    rc, out, err = run_main(argv)
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "model 'nope'" in line and "known: towers" in line
    env.assert_untouched()


@pytest.mark.parametrize("where", ["flag", "toml"])
def test_unknown_method_name(env: Env, where: str) -> None:
    if where == "flag":
        argv = ["run", "--config", env.config(), "--methods", "zeroshot,nope"]
    else:
        argv = ["run", "--config", env.config(grid_methods=["zeroshot", "nope"])]
    rc, out, err = run_main(argv)
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "method 'nope'" in line and "contrastive" in line and "zeroshot" in line
    env.assert_untouched()


@pytest.mark.parametrize("where", ["flag", "toml"])
def test_unknown_dataset_id(env: Env, where: str) -> None:
    if where == "flag":
        argv = ["run", "--config", env.config(), "--datasets", "good,nope"]
    else:
        argv = ["run", "--config", env.config(grid_datasets=["good", "nope"])]
    rc, out, err = run_main(argv)
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "dataset 'nope'" in line and "known: good" in line
    env.assert_untouched()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"extra": "[trian]\nepochs = 1"}, ["'trian'", "top-level", "train"]),
        ({"train_extra": "epochz = 3"}, ["'epochz'", "[train]", "epochs"]),
        ({"train_extra": 'epochs = "two"'}, ["[train].epochs", "'two'"]),
    ],
    ids=["top-level", "in-train", "wrong-type"],
)
def test_bad_toml_key_names_file_and_key(env: Env, kwargs: dict[str, str], names: list[str]) -> None:
    config = env.config(**kwargs)
    rc, out, err = run_main(["run", "--config", config])
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert config in line
    for name in names:
        assert name in line
    env.assert_untouched()


def test_malformed_toml_names_the_file(env: Env) -> None:
    path = Path(env.config())
    path.write_text(path.read_text().replace("[train]", "[train", 1))
    rc, out, err = run_main(["run", "--config", str(path)])
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(path) in line and "malformed TOML" in line and "line" in line
    env.assert_untouched()


def test_missing_config_file(env: Env) -> None:
    path = env.tmp / "nope.toml"
    rc, out, err = run_main(["run", "--config", str(path)])
    assert rc == 2 and out == ""
    assert str(path) in one_error_line(err)
    env.assert_untouched()


@pytest.mark.parametrize(
    ("extra", "grid", "names"),
    [
        ('[models.mystery]\nadapter = "nope"', {"grid_models": ["towers", "mystery"]}, ["'nope'", "vse_infty"]),
        (
            '[models.towers2]\nadapter = "towers"\nimage_modle = "x"',
            {"grid_models": ["towers", "towers2"]},
            ["'image_modle'", "image_model"],
        ),
        (
            '[datasets.typo]\nformat = "flat_json"\nroot = {good}\nsort_imagez = true',
            {"grid_datasets": ["good", "typo"]},
            ["'sort_imagez'", "sort_images"],
        ),
        (
            '[models.towers2]\nadapter = "towers"\nmethods = ["zeroshott"]',
            {"grid_models": ["towers", "towers2"]},
            ["'zeroshott'", "zeroshot"],
        ),
    ],
    ids=["adapter-family", "model-option", "dataset-option", "model-methods"],
)
def test_bad_model_or_dataset_table_fails_before_any_cell(
    env: Env, extra: str, grid: dict[str, list[str]], names: list[str]
) -> None:
    config = env.config(extra=extra.format(good=json.dumps(str(env.base.good))), **grid)
    rc, _, err = run_main(["run", "--config", config, "-q"])
    assert rc == 2
    line = one_error_line(err)
    for name in names:
        assert name in line
    env.assert_untouched()


def test_non_integer_seed_is_a_one_line_error(env: Env) -> None:
    rc, out, err = run_main(["run", "--config", env.config(), "--seeds", "0,x"])
    assert rc == 2 and out == ""
    assert "'x'" in one_error_line(err)
    env.assert_untouched()


# ---------------------------------------------------------------------------------------------------------------
# bench score


@pytest.mark.parametrize("bad_id", ["too_big", "negative"])
def test_score_out_of_range_image_id_names_the_npy(tmp_path: Path, bad_id: str) -> None:
    rng = np.random.default_rng(0)
    n_img = 5
    np.save(tmp_path / "I.npy", rng.standard_normal((n_img, 4)).astype(np.float32))
    c2i = np.repeat(np.arange(n_img), 2)
    np.save(tmp_path / "T.npy", rng.standard_normal((len(c2i), 4)).astype(np.float32))
    c2i[7] = n_img if bad_id == "too_big" else -1
    np.save(tmp_path / "M.npy", c2i)
    argv = ["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy")]
    rc, out, err = run_main([*argv, "--text-to-image", str(tmp_path / "M.npy")])
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert str(tmp_path / "M.npy") in line and "row 7" in line and str(c2i[7]) in line
