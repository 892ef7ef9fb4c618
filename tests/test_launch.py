"""Launchers without a cluster: the [launcher] table, submitit's debug executor end to end, ``bench status``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_grid import result_path, run_main, write_config

from bench.config import apply_overrides, load_config
from bench.errors import ConfigError
from bench.grid.slurm import _executor_params, make_executor

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_unknown_launcher_key_lists_the_valid_ones(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "r", work=tmp_path / "w")
    config.write_text(config.read_text() + '\n[launcher]\npartiton = "gpu"\n')
    with pytest.raises(ConfigError, match=r"\[launcher\]: unknown key 'partiton'; valid keys: .*partition"):
        load_config(config)
    rc, _, err = run_main(["run", "--config", str(config)])
    assert rc == 2 and "partiton" in err


def _slurm_config(tmp_path: Path) -> Path:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "r", work=tmp_path / "w")
    config.write_text(
        config.read_text()
        + '\n[launcher]\nname = "slurm"\npartition = "gpu"\ngpus_per_node = 4\nmem_gb = 64\n'
        + 'setup = ["module load cuda"]\nsbatch = { exclusive = true }\n'
    )
    return config


def test_launcher_table_maps_to_submitit_parameters(tmp_path: Path) -> None:
    config = _slurm_config(tmp_path)
    params = _executor_params(load_config(config).launcher)
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 4
    assert params["tasks_per_node"] == 4  # one task per GPU
    assert params["slurm_setup"] == ["module load cuda"]
    assert params["slurm_additional_parameters"] == {"exclusive": True}


@pytest.mark.slurm  # submitit's SLURM executor looks for srun when it is made
def test_submitit_accepts_every_launcher_parameter(tmp_path: Path) -> None:
    config = _slurm_config(tmp_path)
    ex = make_executor(load_config(config))  # submitit accepts every parameter (it rejects unknown ones)
    assert ex.cluster == "slurm"


def test_unknown_launcher_name_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "r", work=tmp_path / "w")
    rc, _, err = run_main(["run", "--config", str(config), "--set", "launcher.name=pbs"])
    assert rc == 2 and "unknown launcher 'pbs'" in err and "slurm" in err


def test_debug_launcher_runs_cells_through_submitit_and_status_reports_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=tmp_path / "work")
    grid = ["--config", str(config), "--models", "towers"]
    rc, out, _ = run_main(["status", *grid])
    assert rc == 1 and "missing" in out

    rc, out, err = run_main(["run", *grid, "-q", "--launcher", "debug"])
    assert rc == 0, err
    assert "submitted 1 cell(s) to debug" in err
    path = result_path(results, "towers", "zeroshot")
    assert path.is_file() and path.with_suffix(".job").is_file()

    rc, out, _ = run_main(["status", *grid])
    assert rc == 0 and "done" in out
    rc, _, err = run_main(["run", *grid, "-q", "--launcher", "debug"])
    assert rc == 0 and "submitted 0 cell(s)" in err and "1 done" in err

    # A changed config makes the stored result stale: the cell is missing again, not done.
    cfg = apply_overrides(load_config(config), ["eval.batch_size=7"])
    from bench.grid.cell import Cell
    from bench.grid.slurm import cell_status

    assert cell_status(cfg, Cell("towers", "synthetic", "zeroshot", 0)).state == "missing"


def test_slurm_array_rows_expand_to_their_elements() -> None:
    # sacct prints an array's pending elements as one row; bench status reads every element's state from it.
    from bench.grid.jobstate import _array_ids

    assert _array_ids("123_4") == ["123_4"] and _array_ids("77") == ["77"]
    assert _array_ids("123_[6-8,10]") == ["123_6", "123_7", "123_8", "123_10"]
    assert _array_ids("123_[1-3%2]") == ["123_1", "123_2", "123_3"]  # %2: the array's throttle, not an element
