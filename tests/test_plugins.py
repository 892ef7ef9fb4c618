"""Plug-ins from outside: a tiny distribution, pip-installed from a temporary folder, adds an adapter family, a method
and a dataset format through entry points, and a grid runs them through submitit's ``debug`` launcher in a fresh
process, so the plug-ins are found where a job runs, not only where the grid was expanded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.plugins import ENTRY_POINT_GROUPS, Registry

PLUGIN = '''
"""A toy plug-in: an adapter of mean colours and word hashes, a non-training method, a folder format."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.adapters.protocol import AdapterBase
from bench.data.base import RetrievalSplit
from bench.methods.base import Method

WORDS = ["red", "green", "blue"]


class ColourAdapter(AdapterBase):
    """Images -> their mean RGB; captions -> counts of the three colour words: a joint space by construction."""

    embed_dim = 3

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.backbone, self.head = nn.Module(), nn.Identity()
        self.gain = gain

    @classmethod
    def build(cls, *, gain: float = 1.0) -> "ColourAdapter":
        return cls(gain)

    def image_transform(self):
        return lambda im: torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)

    def tokenize(self, texts):
        return {"counts": torch.tensor([[t.split().count(w) for w in WORDS] for t in texts], dtype=torch.float32)}

    def image_features(self, images):
        return {"emb": images.mean(dim=(2, 3)) * self.gain}

    def text_features(self, tokens):
        return {"emb": tokens["counts"]}

    def embed_image(self, feats):
        return feats["emb"]

    def embed_text(self, feats):
        return feats["emb"]

    def backbone_key(self) -> str:
        return "colour"


class Identity(Method):
    """Evaluate as built (a plug-in's zero-shot)."""

    trains = False


def colour_folder(root: Path, split: str) -> RetrievalSplit:
    """``root/<split>/<colour>_<i>.png``, each with the caption ``a <colour> square``."""
    paths = sorted((root / split).glob("*.png"))
    return RetrievalSplit(
        dataset="colours", split=split, image_paths=[str(p) for p in paths], image_ids=[p.stem for p in paths],
        captions=[f"a {p.stem.split('_')[0]} square" for p in paths], caption_to_image=np.arange(len(paths)),
    )
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "itr-bench-toy-plugin"
version = "0.0.1"

[project.entry-points."itr_bench.adapters"]
colour = "itr_bench_toy:ColourAdapter"

[project.entry-points."itr_bench.methods"]
identity = "itr_bench_toy:Identity"

[project.entry-points."itr_bench.formats"]
colour_folder = "itr_bench_toy:colour_folder"
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy plug-in, pip-installed (not editable) into a folder of its own that the test processes put on their
    path; the test environment itself is left untouched."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "itr_bench_toy.py").write_text(PLUGIN)
    site = tmp_path_factory.mktemp("plugin-site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"pip could not install the toy plug-in:\n{done.stderr[-2000:]}")
    assert list(site.glob("itr_bench_toy_plugin-0.0.1.dist-info/entry_points.txt"))
    return site


def _colour_images(root: Path) -> None:
    from PIL import Image

    rgb = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (10, 30, 220)}
    for split in ("test",):
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, colour in rgb.items():
            for i in range(2):
                Image.new("RGB", (8, 8), colour).save(root / split / f"{name}_{i}.png")


def _bench(args: list[str], *, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_a_grid_of_plugins_runs_through_the_debug_launcher(plugin_site: Path, tmp_path: Path) -> None:
    data = tmp_path / "colours"
    _colour_images(data)
    config = tmp_path / "plugin.toml"
    config.write_text(
        textwrap.dedent(f"""
        [paths]
        results_dir = {json.dumps(str(tmp_path / "results"))}
        work_dir = {json.dumps(str(tmp_path / "work"))}

        [grid]
        models = ["toy"]
        datasets = ["colours"]
        methods = ["identity"]
        seeds = [0]

        [eval]
        cache_features = false

        [models.toy]
        adapter = "colour"
        gain = 2.0

        [datasets.colours]
        format = "colour_folder"
        root = {json.dumps(str(data))}
        """)
    )
    listed = _bench(["list", "--config", str(config)], site=plugin_site, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "colour" in listed.stdout.split("adapters:")[1].splitlines()[0]
    assert "identity" in listed.stdout and "colour_folder" in listed.stdout

    done = _bench(["run", "--config", str(config), "--launcher", "debug", "-q"], site=plugin_site, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results/runs/toy/colours/test/identity-seed0.json").read_text())
    assert record["status"] == "ok" and record["adapter"] == "colour"
    # Each caption names its image's colour, and the two images of a colour are identical: under the pessimistic
    # tie rule a caption's image ties with its twin, so t2i R@1 is 0 and R@5 is 100; i2t finds a caption of the
    # same colour at rank <= 2 (its own and the twin's captions tie).
    assert record["metrics"]["t2i"]["r1"] == 0.0 and record["metrics"]["t2i"]["r5"] == 100.0
    assert record["metrics"]["i2t"]["r5"] == 100.0


def test_a_broken_plugin_is_one_line_naming_it(plugin_site: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-site"
    dist = broken / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[itr_bench.adapters]\nbroken = no_such_module:Thing\n")
    config = tmp_path / "b.toml"
    config.write_text('[grid]\nmodels = ["b"]\ndatasets = ["synthetic"]\nmethods = ["zeroshot"]\n\n'
                      '[models.b]\nadapter = "broken"\n\n[datasets.synthetic]\nformat = "synthetic"\n')  # fmt: skip
    out = _bench(["run", "--config", str(config)], site=broken, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "plug-in no_such_module:Thing (from broken-plugin) failed to load" in out.stderr


def test_registry_lists_without_importing_and_rejects_a_second_owner() -> None:
    reg: Registry[type] = Registry("widget", ENTRY_POINT_GROUPS["adapter"] + ".test-none", {"lazy": "no.such.module"})
    assert reg.names() == ["lazy"]  # listed, never imported

    class A: ...

    class B: ...

    reg.register("a", A)
    reg.register("a", A)  # the same object again is fine (a module imported twice)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", B)
    assert reg.get("a") is A and "a" in reg and "zzz" not in reg
