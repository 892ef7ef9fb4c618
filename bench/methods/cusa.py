"""CUSA: Cross-modal and Uni-modal Soft-label Alignment (Huang et al., AAAI 2024), as methods on any adapter.

The objective sits on top of an adapter's joint embeddings (for VSE∞ after GPO pooling; for CLIP on the tower
outputs) without changing the adapter. It owns

* cross heads (LayerNorm + Linear per tower): they feed the contrastive term and CSA, and i2t/t2i evaluation;
* uni heads (LayerNorm + Linear per tower, USA only): they feed USA and i2i/t2t evaluation;
* learnable student temperatures, clamped in place to the reference ranges each step; the teacher temperature is
  fixed.

Teacher features come from :mod:`bench.methods.teachers` (computed once, cached, memory-mapped); no teacher runs in a
training step and no gradient reaches them. The four methods of the paper's ablation (Table 8) share this objective:
``contrastive`` (α = β = 0), ``csa`` (β = 0), ``usa`` (α = 0) and ``cusa``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench.adapters.protocol import Adapter, CrossScorer
from bench.config import TrainConfig
from bench.data.base import RetrievalSplit
from bench.errors import ConfigError
from bench.methods import register_method
from bench.methods.base import Method, Objective
from bench.methods.losses import SIGLIP_INIT, SigmoidLoss, TripletLoss, cusa_loss
from bench.methods.teachers import TeacherSpec, spec_dict, teacher_features

__all__ = ["BASE_LOSSES", "CusaObjective", "Head", "contrastive_temperature", "sigmoid_init"]

log = logging.getLogger(__name__)

# (init, low, high) of each student temperature: the reference code's cusa.yaml.
TAU_CON = (0.05, 0.01, 0.10)
TAU_CSA = (0.45, 0.10, 0.99)
TAU_USA = (0.45, 0.10, 1.00)
# [train] loss values: the contrastive term of the objective ("auto": the adapter's default_loss).
BASE_LOSSES = ("infonce", "triplet", "sigmoid")


class Head(nn.Module):
    """LayerNorm + Linear (d -> d).

    Args:
        dim: Embedding size.
        init: ``identity`` (Linear = I, so the head starts as a normalisation of the adapter's embedding and a
            pretrained alignment survives step 0) or ``normal`` (N(0, 0.02²), the reference code's choice, which
            scrambles a pretrained alignment).
    """

    def __init__(self, dim: int, init: str = "identity") -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        if init == "identity":
            nn.init.eye_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        elif init == "normal":
            nn.init.normal_(self.proj.weight, std=0.02)
        else:
            raise ConfigError(f"head_init {init!r}: valid: identity, normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.ln(x))


_TAUS = ("tau_con", "tau_csa", "tau_usa_img", "tau_usa_txt")


def _word_mean(words: torch.Tensor) -> torch.Tensor:
    """The mean of each caption's word states ``[N, L, D]`` (its non-zero rows, which come first)."""
    present = (words != 0).any(dim=-1, keepdim=True).to(words.dtype)
    return (words * present).sum(dim=1) / present.sum(dim=1).clamp(min=1)


def _tau(init: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(float(init)))


class CusaObjective(Objective):
    """Contrastive + CSA + USA on an adapter's embeddings.

    Args:
        dim: The adapter's embedding size.
        alpha: CSA weight (0 turns CSA off).
        beta: USA weight (0 turns USA off and builds no uni heads).
        cross_heads: Put cross heads on the embeddings (the paper's setting); False uses the embeddings directly.
        head_init: ``identity`` or ``normal`` (see :class:`Head`).
        tau_teacher: Fixed teacher temperature.
        con_reduction: ``mean`` (the reference code and so the paper's numbers: the InfoNCE term divided by the
            batch size N, which is what gives the soft-label terms their weight) or ``sum`` (standard InfoNCE; α and
            β would need re-tuning).
        triplet: Use this triplet loss as the contrastive term instead of InfoNCE (VSE∞'s base loss).
        sigmoid: Use this sigmoid loss as the contrastive term instead of InfoNCE (SigLIP's base loss); its logit
            scale and bias are parameters of the objective. ``con_reduction`` and ``tau_con`` apply to InfoNCE only.
        teachers: The teacher models.
        tau_con: Initial contrastive temperature (clamped to the reference range).
        tau_student: Initial CSA and USA student temperatures (the paper's 0.45).
        pair_scores: A cross-attention model's scoring of local states (its ``score_matrix``): the batch's
            image-caption scores are then its pair scores, not cosines, and the uni heads read the mean of each
            item's local states (the paper's SGR and SAF setting: uni-modal global features from an FC layer per
            modality). No cross heads.
    """

    def __init__(
        self, dim: int, *, alpha: float, beta: float, cross_heads: bool = True, head_init: str = "identity",
        tau_teacher: float = 1.0, con_reduction: str = "mean", triplet: TripletLoss | None = None,
        sigmoid: SigmoidLoss | None = None, teachers: TeacherSpec | None = None, tau_con: float = TAU_CON[0],
        tau_student: float = TAU_CSA[0], uni_embedding: str = "cross",
        pair_scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if pair_scores is not None and cross_heads:
            raise ConfigError("cross_heads: a cross-attention model's pair scores take no cross heads; set "
                              "cross_heads = false")  # fmt: skip
        self.pair_scores = pair_scores
        if con_reduction not in ("sum", "mean"):
            raise ConfigError(f"con_reduction {con_reduction!r}: valid: sum, mean")
        if uni_embedding not in ("cross", "backbone"):
            raise ConfigError(f"uni_embedding {uni_embedding!r}: valid: cross (after the cross heads), backbone")
        # Without uni heads, what i2i/t2t score: the cross heads' output, or (the CUSA reference's choice for its
        # baseline and +CSA rows) the adapter's own embedding before them.
        self.uni_embedding = uni_embedding
        self.alpha, self.beta, self.tau_teacher, self.con_reduction = alpha, beta, tau_teacher, con_reduction
        self.cross = (
            nn.ModuleDict({"image": Head(dim, head_init), "text": Head(dim, head_init)}) if cross_heads else None
        )
        self.uni = nn.ModuleDict({"image": Head(dim, head_init), "text": Head(dim, head_init)}) if beta else None
        self.tau_con = _tau(min(max(tau_con, TAU_CON[1]), TAU_CON[2]))
        self.tau_csa = _tau(min(max(tau_student, TAU_CSA[1]), TAU_CSA[2]))
        self.tau_usa_img = _tau(min(max(tau_student, TAU_USA[1]), TAU_USA[2]))
        self.tau_usa_txt = _tau(min(max(tau_student, TAU_USA[1]), TAU_USA[2]))
        self.tau_student, self.tau_con_init = tau_student, float(self.tau_con.detach())
        self.tau_con_from = "config"  # where tau_con's start came from: "config" or "model" (the checkpoint's own)
        if triplet is not None and sigmoid is not None:
            raise ConfigError("CusaObjective takes one base loss: triplet or sigmoid, not both")
        self.triplet, self.sigmoid = triplet, sigmoid
        self.teachers = teachers
        self._teacher_img: np.ndarray | None = None
        self._teacher_txt: np.ndarray | None = None

    @property
    def needs_teachers(self) -> bool:
        """Whether a soft-label term is on."""
        return bool(self.alpha or self.beta)

    def prepare(self, train: RetrievalSplit, *, work_dir: Path, device: torch.device, stage1_cache: Path | None,
                progress: bool = True) -> None:  # fmt: skip
        """Load (or compute once and cache) the teachers' features of the train split."""
        if not self.needs_teachers:
            return
        assert self.teachers is not None
        self._teacher_img, self._teacher_txt = teacher_features(
            self.teachers, train, work_dir, device=device, stage1_cache=stage1_cache, progress=progress
        )

    def _clamp(self) -> None:
        with torch.no_grad():
            self.tau_con.clamp_(TAU_CON[1], TAU_CON[2])
            self.tau_csa.clamp_(TAU_CSA[1], TAU_CSA[2])
            self.tau_usa_img.clamp_(TAU_USA[1], TAU_USA[2])
            self.tau_usa_txt.clamp_(TAU_USA[1], TAU_USA[2])

    def _rows(self, table: np.ndarray | None, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        if table is None:
            raise RuntimeError("CusaObjective.prepare() was not called: no teacher features")
        return torch.from_numpy(np.asarray(table[idx.cpu().numpy()], dtype=np.float32)).to(device)

    def views(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.pair_scores is not None:  # local states: what the pair scorer reads; the uni heads read their means
            pooled = (image_emb.mean(dim=1), _word_mean(text_emb))
            uni = (self.uni["image"](pooled[0]), self.uni["text"](pooled[1])) if self.uni is not None else pooled
            return {"cross": (image_emb, text_emb), "uni": uni}
        cross = (image_emb, text_emb)
        if self.cross is not None:
            cross = (self.cross["image"](image_emb), self.cross["text"](text_emb))
        if self.uni is not None:
            uni = (self.uni["image"](image_emb), self.uni["text"](text_emb))
        else:
            uni = (image_emb, text_emb) if self.uni_embedding == "backbone" and self.cross is not None else cross
        return {"cross": cross, "uni": uni}

    @property
    def embedding_kind(self) -> str:
        """What ``views()["uni"]`` is: ``uni_heads``, ``backbone`` (the adapter's embedding) or ``joint``."""
        if self.uni is not None:
            return "uni_heads"
        return "backbone" if self.uni_embedding == "backbone" and self.cross is not None else "joint"

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._clamp()
        views = self.views(batch["image_emb"], batch["text_emb"])
        (img, txt), (img_uni, txt_uni) = views["cross"], views["uni"]
        if self.needs_teachers:
            t_img = self._rows(self._teacher_img, batch["image_index"], img.device)
            t_txt = self._rows(self._teacher_txt, batch["caption_index"], img.device)
        else:  # contrastive only: the soft-label terms are skipped, the teacher rows never read
            t_img = t_txt = img.detach()
        s_it = self.pair_scores(img, txt) if self.pair_scores is not None else None
        out = cusa_loss(
            img, txt, img_uni if self.uni is not None else None, txt_uni if self.uni is not None else None,
            t_img, t_txt, batch["image_index"], tau_con=self.tau_con, tau_csa=self.tau_csa,
            tau_usa_img=self.tau_usa_img, tau_usa_txt=self.tau_usa_txt, tau_teacher=self.tau_teacher,
            alpha=self.alpha, beta=self.beta, con_reduction=self.con_reduction, s_it=s_it,
        )  # fmt: skip
        if self.triplet is not None and s_it is not None:
            out["contrastive"] = self.triplet.from_scores(s_it, batch["image_index"])["triplet_loss"]
        elif self.triplet is not None:
            out["contrastive"] = self.triplet(img, txt, batch["image_index"])["triplet_loss"]
        elif self.sigmoid is not None and s_it is not None:
            raise ConfigError('[train] loss = "sigmoid" reads cosines; a cross-attention model trains with '
                              '"triplet" or "infonce" on its pair scores')  # fmt: skip
        elif self.sigmoid is not None:  # the soft-label terms are the same whatever the base loss
            out["contrastive"] = self.sigmoid(img, txt, batch["image_index"])["sigmoid_loss"]
        terms = {"contrastive_loss": out["contrastive"]}
        if self.alpha:
            terms["csa_loss"] = out["csa"]
        if self.beta:
            terms["usa_loss"] = out["usa"]
        terms["tau_con"] = self.tau_con.detach()
        if self.sigmoid is not None:  # logged, not optimised (no _loss suffix)
            terms["logit_scale"] = self.sigmoid.logit_scale.detach()
            terms["logit_bias"] = self.sigmoid.logit_bias.detach()
        return terms

    def describe(self) -> dict[str, Any]:
        """Settings recorded in each result."""
        return {
            "alpha": self.alpha, "beta": self.beta, "cross_heads": self.cross is not None,
            "uni_heads": self.uni is not None, "uni_embedding": self.embedding_kind, "tau_teacher": self.tau_teacher,
            "student_scores": "pair scores" if self.pair_scores is not None else "cosine",
            "con_reduction": self.con_reduction,
            "contrastive_term": self.base_loss,
            "tau_init": {"con": self.tau_con_init, "con_from": self.tau_con_from, "student": self.tau_student},
            "tau_final": {n: round(float(getattr(self, n).detach()), 4) for n in _TAUS},
            "tau_ranges": {"con": TAU_CON[1:], "csa": TAU_CSA[1:], "usa": TAU_USA[1:]},
            "teachers": spec_dict(self.teachers) if self.teachers else None,
            **({"sigmoid": self._sigmoid_state()} if self.sigmoid is not None else {}),
        }  # fmt: skip

    @property
    def base_loss(self) -> str:
        """Name of the contrastive term: ``infonce``, ``triplet`` or ``sigmoid``."""
        return "triplet" if self.triplet is not None else "sigmoid" if self.sigmoid is not None else "infonce"

    def _sigmoid_state(self) -> dict[str, Any]:
        assert self.sigmoid is not None
        scale, bias = self.sigmoid.init
        final = self.sigmoid.logit_scale.detach(), self.sigmoid.logit_bias.detach()
        return {
            "init": {"logit_scale": round(scale, 4), "logit_bias": round(bias, 4)},
            "final": {"logit_scale": round(float(final[0]), 4), "logit_bias": round(float(final[1]), 4)},
        }


def sigmoid_init(adapter: Adapter) -> tuple[float, float]:
    """Initial ``(logit_scale, logit_bias)`` of the sigmoid loss for ``adapter``.

    A model trained with the sigmoid loss (it has a logit bias: open_clip SigLIP, transformers ``SiglipModel``) starts
    from its own pair, so fine-tuning continues its calibration; any other model starts from SigLIP's ``(log 10, -10)``
    (a CLIP temperature alone is not a sigmoid calibration).
    """
    bias, temperature = adapter.init_logit_bias, adapter.init_temperature
    if bias is None or temperature is None:
        return SIGLIP_INIT
    return math.log(1.0 / float(temperature)), float(bias)


class _SoftLabelMethod(Method):
    """One of the four CUSA ablation methods; the subclasses set the default weights. The teachers come from the
    ``[teachers]`` table, shared by every soft-label method of a grid."""

    default_alpha = 0.0
    default_beta = 0.0
    option_ranges: ClassVar[dict[str, tuple[float, float, bool, bool]]] = {
        "alpha": (0.0, math.inf, True, False),
        "beta": (0.0, math.inf, True, False),
        "tau_teacher": (0.0, math.inf, False, False),
        "tau_student": (0.0, math.inf, False, False),
    }

    def uses_teachers(self, options: dict[str, Any]) -> bool:
        return bool(options.get("alpha", self.default_alpha) or options.get("beta", self.default_beta))

    def objective(
        self, adapter: Adapter, cfg: TrainConfig, *, alpha: float | None = None, beta: float | None = None,
        cross_heads: bool = True, head_init: str = "identity", tau_teacher: float = 1.0,
        con_reduction: str = "mean", tau_student: float = 0.45, teachers: TeacherSpec | None = None,
        uni_embedding: str = "cross",
    ) -> CusaObjective:  # fmt: skip
        alpha = self.default_alpha if alpha is None else float(alpha)
        beta = self.default_beta if beta is None else float(beta)
        loss = adapter.default_loss if cfg.loss == "auto" else cfg.loss
        if loss not in BASE_LOSSES:
            raise ConfigError(f"[train] loss: unknown loss {loss!r}; valid: auto, {', '.join(BASE_LOSSES)}")
        triplet = TripletLoss(cfg.margin, cfg.max_violation) if loss == "triplet" else None
        sigmoid = SigmoidLoss(*sigmoid_init(adapter)) if loss == "sigmoid" else None
        teachers = teachers or TeacherSpec()
        tau_con, tau_from = contrastive_temperature(adapter, cfg)
        pair_scores = None
        if isinstance(adapter, CrossScorer):  # cross-attention: the student's scores are its pair scores
            if len(getattr(adapter, "nets", [None])) > 1:
                raise ConfigError(f"adapter {adapter.name!r} holds an ensemble; train its models one by one (the "
                                  "ensemble's score is their mean at evaluation)")  # fmt: skip
            pair_scores, cross_heads = adapter.score_matrix, False
        objective = CusaObjective(
            adapter.embed_dim, alpha=alpha, beta=beta, cross_heads=cross_heads, head_init=head_init,
            tau_teacher=tau_teacher, con_reduction=con_reduction, triplet=triplet, sigmoid=sigmoid, teachers=teachers,
            tau_con=tau_con, tau_student=tau_student, uni_embedding=uni_embedding, pair_scores=pair_scores,
        )  # fmt: skip
        objective.tau_con_from = tau_from
        return objective


def contrastive_temperature(adapter: Adapter, cfg: TrainConfig) -> tuple[float, str]:
    """The contrastive temperature training starts from, and where it came from.

    ``[train] temperature`` wins: the paper's 0.05 by default, for every model (the reference trains CLIP from 0.05
    too); ``"model"`` asks for the checkpoint's own (``adapter.init_temperature``: 0.01 for OpenAI CLIP), falling
    back to 0.05 for a model that has none.
    """
    if cfg.temperature != "model":
        return float(cfg.temperature), "config"
    if adapter.init_temperature is None:
        log.info('[train] temperature = "model", but %s has no temperature of its own; starting from %g',
                 adapter.name, TAU_CON[0])  # fmt: skip
        return TAU_CON[0], "default (the model has none)"
    return float(adapter.init_temperature), "model"


@register_method("contrastive")
class Contrastive(_SoftLabelMethod):
    """The base loss (InfoNCE, VSE∞'s triplet or SigLIP's sigmoid loss) on the adapter's embeddings, through cross
    heads by default."""


@register_method("csa")
class CSA(_SoftLabelMethod):
    """Contrastive + cross-modal soft-label alignment (α = 0.1)."""

    default_alpha = 0.1


@register_method("usa")
class USA(_SoftLabelMethod):
    """Contrastive + uni-modal soft-label alignment (β = 0.5)."""

    default_beta = 0.5


@register_method("cusa")
class CUSA(_SoftLabelMethod):
    """Contrastive + CSA + USA (α = 0.1, β = 0.5), the paper's full method."""

    default_alpha = 0.1
    default_beta = 0.5
