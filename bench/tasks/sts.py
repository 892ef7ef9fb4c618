"""Sentence-pair similarity (STS-B, SICK-R, SentEval STS12-16): eval-only, scored with Spearman's ρ x 100 per file
and their mean, as SentEval and the CUSA paper report it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bench.data.sts import STSSplit
from bench.tasks import register_task
from bench.tasks.base import Column
from bench.tasks.unimodal import UnimodalTask

__all__ = ["STSTask"]


@register_task
class STSTask(UnimodalTask):
    """STS on an :class:`STSSplit`; records hold ``metrics["sts"] = {<file>: ρ, ..., "mean": ρ}``."""

    name = "sts"
    title = "semantic textual similarity"
    report_order = 2
    legend = r"STS Spearman $\rho\times100$"

    def card(self, split: STSSplit) -> dict[str, Any]:
        """Pairs and their groups (files)."""
        return {"pairs": len(split.sentence1), "groups": sorted(set(split.groups))}

    def fingerprint(self, split: STSSplit) -> dict[str, str]:
        """The pairs, their groups and gold scores."""
        h = hashlib.sha256()
        for a, b, g in zip(split.sentence1, split.sentence2, split.groups, strict=True):
            h.update(f"{a}\0{b}\0{g}\n".encode())
        h.update(np.asarray(split.scores, dtype=np.float64).tobytes())
        return {"pairs": h.hexdigest()[:16]}

    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Each file's ρ and their ``mean``."""
        return {k: float(v) for k, v in (metrics.get("sts") or {}).items() if v is not None}

    def columns(self, keys: Iterable[str]) -> list[Column]:
        """The mean ρ shown; each file's ρ in CSV."""
        files = sorted(k for k in keys if k != "mean")
        mean = Column("mean", "ρ", r"$\rho$", True, "rho_mean")
        return [mean] + [Column(f, f"ρ {f}", rf"$\rho$ {f}", False, f"rho_{f}") for f in files]
