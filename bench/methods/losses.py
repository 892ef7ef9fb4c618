"""Base retrieval losses. Each is an ``nn.Module`` returning a dict of ``*_loss`` terms that the trainer sums.

Each handles the image repeats of a caption-sampled batch: captions of the same image are positives of each other's
image (``image_index`` equal), never negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SIGLIP_INIT",
    "InfoNCELoss",
    "SigmoidLoss",
    "TripletLoss",
    "cusa_loss",
    "kl_rows",
    "multi_positive_targets",
]

# (log t, b) at the start of SigLIP training: t = 10, b = -10 (Zhai et al. 2023, Sec. 3.3; open_clip's SigLIP configs).
SIGLIP_INIT = (math.log(10.0), -10.0)


def multi_positive_targets(image_index: torch.Tensor) -> torch.Tensor:
    """``Y[i, j] = [idx_i == idx_j] / #{k: idx_k == idx_i}``: each row spreads its mass over its positives."""
    same = (image_index[:, None] == image_index[None, :]).float()  # [N, N]
    return same / same.sum(1, keepdim=True)


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE on cosine similarities with a learnable temperature (CLIP; ALBEF multi-positive targets).

    Args:
        temperature: Initial temperature; learned as ``log(1/τ)`` like CLIP's ``logit_scale``, capped at 100.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, image_index: torch.Tensor) -> dict:
        """Loss of a batch of N pairs: ``image_emb [N, D]``, ``text_emb [N, D]``, ``image_index [N]``."""
        img, txt = F.normalize(image_emb.float(), dim=-1), F.normalize(text_emb.float(), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * img @ txt.t()  # [N_img_rows, N_txt]
        y = multi_positive_targets(image_index)
        i2t = -(y * F.log_softmax(logits, dim=1)).sum(1).mean()
        t2i = -(y * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
        return {"contrastive_loss": (i2t + t2i) / 2}


class TripletLoss(nn.Module):
    """VSE++ hinge triplet loss, summed over the batch as in VSE∞.

    Args:
        margin: Hinge margin on cosine similarity.
        max_violation: Use only the hardest negative per query (VSE++), else sum over all negatives.
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True) -> None:
        super().__init__()
        self.margin, self.max_violation = margin, max_violation

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, image_index: torch.Tensor) -> dict:
        """Loss of a batch of N pairs (row i of each is a positive pair)."""
        img, txt = F.normalize(image_emb.float(), dim=-1), F.normalize(text_emb.float(), dim=-1)
        return self.from_scores(img @ txt.t(), image_index)

    def from_scores(self, scores: torch.Tensor, image_index: torch.Tensor) -> dict:
        """The loss of a batch's score matrix ``[N, N]`` (image row i, caption j; a cross-attention model's pair
        scores, as SCAN's and SGRAF's ``ContrastiveLoss``)."""
        diag = scores.diag().view(-1, 1)
        positive = image_index[:, None] == image_index[None, :]  # same image: not a negative
        cost_t = (self.margin + scores - diag).clamp(min=0).masked_fill(positive, 0)  # image i vs captions j
        cost_i = (self.margin + scores - diag.t()).clamp(min=0).masked_fill(positive, 0)  # caption j vs images i
        if self.max_violation:
            return {"triplet_loss": cost_t.max(1)[0].sum() + cost_i.max(0)[0].sum()}
        return {"triplet_loss": cost_t.sum() + cost_i.sum()}


class SigmoidLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss with a learnable logit scale and bias (Zhai et al., ICCV 2023).

    Every (image row, caption) pair of the batch is its own binary problem on the logit ``t·cos + b``: label +1 for
    pairs of the same image (the diagonal and, in a caption-sampled batch, the other captions of a repeated image),
    -1 otherwise. The loss is ``-Σ_ij log σ(label_ij · logit_ij) / N`` over the N×N pairs, divided by the N image
    rows as in open_clip's ``SigLipLoss`` (which it equals when every image is distinct). ``t = exp(logit_scale)`` is
    not clamped: SigLIP checkpoints end above CLIP's cap of 100.

    Args:
        logit_scale: Initial ``log t`` (the paper's ``log 10``; a SigLIP checkpoint's own value when fine-tuning it).
        logit_bias: Initial ``b`` (the paper's -10, which keeps the many negatives from dominating the first steps).
    """

    def __init__(self, logit_scale: float = SIGLIP_INIT[0], logit_bias: float = SIGLIP_INIT[1]) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias)))
        self.init = (float(logit_scale), float(logit_bias))

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, image_index: torch.Tensor) -> dict:
        """Loss of a batch of N pairs: ``image_emb [N, D]``, ``text_emb [N, D]``, ``image_index [N]``."""
        img, txt = F.normalize(image_emb.float(), dim=-1), F.normalize(text_emb.float(), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t() + self.logit_bias  # [N_img_rows, N_txt]
        labels = 2.0 * (image_index[:, None] == image_index[None, :]).float() - 1.0  # +1 same image, -1 otherwise
        return {"sigmoid_loss": -F.logsigmoid(labels * logits).sum() / img.shape[0]}


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()


def kl_rows(
    student: torch.Tensor, teacher: torch.Tensor, tau: torch.Tensor | float, tau_teacher: float
) -> torch.Tensor:
    """``(1/N) Σ_i KL(q_i ‖ p_i)`` with ``p = softmax(student/τ)`` and ``q = softmax(teacher/τ_teacher)`` per row.

    This is ``F.kl_div(log p, q, reduction="batchmean")``, the CUSA reference's soft-label term.
    """
    log_p = F.log_softmax(student / tau, dim=1)
    q = F.softmax(teacher / tau_teacher, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


def cusa_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    img_uni: torch.Tensor | None,
    txt_uni: torch.Tensor | None,
    teacher_img: torch.Tensor,
    teacher_txt: torch.Tensor,
    image_index: torch.Tensor,
    *,
    tau_con: torch.Tensor | float,
    tau_csa: torch.Tensor | float,
    tau_usa_img: torch.Tensor | float,
    tau_usa_txt: torch.Tensor | float,
    tau_teacher: float,
    alpha: float,
    beta: float,
    con_reduction: str = "sum",
    s_it: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """CUSA's losses for a batch of N caption-image pairs (Huang et al., AAAI 2024).

    Args:
        img: Cross-head image embeddings ``[N, D]`` (row i is the image of pair i; images may repeat).
        txt: Cross-head caption embeddings ``[N, D]``.
        img_uni: Uni-head image embeddings ``[N, D']`` (None when ``beta`` is 0).
        txt_uni: Uni-head caption embeddings ``[N, D']`` (None when ``beta`` is 0).
        teacher_img: Frozen image-teacher features of the pairs' images ``[N, T_i]``.
        teacher_txt: Frozen text-teacher features of the pairs' captions ``[N, T_t]``.
        image_index: Image id of each pair ``[N]``; equal ids are positives in the contrastive term.
        tau_con: Contrastive temperature.
        tau_csa: Student temperature of CSA (shared by i2t and t2i).
        tau_usa_img: Student temperature of USA's image rows.
        tau_usa_txt: Student temperature of USA's text rows.
        tau_teacher: Teacher temperature (fixed).
        alpha: CSA weight.
        beta: USA weight.
        con_reduction: ``"sum"`` over j (standard cross-entropy) or ``"mean"`` over j (the reference code's setting,
            which scales the contrastive term by 1/N).
        s_it: The student's image-caption scores ``[N, N]`` when they are not the cosines of ``img`` and ``txt``: a
            cross-attention model's pair scores (the CUSA paper's SGR and SAF rows: CSA on the batch's score matrix).

    Returns:
        Scalar tensors ``contrastive``, ``csa``, ``usa`` and ``total`` (their sum).
    """
    if con_reduction not in ("sum", "mean"):
        raise ValueError(f"con_reduction must be 'sum' or 'mean', got {con_reduction!r}")
    s_it = _cos(img, txt) if s_it is None else s_it.float()  # [N, N]; the diagonal stays in every softmax
    y = multi_positive_targets(image_index)
    reduce = (lambda t: t.sum(1)) if con_reduction == "sum" else (lambda t: t.mean(1))
    l_i2t = -reduce(y * F.log_softmax(s_it / tau_con, dim=1)).mean()
    l_t2i = -reduce(y * F.log_softmax(s_it.t() / tau_con, dim=1)).mean()
    zero = s_it.new_zeros(())
    out = {"contrastive": (l_i2t + l_t2i) / 2, "csa": zero, "usa": zero}
    if alpha or beta:
        with torch.no_grad():  # teachers are frozen: no gradient ever reaches them
            a_i, a_t = _cos(teacher_img, teacher_img), _cos(teacher_txt, teacher_txt)
    if alpha:
        out["csa"] = (
            alpha * 0.5 * (kl_rows(s_it, a_i, tau_csa, tau_teacher) + kl_rows(s_it.t(), a_t, tau_csa, tau_teacher))
        )
    if beta:
        if img_uni is None or txt_uni is None:
            raise ValueError("USA (beta > 0) needs uni-head embeddings img_uni and txt_uni")
        out["usa"] = (
            beta
            * 0.5
            * (
                kl_rows(_cos(img_uni, img_uni), a_i, tau_usa_img, tau_teacher)
                + kl_rows(_cos(txt_uni, txt_uni), a_t, tau_usa_txt, tau_teacher)
            )
        )
    out["total"] = out["contrastive"] + out["csa"] + out["usa"]
    return out
