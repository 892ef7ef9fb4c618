"""The docs: the site builds with ``mkdocs build --strict`` (a broken link or anchor fails), its generated references
cover every command and config key, the Extending page's example runs as written, and every README command runs (or
is marked as needing network and is only parsed)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_grid import MODEL_TABLES, N_TEST, SYNTHETIC_TABLE, run_main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _commands(text: str, fence: str = "bash") -> list[str]:
    return [line for block in re.findall(rf"```{fence}\n(.*?)```", text, re.S) for line in block.splitlines()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]' (the test extra installs it)")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_site_builds_strict_with_every_page(site: Path) -> None:
    nav = re.findall(r":\s*([\w-]+)\.md", (REPO / "mkdocs.yml").read_text())
    assert len(nav) >= 12
    for page in nav:
        assert (site / ("" if page == "index" else page) / "index.html").is_file(), page
    assert sorted(p.stem for p in (REPO / "docs").glob("*.md")) == sorted(nav)  # no page left out of the nav


def test_cli_page_documents_every_command_and_option(site: Path) -> None:
    from bench.cli.main import build_parser
    from bench.cli.reference import _subcommands

    html = (site / "cli" / "index.html").read_text()
    for name, sub in _subcommands(build_parser()).items():
        assert f"bench {name}" in html, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in html, f"bench {name} {flag}"


def test_config_page_documents_every_key_with_its_meaning(site: Path) -> None:
    from bench.config.reference import field_comments
    from bench.config.sections import SECTIONS

    html = (site / "configuration" / "index.html").read_text()
    for section, cls in SECTIONS.items():
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            assert comments.get(f.name), f"[{section}] {f.name} has no comment to document it"
            assert f"<code>{f.name}</code>" in html, f"[{section}] {f.name}"
    for name in ("vse_infty", "karpathy", "cusa", "senteval_sts"):  # the registries' tables
        assert f"<code>{name}</code>" in html


def test_extending_page_runs_as_written(tmp_path: Path) -> None:
    code = "\n".join(re.findall(r"```python\n(.*?)```", (REPO / "docs" / "extending.md").read_text(), re.S))
    script = tmp_path / "extending.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("| Model"))
    assert "para R@1" in header and "RSUM" in header
    rows = [line for line in done.stdout.splitlines() if line.startswith("| toy")]
    assert {r.split("|")[2].strip() for r in rows} == {"zeroshot", "infonce_fixed"}


TOUR_CONFIG = f"""
[grid]
models = ["vse_infty", "towers"]
datasets = ["synthetic"]
methods = ["zeroshot", "contrastive", "cusa"]
seeds = [0]

[train]
epochs = 1
batch_size = 16
device = "cpu"

[eval]
batch_size = 32
bootstrap = 200

[teachers]
text_model = "all-MiniLM-L6-v2"

{MODEL_TABLES}
{SYNTHETIC_TABLE}
[datasets.synthetic-swaps]
format = "caption_swaps"
base = "synthetic"
base_options = {{ seed = 0, n_train = 48, n_val = 12, n_test = {N_TEST}, image_size = 64 }}
kinds = ["swap_att"]
train_on = "synthetic"
"""


def test_readme_tour_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "bench.toml").write_text(TOUR_CONFIG)  # the default grid's ids, sized for a test
    tour = [c for c in _commands(README.read_text()) if c.startswith("bench ")]
    assert len(tour) >= 8
    for line in tour:
        command, _, comment = line.partition("#")
        argv = shlex.split(command)[1:]
        if "needs network" in comment:
            build_parser().parse_args(argv)  # valid, but not run here
            continue
        rc, out, err = run_main(argv)
        assert rc == 0, f"{line}\n{err[-3000:]}"
    assert (tmp_path / "results" / "table.tex").is_file()
    assert (tmp_path / "results" / "report" / "index.html").is_file()
    assert json.loads((tmp_path / "exports" / "vse_infty-cusa" / "export.json").read_text())


def test_readme_setup_commands_are_the_ones_ci_runs() -> None:
    setup = [c for c in _commands(README.read_text()) if c.startswith("python3 -m venv")]
    assert len(setup) == 2 and setup[0].endswith("HF_HUB_OFFLINE=1 bench run")
    ci = (REPO / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")
    assert setup[1] in ci
    assert len(README.read_text().splitlines()) <= 250
