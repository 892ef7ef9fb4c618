"""The grid runner through ``bench run``: config-hash skipping, seeds and determinism, the backbone feature cache.

A module-scoped run of vse_infty (zeroshot + contrastive) on a tiny synthetic set with the real offline towers is
shared; tests that write results work on a copy of its results folder (same work_dir, so its feature cache is reused).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_grid import N_TEST, result_path, run_main, write_config

from bench.config import load_config
from bench.data.base import RetrievalSplit
from bench.data.scenes import N_CAPTIONS
from bench.grid.local import expand_grid
from bench.grid.records import read_record

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models below are the packaged offline weights; never the hub


def summary(err: str) -> str:
    """The last ``bench: N ran, M skipped ...`` line."""
    return [line for line in err.splitlines() if line.startswith("bench:") and " ran, " in line][-1]


@dataclass
class Run:
    config: Path
    results: Path
    work: Path

    def record(self, model: str, method: str) -> dict:
        return read_record(result_path(self.results, model, method))

    def clone(self, dest: Path) -> tuple[Path, Path]:
        """A copy of the results folder (same work_dir) and a config writing there."""
        results = dest / "results"
        shutil.copytree(self.results, results)
        return write_config(dest / "bench.toml", results=results, work=self.work), results


@pytest.fixture(scope="module")
def vse_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("runner_grid")
    results, work = root / "results", root / "work"
    config = write_config(root / "bench.toml", results=results, work=work)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "vse_infty", "-q"])
    assert rc == 0, err
    assert summary(err).startswith("bench: 2 ran, 0 skipped")
    return Run(config, results, work)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Records (dataset, split, row) of every image decoded: feature extraction decodes, a cache hit does not."""
    calls: list[tuple[str, str, int]] = []
    real = RetrievalSplit.load_image

    def spy(self: RetrievalSplit, i: int) -> object:
        calls.append((self.dataset, self.split, i))
        return real(self, i)

    monkeypatch.setattr(RetrievalSplit, "load_image", spy)
    return calls


def cache_files(work: Path) -> dict[str, int]:
    """The feature cache: file name -> mtime."""
    return {p.name: p.stat().st_mtime_ns for p in sorted((work / "features").iterdir())}


def tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensors(v)]
    return []


# ---------------------------------------------------------------------------------------------------------------
# grid expansion (no cell runs)


def test_untrained_method_runs_once_whatever_the_seeds(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cells = expand_grid(load_config(config), seeds=[0, 1, 2])
    got = sorted((c.model, c.method, c.seed) for c in cells)
    assert got == sorted(
        [("vse_infty", "zeroshot", 0), ("towers", "zeroshot", 0)] + [("vse_infty", "contrastive", s) for s in (0, 1, 2)]
    )


def test_model_methods_key_restricts_its_cells(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cells = expand_grid(load_config(config), models=["towers"], methods=["zeroshot", "contrastive"])
    assert not (tmp_path / "results").exists(), "expanding a grid must not write anything"
    assert [(c.model, c.method) for c in cells] == [("towers", "zeroshot")]


# ---------------------------------------------------------------------------------------------------------------
# skipping by config hash, force, determinism


def test_seeded_trained_cell_is_deterministic(vse_run: Run, tmp_path: Path) -> None:
    config, results = vse_run.clone(tmp_path)
    path = result_path(results, "vse_infty", "contrastive")
    before = path.stat().st_mtime_ns
    argv = ["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "--force", "-q"]
    rc, _, err = run_main(argv)
    assert rc == 0, err
    assert summary(err).startswith("bench: 1 ran, 0 skipped")
    assert path.stat().st_mtime_ns != before, "--force must rewrite the result"
    first, again = vse_run.record("vse_infty", "contrastive"), read_record(path)
    assert again["metrics"] == first["metrics"]
    assert again["metrics_last"] == first["metrics_last"]
    assert again["selected_epoch"] == first["selected_epoch"]
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in again["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in first["history"]
    ]
    assert again["config_hash"] == first["config_hash"]


def test_changed_train_key_reruns_trained_cells_only(vse_run: Run, tmp_path: Path) -> None:
    config, results = vse_run.clone(tmp_path)
    zs, ft = result_path(results, "vse_infty", "zeroshot"), result_path(results, "vse_infty", "contrastive")
    zs_before, ft_before = zs.stat().st_mtime_ns, ft.stat().st_mtime_ns
    old = read_record(ft)
    new_lr = old["config"]["train"]["lr"] * 2
    argv = ["run", "--config", str(config), "--models", "vse_infty", "--set", f"train.lr={new_lr!r}", "-q"]
    rc, _, err = run_main(argv)
    assert rc == 0, err
    assert summary(err).startswith("bench: 1 ran, 1 skipped")
    assert zs.stat().st_mtime_ns == zs_before
    assert ft.stat().st_mtime_ns != ft_before
    new = read_record(ft)
    assert new["config"]["train"]["lr"] == new_lr
    assert new["config_hash"] != old["config_hash"]
    # The same override again: both cells are now done.
    rc, _, err = run_main(argv)
    assert rc == 0 and summary(err).startswith("bench: 0 ran, 2 skipped"), err


def test_unreadable_result_file_is_rerun(vse_run: Run, tmp_path: Path) -> None:
    config, results = vse_run.clone(tmp_path)
    path = result_path(results, "vse_infty", "zeroshot")
    path.write_text('{"schema": 1, "status": "ok", "metr')  # a torn write from some other tool
    rc, _, err = run_main(["run", "--config", str(config), "--models", "vse_infty", "-q"])
    assert rc == 0, err
    assert summary(err).startswith("bench: 1 ran, 1 skipped")
    assert read_record(path)["metrics"] == vse_run.record("vse_infty", "zeroshot")["metrics"]


# ---------------------------------------------------------------------------------------------------------------
# the backbone feature cache


def test_cell_sharing_the_frozen_backbone_reads_the_cache(
    vse_run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture, decoded: list[tuple[str, str, int]]
) -> None:
    caplog.set_level(logging.INFO, logger="bench")
    before = cache_files(vse_run.work)
    assert any("test" in name for name in before)
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=vse_run.work)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "-q"])
    assert rc == 0, err
    assert decoded == [], "towers share vse_infty's frozen backbone: no image should be decoded again"
    assert cache_files(vse_run.work) == before, "the cache must be read, not rewritten"
    hits = [r.getMessage() for r in caplog.records if "from cache" in r.getMessage()]
    assert hits and all(str(vse_run.work / "features") in h for h in hits)
    assert read_record(result_path(tmp_path / "results", "towers", "zeroshot"))["status"] == "ok"


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A work_dir whose feature cache holds the test split's features (from towers), and that cell's metrics."""
    root = tmp_path_factory.mktemp("cache")
    config = write_config(root / "bench.toml", results=root / "results", work=root / "work")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "-q"])
    assert rc == 0, err
    return root / "work", read_record(result_path(root / "results", "towers", "zeroshot"))["metrics"]


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not a torch file\xff" * 64)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _deleted(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [_garbage, _truncated, _deleted], ids=["garbage", "truncated", "deleted"])
def test_damaged_cache_file_is_rebuilt(
    damage: Callable[[Path], None],
    cache_run: tuple[Path, dict],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    decoded: list[tuple[str, str, int]],
) -> None:
    work, metrics = cache_run
    files = sorted((work / "features").glob("*.pt"))
    assert files
    for f in files:
        damage(f)
    caplog.set_level(logging.INFO, logger="bench")
    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=work)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "-q"])
    assert rc == 0, err
    assert sorted(decoded) == [("synthetic", "test", i) for i in range(N_TEST)], "every image re-extracted once"
    assert not any("from cache" in r.getMessage() for r in caplog.records)
    if damage is not _deleted:
        for f in files:
            assert any(r.levelno == logging.WARNING and str(f) in r.getMessage() for r in caplog.records), f
    assert read_record(result_path(results, "towers", "zeroshot"))["metrics"] == metrics
    assert sorted(cache_files(work)) == [f.name for f in files], "same files rebuilt, no stray temporaries"
    for f in files:
        rows = {t.shape[0] for t in tensors(torch.load(f, map_location="cpu", weights_only=True))}
        assert rows and rows <= {N_TEST, N_TEST * N_CAPTIONS}, f"{f.name}: rows {rows}"


def test_trained_cell_does_not_depend_on_the_cache_state(tmp_path: Path) -> None:
    # Randomly initialised heads (head_init = "normal") are drawn after the features are loaded, which a cold cache
    # extracts and a warm one reads. The same seed must give the same numbers either way.
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    config.write_text(config.read_text() + '\n[methods.contrastive]\nhead_init = "normal"\n')
    argv = ["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "-q"]
    rc, _, err = run_main(argv)  # cold: every split's features are extracted in this run
    assert rc == 0, err
    cold = read_record(result_path(tmp_path / "results", "vse_infty", "contrastive"))
    rc, _, err = run_main([*argv, "--force"])  # warm: every split's features come from the cache
    assert rc == 0, err
    warm = read_record(result_path(tmp_path / "results", "vse_infty", "contrastive"))
    assert warm["metrics"] == cold["metrics"]
    assert warm["precision"] == cold["precision"] == {"encoding": "fp32", "features": "fp32", "scoring": "fp32"}
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in warm["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in cold["history"]
    ]


def test_every_key_of_a_record_is_declared_in_the_record_model(vse_run: Run) -> None:
    """``bench.ResultRecord`` is the typed schema the readers go by: a field the pipeline writes must be declared."""
    import typing

    import bench

    declared = set(typing.get_type_hints(bench.ResultRecord))
    for method in ("zeroshot", "contrastive"):
        record = vse_run.record("vse_infty", method)
        undeclared = {k for k in record if k not in declared and not k.startswith("ci")}  # ci95: ci_key(level)
        assert not undeclared, f"{method}: undeclared record fields {sorted(undeclared)}"
    assert "trained_store" in record and "precision" in record
