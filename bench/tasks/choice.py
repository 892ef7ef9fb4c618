"""Choice sets (SugarCrepe, Winoground, ARO, VALSE, swapped-caption sets): eval-only; each item is passed or failed,
and a set reports the accuracy of each test (text, image, group) per subset, the paper's averages and their mean."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data.choice import ChoiceSplit
from bench.errors import BenchError, ConfigError
from bench.tasks import register_task
from bench.tasks.base import Column, Task

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter
    from bench.grid.pipeline import Plan, SplitScorer
    from bench.stats.bootstrap import BootstrapConfig

__all__ = ["ChoiceTask"]

_KINDS = ("text", "image", "group")


@register_task
class ChoiceTask(Task):
    """Choice sets on a :class:`ChoiceSplit`; records hold ``metrics["choice"] = {kind: {subset | average | "mean":
    accuracy}, "n_items", "scored_by"}``, a per-item file and intervals over items."""

    name = "choice"
    title = "compositional choice"
    report_order = 3
    legend = r"choice accuracy in \%"

    def table_options(self, loader_params: Iterable[str]) -> dict[str, Any]:
        """``train_on`` and ``scorer`` (``embedding``, the default, or ``pair``)."""
        return {"train_on": None, "scorer": "embedding"}

    def finish(self, split: ChoiceSplit, options: Mapping[str, Any], where: str) -> ChoiceSplit:
        """The split as loaded; ``scorer`` is checked here, before any model is built."""
        from bench.evaluation.choice import SCORERS

        scorer = options.get("scorer", "embedding")
        if scorer not in SCORERS:
            raise ConfigError(f"{where}: scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
        return split

    def card(self, split: ChoiceSplit) -> dict[str, Any]:
        """Items, images, captions and the items per subset."""
        per_subset: dict[str, int] = {}
        for item in split.items:
            per_subset[item.subset] = per_subset.get(item.subset, 0) + 1
        return {"items": len(split.items), "images": len(split.image_paths), "captions": len(split.captions),
                "subsets": per_subset, "averages": {k: list(v) for k, v in split.groups.items()}}  # fmt: skip

    def fingerprint(self, split: ChoiceSplit) -> dict[str, str]:
        """The images (paths and stamps) and the items (captions, truth, subsets)."""
        return split.fingerprint()

    def scorer(self, plan: Plan, adapter: Adapter, split: ChoiceSplit) -> SplitScorer:
        """A :class:`~bench.evaluation.choice.ChoiceScorer` with the table's ``scorer``."""
        from bench.evaluation.choice import ChoiceScorer

        kind = plan.cfg.datasets[plan.cell.dataset].get("scorer", "embedding")
        return ChoiceScorer(plan, adapter, split, kind)

    def record_fields(self, plan: Plan, score: SplitScorer, split: Any, per_query: Path | None) -> dict[str, Any]:
        """The eval-only fields, what scored the pairs, the per-item file and the intervals over items."""
        from bench.scoring.choice import save_items
        from bench.stats.bootstrap import BootstrapConfig, ci_key
        from bench.stats.choice import choice_intervals

        out = super().record_fields(plan, score, split, per_query)
        out["scored_by"] = getattr(score, "scored_by", None)
        outcomes = getattr(score, "outcomes", None)
        if outcomes is None:
            return out
        ev = plan.cfg.eval
        if ev.per_query and per_query is not None:
            meta = {"model": plan.cell.model, "dataset": plan.cell.dataset, "split": plan.cell.split,
                    "method": plan.cell.method_id, "seed": plan.cell.seed, "task": self.name}  # fmt: skip
            try:
                items = [{"images": [str(split.image_paths[i]) for i in it.images],
                          "captions": [split.captions[c] for c in it.captions], "truth": list(it.truth)}
                         for it in split.items]  # fmt: skip
                digest = save_items(per_query, outcomes, score.scores, score.pairs[2], meta, items)  # type: ignore[attr-defined]
            except OSError as e:
                raise BenchError(f"cannot write {per_query}: {e.strerror or e}") from None
            out["per_query"] = {"file": per_query.name, "sha256": digest, "unit": "item"}
        if ev.bootstrap:
            out[ci_key(ev.ci_level)] = {"choice": choice_intervals(outcomes, BootstrapConfig.of(ev))}
            out["bootstrap"] = {"resamples": ev.bootstrap, "seed": ev.bootstrap_seed, "level": ev.ci_level,
                                "unit": "item"}  # fmt: skip
        return out

    def compare(self, a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
                cfg: BootstrapConfig) -> dict[str, Any]:  # fmt: skip
        """The paired bootstrap over items of every accuracy and McNemar's test per test
        (:func:`bench.stats.choice.compare_choice`), from the records' per-item files; seeds pair as for image-text
        cells (:func:`bench.report.uncertainty.pair_seeds`)."""
        from bench.report.uncertainty import checked_per_query_file, is_trained, pair_seeds, unpaired_seeds
        from bench.scoring.choice import load_items
        from bench.stats.choice import compare_choice

        def cells(records: Sequence[Mapping[str, Any]]) -> list[Any]:
            out = []
            for rec in records:
                try:
                    out.append(load_items(checked_per_query_file(rec), int(rec.get("seed", 0)), is_trained(rec)))
                except ValueError as e:
                    raise BenchError(str(e)) from None
            return sorted(out, key=lambda c: c.seed)

        ca, cb = cells(a), cells(b)
        pa, pb = pair_seeds(ca, cb)
        try:
            out = compare_choice(pa, pb, cfg)
        except ValueError as e:
            raise BenchError(f"bench compare: {e}") from None
        left_a, left_b = unpaired_seeds(ca, cb)
        out["a"] = {"seeds": [c.seed for c in pa], "left_out": left_a}
        out["b"] = {"seeds": [c.seed for c in pb], "left_out": left_b}
        return out

    def render_tables(self, records: Sequence[Mapping[str, Any]], fmt: str) -> str:
        """Each set in its paper's form: subsets as columns, the paper's averages, the mean
        (:mod:`bench.report.choice_tables`)."""
        from bench.report.choice_tables import render_choice

        return render_choice(records, fmt)

    def report_section(self, records: Sequence[Mapping[str, Any]], out: Path, dataset: str, split: str,
                       **options: Any) -> str:  # fmt: skip
        """The set's table and the focus row's failed items (:func:`bench.report.choice_html.choice_page`)."""
        from bench.report.choice_html import choice_page

        return choice_page(records, out, dataset, split, **options)

    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Every accuracy: ``<test>`` for the mean over subsets, ``<test>/<average>`` for a paper's average and
        ``<test>/subset:<subset>`` for a subset."""
        block = metrics.get("choice") or {}
        averages = set(block.get("averages") or ())
        out = {}
        for kind in _KINDS:
            for name, v in (block.get(kind) or {}).items():
                if v is None:
                    continue
                key = kind if name == "mean" else f"{kind}/{name}" if name in averages else f"{kind}/subset:{name}"
                out[key] = float(v)
        return out

    def columns(self, keys: Iterable[str]) -> list[Column]:
        """Shown: each test's mean and the text test's averages (SugarCrepe's replace / swap / add); each subset's
        accuracy in CSV."""
        keys = list(keys)
        cols = []
        for kind in _KINDS:
            if kind in keys:
                cols.append(Column(kind, kind, kind, True, kind))
            for key in (k for k in keys if k.startswith(f"{kind}/")):
                name = key.split("/", 1)[1].removeprefix("subset:")
                shown = kind == "text" and not key.startswith(f"{kind}/subset:")
                cols.append(Column(key, f"{kind} {name}", f"{kind} {name}", shown, f"{kind}_{name}"))
        return cols
