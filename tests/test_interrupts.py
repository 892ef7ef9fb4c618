"""Ctrl-C and SIGTERM during ``bench run``: one line, exit code 130 / 143, no traceback, no half-written file, and the
next run resumes (the interrupted cell from its epoch checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_grid import write_config


def _start(config: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "bench", "run", "--config", str(config), "--set", "train.epochs=50", "-q"]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(results: Path, proc: subprocess.Popen[str], timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if list((results / "checkpoints").rglob("*.pt")) or proc.poll() is not None:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no training checkpoint appeared")


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_signal_ends_with_one_line_and_keeps_everything(tmp_path: Path, sig: int, code: int, word: str) -> None:
    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=tmp_path / "work")
    proc = _start(config, tmp_path)
    _wait_for_checkpoint(results, proc)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(0.5)  # well inside the next epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"bench: {word}")
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left"
    # The zero-shot cell that finished before the signal is a complete record; the interrupted cell is resumable.
    status = subprocess.run([sys.executable, "-m", "bench", "status", "--config", str(config), "--set",
                             "train.epochs=50"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "resumable" in status.stdout and "after epoch" in status.stdout, status.stdout


def test_an_interrupt_that_torch_save_turns_into_an_error_still_stops_the_grid(tmp_path: Path, monkeypatch) -> None:
    # Ctrl-C inside torch.save: the zip writer's __exit__ raises RuntimeError("... unexpected pos ...") with the
    # KeyboardInterrupt as its context. The grid must stop with 130, not record the cell as failed and go on.
    import torch
    from tiny_grid import run_main

    from bench.grid.records import iter_records

    def interrupted_save(*args: object, **kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 54389248 vs 54389140")

    results = tmp_path / "results"
    config = write_config(tmp_path / "bench.toml", results=results, work=tmp_path / "work")
    monkeypatch.setattr(torch, "save", interrupted_save)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "-q"])
    assert rc == 130, err
    assert err.strip().splitlines()[-1].startswith("bench: interrupted")
    assert "FAILED" not in err and not [r for r in iter_records(results) if r.get("status") == "failed"]
