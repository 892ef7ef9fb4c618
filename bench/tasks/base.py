"""What a task kind is: the :class:`Task` base class every kind (image-text retrieval, image retrieval, STS, a
plug-in's) derives from, the :class:`Split` protocol its splits satisfy, and the :class:`Column` of a result table.

A task owns everything the harness does differently for its datasets: which extra keys their tables hold, how a
loaded split is finished, its card and fingerprint, how a cell scores it, which fields its records add, which
dataset a trained method fine-tunes on for it, and which columns its records fill in the tables. Nothing outside
:mod:`bench.tasks` branches on a task's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from bench.errors import ConfigError

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter
    from bench.config import BenchConfig
    from bench.grid.pipeline import Plan, SplitScorer
    from bench.stats.bootstrap import BootstrapConfig

__all__ = ["Column", "Split", "Task"]


@runtime_checkable
class Split(Protocol):
    """What every loaded split has, whatever its task: its task kind's name, its dataset and split names, and the
    file it was read from (named in errors)."""

    task: ClassVar[str]
    dataset: str
    split: str
    source: Path | None


@dataclass(frozen=True)
class Column:
    """One metric a task's records show in the result tables.

    Attributes:
        key: The metric's key in :meth:`Task.values`.
        label: The Markdown header suffix (after the dataset name): ``R@1``, ``ρ``.
        tex: The LaTeX sub-header.
        shown: In Markdown and LaTeX (CSV carries every column).
        csv: The CSV column suffix (after ``<dataset>_``); the key when empty.
    """

    key: str
    label: str
    tex: str
    shown: bool = True
    csv: str = ""


class Task:
    """A task kind. Subclasses set :attr:`name` and implement :meth:`card`, :meth:`fingerprint`, :meth:`scorer`,
    :meth:`values` and :meth:`columns`; the other hooks have the defaults of an eval-only task (its datasets are
    scored, and a trained method fine-tunes on the image-text dataset their table names in ``train_on``)."""

    name: ClassVar[str] = ""  # the value of ``task=`` in register_format, and of a record's ``task``
    title: ClassVar[str] = ""  # for people: "image-text retrieval"
    eval_only: ClassVar[bool] = True  # its splits are never trained on; its records join image-text table rows
    shardable: ClassVar[bool] = False  # ``bench run --shards`` can score its splits
    report_order: ClassVar[int] = 100  # its columns' place in the tables, after lower numbers
    legend: ClassVar[str] = ""  # what its columns show, in a LaTeX table's caption (default: title)

    # --- dataset tables and loading -------------------------------------------------------------------------------
    def table_options(self, loader_params: Iterable[str]) -> dict[str, Any]:
        """Keys a dataset table of this task may hold besides its loader's options, with their defaults (a default
        that is not None also gives the value's type). Eval-only tasks: ``train_on``."""
        return {"train_on": None} if self.eval_only else {}

    def finish(self, split: Any, options: Mapping[str, Any], where: str) -> Any:
        """The split as scored, given the table's :meth:`table_options` values that were set (``where`` names the
        table in errors)."""
        return split

    def card(self, split: Any) -> dict[str, Any]:
        """What a loaded split holds, for ``bench data`` (JSON-ready; ``images``, ``captions``, ``pairs``... )."""
        raise NotImplementedError

    def summary(self, split: Any) -> str:
        """One line for the log: the card's counts."""
        card = self.card(split)
        return ", ".join(f"{v:,} {k}" for k, v in card.items() if isinstance(v, int) and not isinstance(v, bool))

    def fingerprint(self, split: Any) -> dict[str, str]:
        """The content keys of a loaded split (a record's ``fingerprints.data``): a changed item changes them."""
        raise NotImplementedError

    # --- grid cells ------------------------------------------------------------------------------------------------
    def train_dataset(self, cfg: BenchConfig, dataset: str) -> str:
        """The dataset a trained method fine-tunes on for cells of ``dataset``: its ``train_on`` for eval-only tasks.

        Raises:
            ConfigError: no ``train_on``, or it names no image-text dataset of the config.
        """
        if not self.eval_only:
            return dataset
        from bench.tasks import task_of

        where = f"{cfg.source}: [datasets.{dataset}]"
        name = cfg.datasets[dataset].get("train_on")
        if name is None:
            raise ConfigError(
                f"{where} is eval-only ({self.name}); trained methods need train_on = "
                f'"<an image-text dataset>" (e.g. train_on = "synthetic"), or run it with zeroshot only'
            )
        if not isinstance(name, str) or name not in cfg.datasets:
            raise ConfigError(
                f"{where}: train_on = {name!r} is not a dataset of this config; known: {', '.join(cfg.datasets)}"
            )
        if task_of(cfg, name).eval_only:
            raise ConfigError(f"{where}: train_on = {name!r} is itself eval-only; name an image-text dataset")
        return name

    def scorer(self, plan: Plan, adapter: Adapter, split: Any) -> SplitScorer:
        """How a cell scores ``split``: called with a method's objective (or None), returns the metrics block."""
        raise NotImplementedError

    def record_fields(self, plan: Plan, score: SplitScorer, split: Any, per_query: Path | None) -> dict[str, Any]:
        """What a cell's record holds besides the common fields: for eval-only tasks the ``task``, the scored
        ``embedding`` and the ``train_dataset`` of a trained method."""
        trained_on = plan.train_name if plan.method.trains else None
        return {"task": self.name, "embedding": getattr(score, "embedding", None), "train_dataset": trained_on}

    def compare(self, a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
                cfg: BootstrapConfig) -> dict[str, Any] | None:  # fmt: skip
        """``bench compare`` of two sides' ``ok`` records of this task (one per seed each): the paired comparison
        (``metrics``: name -> ``{a, b, delta, ci, p}``, ``mcnemar``, ``n_seeds``, ``bootstrap``, and each side's
        ``seeds`` and ``left_out``), or None where the task has no test of its own and the image-text per-query
        path applies."""
        return None

    def render_tables(self, records: Sequence[Mapping[str, Any]], fmt: str) -> str:
        """Tables of this task's own, after the image-text tables of ``bench table`` (``fmt``: ``markdown`` or
        ``latex``), from its ``records``; empty (the default) when its columns on the image-text rows say it all."""
        return ""

    def report_section(self, records: Sequence[Mapping[str, Any]], out: Path, dataset: str, split: str,
                       **options: Any) -> str | None:  # fmt: skip
        """The body of a page of its own in ``bench report --html`` for one (dataset, split) of this task (images it
        shows written under ``out``; ``options``: ``model``, ``method``, ``examples``, ``thumb_px``), or None (the
        default): the task's numbers show on the image-text pages."""
        return None

    # --- result tables ---------------------------------------------------------------------------------------------
    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The numbers a record's ``metrics`` block shows in the tables, by :attr:`Column.key`."""
        raise NotImplementedError

    def columns(self, keys: Iterable[str]) -> list[Column]:
        """The table columns of one dataset of this task, given the keys its records' :meth:`values` had."""
        raise NotImplementedError
