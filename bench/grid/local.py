"""Grids: expand models × datasets × methods × seeds into cells and run the missing ones, one after another.

A cell whose result file exists with status ``ok`` and the same config hash is skipped (``force`` re-runs it). Each
finished cell is written atomically before the next starts, so an interrupted grid loses only the cell in flight and
a re-run completes the rest. A failing cell is logged and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench.adapters.registry import adapter_options
from bench.config import BenchConfig, check_seeds, dataset_members
from bench.data import check_dataset
from bench.device import device_of
from bench.encode.refresh import refreshing
from bench.errors import ConfigError, UnknownNameError, check_keys
from bench.grid.cell import MODEL_GRID_KEYS, Cell, model_spec, train_config
from bench.grid.execute import Outcome, execute_cell
from bench.grid.fingerprint import forget_splits
from bench.grid.plan import plan_cell
from bench.grid.records import prepare_results_dir
from bench.grid.sweep import Sweep, applies, sweep_of, variants_of
from bench.methods import get_method
from bench.tracking import check_trackers

__all__ = ["GridReport", "expand_grid", "run_grid"]

log = logging.getLogger(__name__)


@dataclass
class GridReport:
    """What a grid run did, cell by cell."""

    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    unavailable: list[tuple[Cell, str]] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def add(self, out: Outcome) -> None:
        """File one cell's outcome."""
        self.paths.append(out.path)
        if out.status == "ran":
            self.ran.append(out.cell)
        elif out.status == "skipped":
            self.skipped.append(out.cell)
        elif out.status == "unavailable":
            self.unavailable.append((out.cell, out.reason))
        elif out.status == "failed":
            self.failed.append((out.cell, out.reason))

    @property
    def ok(self) -> bool:
        """No cell failed (unavailable weights are reported, not failures)."""
        return not self.failed


def _names(given: list[str] | None, default: list[str], all_names: list[str]) -> list[str]:
    names = default if not given else given
    return list(all_names) if names == ["all"] else list(names)


def expand_grid(
    cfg: BenchConfig,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    sweep: list[str] | None = None,
    yes: bool = False,
) -> list[Cell]:
    """The cells of a grid; every name is checked first, so a typo fails before any work starts.

    A method that does not train runs once (the first seed) whatever the seeds: its numbers cannot depend on them.
    A model whose table lists ``methods`` runs only those of the grid's methods (``towers`` has nothing to fine-tune).
    ``[sweep]`` and the ``sweep`` items (``--sweep KEY=V1,V2``) make each cell one cell per combination of the values
    that apply to it (:mod:`bench.grid.sweep`); more cells than the sweep's ``limit`` need ``yes``.
    """
    models = _names(models, cfg.grid.models, list(cfg.models))
    datasets = _names(datasets, cfg.grid.datasets, list(cfg.datasets))
    unknown = [d for d in datasets if d not in cfg.datasets]
    if unknown:
        raise UnknownNameError("dataset", unknown[0], list(cfg.datasets))
    datasets = list(dict.fromkeys(m for d in datasets for m in dataset_members(cfg, d)))
    methods = methods or cfg.grid.methods
    seeds = seeds or cfg.grid.seeds
    check_seeds(seeds, "--seeds" if seeds is not cfg.grid.seeds else f"{cfg.source}: [grid] seeds")
    for m in models:
        _check_model(cfg, m, methods)
    for d in datasets:
        if d not in cfg.datasets:
            raise UnknownNameError("dataset", d, list(cfg.datasets))
        _check_dataset(cfg, d)
    cells = []
    for m in models:
        for d in datasets:
            allowed = cfg.models.get(m, {}).get("methods")
            for meth in methods:
                method = get_method(meth)
                if allowed is not None and meth not in allowed:
                    continue
                for s in seeds if method.trains else seeds[:1]:
                    cells.append(Cell(m, d, meth, s, cfg.eval.split))
    plan = sweep_of(cfg, sweep)
    if plan:
        cells = _swept(cfg, plan, cells, yes=yes)
    for c in cells:
        plan_cell(c, cfg)  # every cell's settings resolve before any runs
    return cells


def _swept(cfg: BenchConfig, plan: Sweep, cells: list[Cell], *, yes: bool) -> list[Cell]:
    unused = [k for k in plan.keys if not any(applies(k, c.model, c.method) for c in cells)]
    for key in unused:
        # A --sweep key that changes no cell is a mistake; a [sweep] key may be for cells this command filtered out.
        if key in plan.cli_keys:
            raise ConfigError(f"--sweep: {key} changes no cell of this grid (methods: "
                              f"{', '.join(dict.fromkeys(c.method for c in cells))})")  # fmt: skip
        log.info("[sweep] %s changes no cell of this grid", key)
    out = [dataclasses.replace(c, variant=v) for c in cells for v in variants_of(cfg, plan, c.model, c.method)]
    if len(out) > plan.limit and not yes:
        raise ConfigError(f"the sweep makes {len(out)} cells, more than its limit of {plan.limit} ([sweep] limit); "
                          "pass --yes to go ahead")  # fmt: skip
    return out


def _check_model(cfg: BenchConfig, model: str, methods: list[str]) -> None:
    # A typo in any [models.<id>] table fails here, before a single cell runs.
    spec = model_spec(cfg, model)
    where = f"{cfg.source}: [models.{model}]"
    family = spec.pop("adapter")
    valid = adapter_options(family)
    check_keys(spec, [*sorted(valid), *MODEL_GRID_KEYS], where)
    for meth in cfg.models.get(model, {}).get("methods", []):
        get_method(meth)
    for meth in methods:
        get_method(meth).check_options(cfg.methods.get(meth, {}), f"{cfg.source}: [methods.{meth}]")


def _check_dataset(cfg: BenchConfig, dataset: str) -> None:
    # Keys and option types of every dataset table fail here, before a single cell runs.
    try:
        check_dataset(dataset, cfg.datasets[dataset])
    except ConfigError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None


def check_devices(cfg: BenchConfig, cells: list[Cell]) -> None:
    """Each cell's ``[train] device`` (``cuda`` on a machine without one, a typo) fails here, as one line."""
    for model in dict.fromkeys(c.model for c in cells):
        device_of(train_config(cfg, model).device)


def run_grid(cfg: BenchConfig, cells: list[Cell], *, force: bool = False, progress: bool = True) -> GridReport:
    """Run ``cells`` in this process, one after another, and write each result (the ``local`` launcher).

    Before any cell runs: every model's device must exist here, every configured tracker must be installed, and the
    results folder must be writable; stale temporary files of earlier killed runs are removed. With ``force`` every
    cell runs and every feature cache it reads is rebuilt once (:mod:`bench.encode.refresh`).
    """
    check_devices(cfg, cells)
    check_trackers(cfg)
    prepare_results_dir(cfg)
    forget_splits()  # fingerprints of what is on disk now, not of an earlier run in this process
    report = GridReport()
    with refreshing(force):  # --force: every cache is rebuilt once in this run, then shared by its cells
        for i, cell in enumerate(cells, 1):
            log.info("[%d/%d] %s", i, len(cells), cell.label)
            out = execute_cell(cfg, cell, force=force, progress=progress)
            report.add(out)
            if out.status == "skipped":
                log.info("[%d/%d] %s: done, skipped (%s)", i, len(cells), cell.label, out.path)
            elif out.status == "ran":
                log.info("[%d/%d] %s: wrote %s (%.1f s)", i, len(cells), cell.label, out.path, out.wall_time_s)
    return report
