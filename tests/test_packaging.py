"""Packaging: one import package (``bench``) in the wheel, the default config inside it, a wheel install that runs in
an empty folder, and a foreign top-level ``adapters`` package that changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {"blip", "clip", "embeddings", "hf_clip", "scan", "sgraf", "towers", "vse_infty"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of the sources, so no build/ folder is left in (or reused from) the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("bench", "adapters"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md", "bench.toml"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("itr_bench-*.whl")
    return path


def _listed_families(stdout: str) -> set[str]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("adapters:"))
    return {a.strip() for a in line.removeprefix("adapters:").split(",")}


def test_wheel_holds_one_import_package_and_the_default_config(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"bench", f"{wheel.name.split('-py3')[0]}.dist-info"}
    assert not any(n.startswith("adapters/") for n in names)
    assert {f"bench/adapters/{f}.py" for f in FAMILIES} <= set(names)
    packaged = zipfile.ZipFile(wheel).read("bench/bench.toml").decode()
    assert packaged == (REPO / "bench.toml").read_text()  # the file itself, not a link to it


def _source_modules() -> set[str]:
    """Every module of the source tree as the wheel must name it (``adapters/`` installs as ``bench/adapters/``)."""
    out = set()
    for root, prefix in ((REPO / "bench", "bench"), (REPO / "adapters", "bench/adapters")):
        for path in root.rglob("*.py"):
            if "__pycache__" not in path.parts:
                out.add(f"{prefix}/{path.relative_to(root).as_posix()}")
    return out


def test_wheel_holds_every_module_of_the_source_tree(wheel: Path) -> None:
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    source = _source_modules()
    assert "bench/shard/launch.py" in source  # a sub-package the hand-written list once left out
    assert sorted(source - names) == [], "modules missing from the wheel"
    assert sorted(names - source) == [], "modules in the wheel that the source tree does not have"


@pytest.fixture(scope="module")
def wheel_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel installed; the heavy dependencies come from this environment's
    site-packages through a .pth line (a path entry, so this environment's editable itr-bench is not activated)."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=True)
    py = root / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_wheel_install_runs_bench_in_an_empty_folder(wheel_env: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    bench = wheel_env / "bin" / "bench"
    where = subprocess.run([wheel_env / "bin/python", "-c", "import bench; print(bench.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
    assert str(wheel_env) in where.stdout, f"bench imported from {where.stdout!r}, not the wheel"
    listed = subprocess.run([bench, "list"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert _listed_families(listed.stdout) == FAMILIES
    assert "using the packaged default" in listed.stderr and "bench/bench.toml" in listed.stderr
    run = subprocess.run([bench, "run", "--models", "towers", "--methods", "zeroshot", "-q"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / "results/runs/towers/synthetic/test/zeroshot-seed0.json").read_text())
    assert record["status"] == "ok" and record["metrics"]["t2t"]["r1"] > 0
    assert record["git_sha"] is None or isinstance(record["git_sha"], str)


def test_a_foreign_adapters_package_changes_nothing(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign" / "adapters"  # e.g. AdapterHub's `adapters`, first on sys.path
    foreign.mkdir(parents=True)
    (foreign / "__init__.py").write_text("raise ImportError('this is somebody else\\'s adapters package')\n")
    env = {**os.environ, "PYTHONPATH": str(foreign.parent), "HF_HUB_OFFLINE": "1"}
    listed = subprocess.run([sys.executable, "-m", "bench", "list"], capture_output=True, text=True, cwd=REPO, env=env)
    assert listed.returncode == 0, listed.stderr
    assert _listed_families(listed.stdout) == FAMILIES
    code = "from bench.adapters.registry import ADAPTERS; print(sorted(ADAPTERS.load_all()))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == str(sorted(FAMILIES))


def test_cli_imports_no_torch() -> None:
    code = (
        "import sys, bench, bench.cli.main as m; m.build_parser(); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_wheel_install_runs_a_sharded_evaluation(wheel_env: Path, tmp_path: Path) -> None:
    """``bench run --shards`` imports bench.shard in its tasks: from the wheel's own venv, in an empty folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    argv = [wheel_env / "bin" / "bench", "run", "--models", "towers", "--methods", "zeroshot", "--shards", "2",
            "--launcher", "local", "-q"]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / "results/runs/towers/synthetic/test/zeroshot-seed0.json").read_text())
    assert record["status"] == "ok" and record["sharded"]["encode_tasks"] == 2
