"""Nothing silently wrong, round two: ``--force`` recomputes the features it reports, and ``bench compare`` pairs only
what was scored on the same queries, with the same seeds where the method trains."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tiny_grid import MODEL_TABLES, SYNTHETIC_TABLE, run_main

from bench.data import load_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = f"""
[paths]
results_dir = {{results}}
work_dir = {{work}}

[grid]
models = ["vse_infty"]
datasets = ["synthetic"]
methods = ["zeroshot"]
seeds = [0]

[train]
epochs = 1
batch_size = 16
device = "cpu"

[eval]
batch_size = 32
bootstrap = 100

[teachers]
text_model = "all-MiniLM-L6-v2"

{MODEL_TABLES}
{SYNTHETIC_TABLE}"""


def _config(root: Path) -> Path:
    path = root / "bench.toml"
    path.write_text(CONFIG.format(results=json.dumps(str(root / "results")), work=json.dumps(str(root / "work"))))
    return path


def _record(root: Path, dataset: str, method: str, seed: int = 0) -> dict:
    return json.loads((root / "results/runs/vse_infty" / dataset / "test" / f"{method}-seed{seed}.json").read_text())


def _run(cfg: Path, *args: str) -> str:
    rc, _, err = run_main(["run", "--config", str(cfg), "--no-table", "-q", *args])
    assert rc == 0, err[-3000:]
    return err


def test_force_recomputes_features_of_an_image_replaced_behind_the_fingerprint(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    _run(cfg)
    before = _record(tmp_path, "synthetic", "zeroshot")
    split = load_split("synthetic", {"format": "synthetic", "seed": 0, "n_train": 48, "n_val": 12, "n_test": 24,
                                     "image_size": 64}, "test", work_dir=tmp_path / "work")  # fmt: skip
    # Replace the first test photo by another one of the split, padded to the same byte size, and restore its mtime:
    # size + mtime, the stat fingerprint, cannot see it (PNG decoders stop at IEND, so the padding is never read).
    target = Path(split.image_paths[0])
    st = target.stat()
    donor = next(Path(p) for p in split.image_paths[1:] if Path(p).stat().st_size <= st.st_size)
    target.write_bytes(donor.read_bytes().ljust(st.st_size, b"\0"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert "0 ran, 1 skipped" in _run(cfg)  # the documented limit of the stat fingerprint
    _run(cfg, "--force")
    forced = _record(tmp_path, "synthetic", "zeroshot")
    shutil.rmtree(tmp_path / "work" / "features")  # the truth: nothing cached
    _run(cfg, "--force")
    truth = _record(tmp_path, "synthetic", "zeroshot")
    assert truth["metrics"] != before["metrics"]  # the swap changes the ranks, so the test can tell
    assert forced["metrics"] == truth["metrics"]


SYNTHETIC_SPEC = {"format": "synthetic", "seed": 0, "n_train": 48, "n_val": 12, "n_test": 24, "image_size": 64}


def _swap_behind_stat(path: Path, donor: Path) -> None:
    """Replace ``path`` by ``donor``'s photo padded to the same byte size, and restore its mtime (PNG decoders stop
    at IEND, so the padding is never read)."""
    st = path.stat()
    assert donor.stat().st_size <= st.st_size
    path.write_bytes(donor.read_bytes().ljust(st.st_size, b"\0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_content_fingerprints_see_an_image_replaced_behind_the_stat_and_stay_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[eval]\n", '[eval]\nfingerprint = "content"\n'))
    _run(cfg)
    before = _record(tmp_path, "synthetic", "zeroshot")
    split = load_split("synthetic", SYNTHETIC_SPEC, "test", work_dir=tmp_path / "work")
    paths = [str(p) for p in split.image_paths]
    digests = json.loads((tmp_path / "work" / "content-digests.json").read_text())
    assert set(paths) <= set(digests)  # every image's sha256, cached

    # A warm run reads no image: every digest comes from the cache (and the record is served).
    opened: list[str] = []
    real_open = open

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(os.fspath(path) if isinstance(path, (str, os.PathLike)) else "")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    assert "0 ran, 1 skipped" in _run(cfg)
    monkeypatch.undo()
    assert not set(opened) & set(paths)

    target = Path(paths[0])
    _swap_behind_stat(target, next(Path(p) for p in paths[1:] if Path(p).stat().st_size <= target.stat().st_size))
    assert "1 ran, 0 skipped" in _run(cfg)  # a plain run sees it, where the stat fingerprint cannot (test above)
    seen = _record(tmp_path, "synthetic", "zeroshot")
    shutil.rmtree(tmp_path / "work" / "features")  # the truth: nothing cached
    _run(cfg, "--force")
    truth = _record(tmp_path, "synthetic", "zeroshot")
    assert truth["metrics"] != before["metrics"] and seen["metrics"] == truth["metrics"]
    # the stamp mode is not part of the config: records of either mode keep their hash
    assert seen["config_hash"] == before["config_hash"] and "fingerprint" not in seen["config"]["eval"]


def test_a_stored_training_is_not_reused_once_its_training_data_changed(tmp_path: Path) -> None:
    """An eval-only set's trained cell reuses the training its train_on dataset's cell stored, only while that was
    trained on the data there now: run alone after a training image changed, it trains again."""
    import sys

    from bench.grid.fingerprint import content_key
    from bench.train.store import read_training_meta

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import unimodal_fixtures as fx

    fx.build_stsb(tmp_path / "stsb")
    cfg = _config(tmp_path)
    text = cfg.read_text().replace('datasets = ["synthetic"]', 'datasets = ["synthetic", "stsb"]')
    text = text.replace('methods = ["zeroshot"]', 'methods = ["usa"]')
    cfg.write_text(text + f'\n[datasets.stsb]\nformat = "stsb"\nroot = {json.dumps(str(tmp_path / "stsb"))}\n'
                   'train_on = "synthetic"\n')  # fmt: skip
    assert "2 ran, 0 skipped" in _run(cfg)
    store = Path(_record(tmp_path, "stsb", "usa")["trained_store"])
    assert store == Path(_record(tmp_path, "synthetic", "usa")["trained_store"])  # one training, reused
    stale = read_training_meta(store)["fingerprints"]["train"]

    train = load_split("synthetic", SYNTHETIC_SPEC, "train", work_dir=tmp_path / "work")
    target = Path(train.image_paths[0])
    target.write_bytes(Path(train.image_paths[1]).read_bytes())  # another photo: the stat fingerprint sees it
    assert "1 ran, 0 skipped" in _run(cfg, "--datasets", "stsb")
    now = content_key(load_split("synthetic", SYNTHETIC_SPEC, "train", work_dir=tmp_path / "work"))
    assert now != stale and read_training_meta(store)["fingerprints"]["train"] == now


def _twin_sets(root: Path, work: Path) -> str:
    """Two CSV sets with the same layout and the same image ids (``img0.png`` ... ``img11.png``) but other photos and
    captions: the first and the second half of the synthetic test split."""
    split = load_split("synthetic", {"format": "synthetic", "seed": 0, "n_train": 48, "n_val": 12, "n_test": 24,
                                     "image_size": 64}, "test", work_dir=work)  # fmt: skip
    tables = []
    for name, images in (("set_a", range(0, 12)), ("set_b", range(12, 24))):
        folder = root / name
        folder.mkdir()
        rows = ["filepath,caption"]
        for i, img in enumerate(images):
            shutil.copy(split.image_paths[img], folder / f"img{i}.png")
            rows += [f"img{i}.png,{json.dumps(c)}" for c, owner in zip(split.captions, split.caption_to_image,
                                                                      strict=True) if owner == img]  # fmt: skip
        (folder / "test.csv").write_text("\n".join(rows) + "\n")
        tables.append(f'[datasets.{name}]\nformat = "csv"\nroot = {json.dumps(str(folder))}\n')
    return "\n".join(tables)


@pytest.fixture(scope="module")
def seeds_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare_pairs")
    cfg = _config(root)
    _run(cfg, "--methods", "zeroshot,contrastive", "--seeds", "0,1")
    _run(cfg, "--methods", "usa", "--seeds", "0")
    _run(cfg, "--models", "towers", "--methods", "zeroshot")
    cfg.write_text(cfg.read_text() + _twin_sets(root, root / "work"))
    _run(cfg, "--datasets", "set_a,set_b", "--methods", "zeroshot")
    return root


def test_compare_refuses_two_sides_scored_on_other_queries(seeds_grid: Path) -> None:
    a, b = (seeds_grid / f"results/runs/vse_infty/{d}/test/zeroshot-seed0.json" for d in ("set_a", "set_b"))
    qa, qb = (_record(seeds_grid, d, "zeroshot")["metrics"]["t2i"]["n_queries"] for d in ("set_a", "set_b"))
    assert qa == qb  # the same layout: only the images and captions tell them apart
    rc, out, err = run_main(["compare", "--config", str(seeds_grid / "bench.toml"), str(a), str(b)])
    assert rc == 2 and out == "" and "Traceback" not in err
    assert "scored on different queries" in err


def test_compare_pairs_the_common_seeds_of_trained_sides_and_says_which_were_left_out(seeds_grid: Path) -> None:
    cfg = str(seeds_grid / "bench.toml")
    rc, out, err = run_main(["compare", "--config", cfg, "vse_infty:contrastive", "vse_infty:usa",
                             "--dataset", "synthetic", "--json"])  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    assert res["n_seeds"] == 1 and res["a"]["seeds"] == [0] and res["a"]["left_out"] == [1]
    assert res["b"]["seeds"] == [0] and res["b"]["left_out"] == []
    rc, text, _ = run_main(["compare", "--config", cfg, "vse_infty:contrastive", "vse_infty:usa",
                            "--dataset", "synthetic"])  # fmt: skip
    assert rc == 0 and "left out: A's seed(s) 1" in text
    # A zero-shot side, which seeds do not change, still pairs with every seed of a trained one.
    rc, out, _ = run_main(["compare", "--config", cfg, "vse_infty:contrastive", "vse_infty:zeroshot",
                           "--dataset", "synthetic", "--json"])  # fmt: skip
    res = json.loads(out)
    assert rc == 0 and res["n_seeds"] == 2 and res["a"]["left_out"] == [] and res["b"]["seeds"] == [0, 0]


def test_a_dataset_folder_moved_away_is_the_loaders_error_not_done(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace('datasets = ["synthetic"]', 'datasets = ["set_a"]')
                   + _twin_sets(tmp_path, tmp_path / "work"))  # fmt: skip
    _run(cfg)
    record = tmp_path / "results/runs/vse_infty/set_a/test/zeroshot-seed0.json"
    kept = record.read_bytes()
    (tmp_path / "set_a").rename(tmp_path / "moved")
    rc, _, err = run_main(["run", "--config", str(cfg), "--no-table", "-q"])
    assert rc == 1 and "Traceback" not in err and "skipped (done)" in err and "0 skipped" in err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and str(tmp_path / "set_a") in failed[0]
    assert record.read_bytes() == kept  # the earlier ok result is kept, not overwritten by the failure


def test_compare_names_a_side_that_matches_nothing_and_lists_the_stored_ones(seeds_grid: Path) -> None:
    rc, _, err = run_main(["compare", "--config", str(seeds_grid / "bench.toml"), "vse_infty:cusa", "vse_infty:usa"])
    assert rc == 2 and "Traceback" not in err
    assert "vse_infty:cusa: matched no stored record; stored:" in err and "vse_infty:contrastive" in err


def test_report_checks_focus_and_against_and_compares_with_the_baseline(seeds_grid: Path, tmp_path: Path) -> None:
    def report(out: str, *flags: str) -> tuple[int, str]:
        rc, _, err = run_main(["report", "--config", str(seeds_grid / "bench.toml"), "--all",
                               "--html", str(tmp_path / out), *flags])  # fmt: skip
        return rc, err

    rc, err = report("r1", "--focus", "clip:cusa")
    assert rc == 2 and "--focus clip:cusa: no stored row" in err and "vse_infty:usa" in err
    rc, err = report("r2", "--against", "nosuch")
    assert rc == 2 and "--against nosuch" in err and "Traceback" not in err
    rc, err = report("r3", "--focus", "towers:zeroshot")
    assert rc == 0, err  # a row without image-text metrics: its page, no traceback
    rc, err = report("r4", "--focus", "vse_infty:usa")
    assert rc == 0, err
    page = (tmp_path / "r4" / "synthetic-test.html").read_text()
    assert "usa right, contrastive wrong" in page  # the ablation's baseline, not the random-head zero-shot


def test_report_and_table_outputs_that_cannot_be_written_are_one_line(
    seeds_grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = str(seeds_grid / "bench.toml")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["report", "--html", str(a_file)], "is a file; name a folder"),
        (["report", "--html", str(a_file / "sub")], "is a file, not a folder"),
        (["table", "--out", str(tmp_path)], "is a folder; name a file"),
        (["table", "--out", str(a_file / "t.md")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        rc, out, err = run_main([argv[0], "--config", cfg, *argv[1:]])
        assert rc == 2 and message in err and "Traceback" not in err, (argv, err)

    import bench.cli.results as results

    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(results, "atomic_write_bytes", full)
    rc, _, err = run_main(["table", "--config", cfg, "--out", str(tmp_path / "t.md")])
    assert rc == 2 and "cannot write the table (No space left on device" in err and "Traceback" not in err


def test_a_record_with_a_non_numeric_metric_is_named_and_left_out(
    seeds_grid: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "results"
    shutil.copytree(seeds_grid / "results", results)
    path = results / "runs/vse_infty/synthetic/test/usa-seed0.json"
    rec = json.loads(path.read_text())
    rec["metrics"]["i2t"]["r1"] = "high"
    path.write_text(json.dumps(rec))
    rc, out, err = run_main(["table", "--config", str(seeds_grid / "bench.toml"), "--all",
                             "--results-dir", str(results)])  # fmt: skip
    assert rc == 0 and "Traceback" not in err
    assert f"skipping {path}: invalid record: metrics.i2t.r1 is not a number ('high')" in caplog.text
    assert "| contrastive" in out and "| usa" not in out
    from bench.report.collect import TableError
    from bench.report.tables import render

    with pytest.raises(TableError, match=r"metrics\.i2t\.r1 is not a number \('high'\)"):
        render([{**rec, "_path": str(path)}])


def test_bench_data_says_what_the_loader_could_not_find(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + f'\n[datasets.gone]\nformat = "stsb"\nroot = "{tmp_path / "moved"}"\n')
    rc, _, err = run_main(["data", "gone", "--config", str(cfg), "--splits", "test"])
    assert rc == 2 and "Traceback" not in err
    assert f"{tmp_path / 'moved' / 'sts-test.csv'}: sentence-pair file for split 'test' not found" in err


def test_bench_rm_checks_its_status_filter(seeds_grid: Path) -> None:
    cfg = str(seeds_grid / "bench.toml")
    rc, _, err = run_main(["rm", "--config", cfg, "--status", "faild"])
    assert rc == 2 and "unknown status 'faild'" in err
    rc, out, err = run_main(["rm", "--config", cfg, "--status", "any", "--dry-run"])
    assert rc == 0 and out.count("would remove") >= 6 and "removed" not in out.replace("would remove", "")
    assert (seeds_grid / "results/runs/vse_infty/synthetic/test/usa-seed0.json").is_file()


def test_python_api_records_find_their_per_query_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bench

    monkeypatch.chdir(tmp_path)
    records = bench.run(_config(tmp_path), models=["vse_infty"], methods=["zeroshot"])
    assert all(Path(r["_path"]).is_file() for r in records)
    with caplog.at_level("WARNING"):
        text = bench.table(records, intervals=True)
    assert "no per-query results" not in caplog.text and "[" in text.split("| vse_infty")[1]


def test_an_undecodable_image_inside_a_container_names_the_container_not_a_buffer(tmp_path: Path) -> None:
    from bench.data.base import load_image
    from bench.data.refs import TarMember
    from bench.errors import DataError

    shard = tmp_path / "0.tar"
    shard.write_bytes(b"not an image at all" * 4)
    with pytest.raises(DataError) as e:
        load_image(TarMember(shard, "a.jpg", offset=0, size=40))
    assert str(e.value).startswith(f"{shard}::a.jpg: cannot decode image") and "BytesIO" not in str(e.value)


def test_a_parquet_id_column_of_lists_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.errors import DataError

    table = pa.table({"image": [b"x", b"y"], "caption": ["a dog", "a cat"], "tags": [["a"], ["b"]]})
    pq.write_table(table, tmp_path / "test.parquet")
    with pytest.raises(DataError, match=r"test\.parquet: row 0 column 'tags' \(option 'id_column'\) holds a list"):
        load_split("p", {"format": "parquet", "root": str(tmp_path), "id_column": "tags"}, "test", work_dir=tmp_path)


def test_sbatch_refusing_an_array_is_one_line() -> None:
    from submitit.core.utils import FailedJobError

    from bench.errors import BenchError
    from bench.grid.slurm import map_array

    class ControllerDown:  # what submitit raises when sbatch exits non-zero
        def map_array(self, fn, *iterables):
            raise FailedJobError(
                "Job submission failed with error code 1:\n"
                "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
            )

    with pytest.raises(BenchError) as e:
        map_array(ControllerDown(), print, [1, 2])
    assert "Unable to contact slurm controller" in str(e.value) and "\n" not in str(e.value)


def test_table_ci_keeps_the_intervals_it_has_and_names_the_rows_without(seeds_grid: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(seeds_grid / "results", results)
    (results / "runs/vse_infty/synthetic/test/usa-seed0.queries.npz").unlink()
    rc, out, err = run_main(["table", "--config", str(seeds_grid / "bench.toml"), "--all", "--ci",
                             "--dataset", "synthetic", "--results-dir", str(results)])  # fmt: skip
    assert rc == 0, err
    rows = {line.split("|")[2].strip(): line for line in out.splitlines() if line.startswith("| vse_infty")}
    assert "[" in rows["contrastive"] and "[" not in rows["usa"]
    assert "no interval for vse_infty / usa: no readable per-query file" in out


def test_a_tensorboard_writer_on_a_full_disk_is_one_warning_not_a_thread_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    from bench.tracking.tensorboard import TensorBoardTracker

    def full(self, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    tracker = TensorBoardTracker(tmp_path / "tb", "m/d/test/zeroshot-seed0", {"a": 1}, "rsum")
    monkeypatch.setattr(RecordWriter, "write", full)  # the disk fills up after the run started
    for step in range(3):
        try:
            tracker.log_epoch({"epoch": step, "loss": 1.0})
        except OSError:
            pass  # the foreground sees it too: bench.tracking's run turns that into its own warning
    with pytest.raises(OSError):
        tracker.close(failed=False)
    # The writer thread stores its error before it raises it, so the foreground can raise it first: wait for the
    # thread to end (its report comes from its excepthook, on the way out), as a loaded machine showed.
    import threading

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    for thread in [t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread)]:
        thread.join(timeout=60)
    assert "Traceback" not in capsys.readouterr().err
    assert "tensorboard: writing event files failed" in caplog.text and "No space left on device" in caplog.text


@pytest.mark.parametrize("array", ["meta", "caption_image", "t2i_topk_score", "caption_text", "image_id"])
def test_a_per_query_file_with_a_malformed_array_is_one_line(seeds_grid: Path, tmp_path: Path, array: str) -> None:
    """Found by tests/test_fuzz_results.py: a reshaped meta array (its digest updated in the record) was a traceback,
    and so was a caption_text array one short in bench report (an IndexError)."""
    import numpy as np

    from bench.scoring.perquery import sha256_of

    results = tmp_path / "results"
    shutil.copytree(seeds_grid / "results", results)
    rec_path = results / "runs/vse_infty/synthetic/test/contrastive-seed0.json"
    pq = rec_path.with_suffix(".queries.npz")
    with np.load(pq, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[array] = arrays[array].reshape(-1)[:-1] if array != "meta" else np.array(["[1, 2]"])
    np.savez_compressed(pq, **arrays)
    rec = json.loads(rec_path.read_text())
    rec["per_query"]["sha256"] = sha256_of(pq)
    rec_path.write_text(json.dumps(rec))
    rc, _, err = run_main(["compare", "--config", str(seeds_grid / "bench.toml"), "--results-dir", str(results),
                           "vse_infty:contrastive:0", "vse_infty:zeroshot", "--dataset", "synthetic"])  # fmt: skip
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"bench: error: {pq}: ")


@pytest.mark.parametrize(("key", "value"), [("config", True), ("dataset", False), ("seed", "0")])
def test_records_with_mistyped_fields_are_read_or_named_never_a_traceback(
    seeds_grid: Path, tmp_path: Path, key: str, value: object
) -> None:
    """Found by tests/test_fuzz_results.py: ``"config": true`` (bench table, bench verify) and ``"dataset": false``
    (bench rm) were tracebacks."""
    results = tmp_path / "results"
    shutil.copytree(seeds_grid / "results", results)
    path = results / "runs/vse_infty/synthetic/test/zeroshot-seed0.json"
    rec = json.loads(path.read_text())
    rec[key] = value
    path.write_text(json.dumps(rec))
    cfg = ["--config", str(seeds_grid / "bench.toml"), "--results-dir", str(results)]
    commands = [["table", *cfg, "--all"], ["rm", *cfg, "--status", "any", "--dry-run"], ["verify", *cfg],
                ["report", *cfg, "--all", "--html", str(tmp_path / "html")],
                ["compare", *cfg, "vse_infty:contrastive", "vse_infty:zeroshot", "--dataset", "synthetic"]]
    for argv in commands:
        rc, _, err = run_main(argv)
        assert rc in (0, 1, 2) and "Traceback" not in err, (argv, err)  # 1: verify compared nothing; 2: no record
        if rc == 2:
            assert err.strip().splitlines()[-1].startswith("bench: error: "), (argv, err)
