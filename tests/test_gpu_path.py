"""The GPU user's path, run on the CPU with tiny models: every trainable family fine-tuned end to end by ``bench run``.

On a GPU the defaults differ from a CPU run: ``freeze_backbone = "auto"`` trains the whole model, ``amp`` trains
under bf16 autocast, ``[eval] precision = "auto"`` encodes under bf16 autocast, and evaluation converts the model to
channels-last under ``torch.inference_mode``. This tier sets exactly those (``freeze_backbone = false``, ``amp =
true``, ``precision = "bf16"``: CPU bf16 stands in for CUDA's) with gradient accumulation and a real validation every
epoch for 3 epochs, for ``clip``, ``hf_clip``, ``blip`` and ``vse_infty`` with ``contrastive`` and ``cusa``; then, in
fp32 (bf16 autocast casts the weights, which hides a weight that cannot be saved for backward), a training SIGKILLed
after its first epoch is resumed by ``bench run`` to the uninterrupted record. The two-rank
data-parallel run of the same path is in ``test_distributed.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_grid import run_main

from bench.grid.records import read_record
from bench.train.store import load_training, read_training_meta

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.usefixtures("single_thread")

FAMILIES = ("clip", "hf_clip", "blip", "vse_infty")
METHODS = ("contrastive", "cusa")
EPOCHS = 3


def _toml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def gpu_path_config(
    root: Path, tiny_options: dict[str, dict[str, Any]], text_folder: Path, *, results: str = "results",
    models: tuple[str, ...] = FAMILIES, amp: bool = True,
) -> Path:  # fmt: skip
    """A grid on the GPU-default code path: end to end, bf16 autocast in training and encoding, channels-last
    (``amp = false``: the same in fp32)."""
    lines = [
        "[paths]", f"results_dir = {_toml(str(root / results))}", f"work_dir = {_toml(str(root / 'work'))}",
        "[grid]", f"models = {json.dumps(list(models))}", 'datasets = ["synthetic"]',
        f"methods = {json.dumps(list(METHODS))}", "seeds = [0]",
        "[train]", f"epochs = {EPOCHS}", "batch_size = 6", "grad_accum = 2", "lr = 1e-3", "warmup_epochs = 0.5",
        'freeze_backbone = false', f"amp = {_toml(amp)}", 'device = "cpu"', 'loss = "infonce"',
        "[eval]", f'precision = "{"bf16" if amp else "fp32"}"', "batch_size = 8", "bootstrap = 0",
        "[methods.contrastive]", "cross_heads = false",
        "[methods.cusa]", "alpha = 0.1", "beta = 0.5",
        "[teachers]", 'image_model = "test_byobnet"', 'image_weights = "random"',
        f"text_model = {_toml(str(text_folder))}",
        "[datasets.synthetic]", 'format = "synthetic"', "seed = 0", "n_train = 18", "n_val = 6", "n_test = 8",
        "image_size = 32",
    ]  # fmt: skip
    for family in models:
        lines += [f"[models.{family}]", f'adapter = "{family}"']
        lines += [f"{k} = {_toml(v)}" for k, v in tiny_options[family].items()]
    path = root / f"{results}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, tiny_options: dict, tiny_text_folder: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gpu_path")
    config = gpu_path_config(root, tiny_options, tiny_text_folder)
    rc, _, err = run_main(["run", "--config", str(config), "-q", "--no-table"])
    assert rc == 0, err
    return root, config


def _record(root: Path, family: str, method: str, results: str = "results") -> dict[str, Any]:
    return read_record(root / results / "runs" / family / "synthetic" / "test" / f"{method}-seed0.json")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_fine_tuning_runs_every_epoch_with_validation(grid, family: str, method: str) -> None:
    root, _ = grid
    rec = _record(root, family, method)
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["frozen_backbone"] is False
    assert rec["precision"] == {"encoding": "bf16", "features": None, "scoring": "fp32"}
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    for h in rec["history"]:  # a real validation each epoch (a number of the val split, not a stand-in)
        assert math.isfinite(h["val"]) and 0 <= h["val"] <= 600
        assert all(math.isfinite(v) for k, v in h.items() if k.endswith("_loss")), h
    assert any(part.startswith("backbone") for part in rec["trained_parts"]), rec["trained_parts"]
    assert rec["metrics"]["rsum"] is not None and rec["metrics"]["t2i"]["n_queries"] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_the_end_to_end_training_is_stored_with_its_backbone(grid, build_tiny, family: str) -> None:
    root, _ = grid
    rec = _record(root, family, "cusa")
    store = Path(rec["trained_store"])
    meta = read_training_meta(store)
    assert meta is not None and meta["frozen_backbone"] is False and meta["family"] == family
    assert meta["selected_epoch"] == rec["selected_epoch"] and len(meta["history"]) == EPOCHS
    assert meta["fingerprints"]["train"] and meta["config"]["train"]["amp"] is True
    stored = load_training(store, fingerprints=meta["fingerprints"])
    assert stored is not None
    assert load_training(store, fingerprints={**meta["fingerprints"], "train": {"images": "other"}}) is None
    fresh = build_tiny(family).state_dict()  # the same seeded init the cell started from
    module = stored.best_state["module"]
    assert set(module) == set(fresh), "the whole model is stored"
    moved = [k for k, v in module.items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v, fresh[k])]  # fmt: skip
    assert moved, "the backbone's fine-tuned weights are stored, not the initial ones"
    assert stored.best_state["objective"], "CUSA's heads are stored with the model"


def test_evaluation_leaves_a_model_trainable(build_tiny, tiny_embeddings_split) -> None:
    """Evaluation runs under ``torch.inference_mode`` and puts the model in channels-last layout: the converted weights
    must stay ordinary tensors, or the next training step cannot save them for backward (an end-to-end training
    crashed in its second epoch)."""
    from bench.config import EvalConfig
    from bench.evaluation.itr import evaluate

    adapter = build_tiny("clip")
    conv = adapter.backbone.visual.conv1.weight
    assert conv.ndim == 4 and not conv.is_contiguous(memory_format=torch.channels_last)
    evaluate(adapter, tiny_embeddings_split[1], EvalConfig(bootstrap=0), device=torch.device("cpu"), progress=False)
    conv = adapter.backbone.visual.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.is_inference() for p in adapter.parameters())
    adapter.train()
    images = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    adapter.encode_image(images).square().sum().backward()  # fp32: the weights themselves are saved for backward
    assert conv.grad is not None and conv.grad.abs().sum() > 0


def test_sigkill_after_epoch_one_resumes_to_the_uninterrupted_record(
    tmp_path: Path, tiny_options: dict, tiny_text_folder: Path
) -> None:
    """In fp32 (``amp = false``), where the weights themselves are saved for backward: an uninterrupted run, and one
    SIGKILLed after its epoch-1 checkpoint then resumed by ``bench run``, give the same record."""
    argv = ["--methods", "contrastive", "-q", "--no-table"]
    whole_cfg = gpu_path_config(tmp_path, tiny_options, tiny_text_folder, results="whole", models=("clip",), amp=False)
    rc, _, err = run_main(["run", "--config", str(whole_cfg), *argv])
    assert rc == 0, err
    config = gpu_path_config(tmp_path, tiny_options, tiny_text_folder, results="killed", models=("clip",), amp=False)
    # The job dies by SIGKILL right after its epoch-1 checkpoint is on disk (as a preempted node does).
    code = (
        "import os, signal, sys\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"  # as this test process (single_thread): float sums depend on the thread count
        "import bench.train.fit as fit\n"
        "save = fit._save\n"
        "def save_then_die(path, epoch, *args):\n"
        "    save(path, epoch, *args)\n"
        "    if epoch == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "fit._save = save_then_die\n"
        "from bench.cli.main import main\n"
        f"sys.exit(main(['run', '--config', {str(config)!r}, *{argv!r}]))\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = list((tmp_path / "killed" / "checkpoints").rglob("*.pt"))
    assert len(checkpoints) == 1 and not list((tmp_path / "killed").rglob("*.json")), "killed before any record"

    rc, _, err = run_main(["run", "--config", str(config), *argv])
    assert rc == 0, err
    resumed = _record(tmp_path, "clip", "contrastive", "killed")
    whole = _record(tmp_path, "clip", "contrastive", "whole")
    assert resumed["resumed_from_epoch"] == 1 and whole["resumed_from_epoch"] == 0
    assert whole["precision"] == {"encoding": "fp32", "features": None, "scoring": "fp32"}

    def same(rec: dict) -> dict:
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in rec["history"]]
        return {k: rec[k] for k in ("metrics", "metrics_last", "selected_epoch")} | {"history": history}

    assert same(resumed) == same(whole)
    assert not list((tmp_path / "killed" / "checkpoints").rglob("*.pt")), "the checkpoint is removed once recorded"
