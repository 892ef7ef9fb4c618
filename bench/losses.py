"""Base retrieval losses. Each is an ``nn.Module`` returning a dict of ``*_loss`` terms that the trainer sums.

Both handle the image repeats of a caption-sampled batch: captions of the same image are positives of each other's
image (``image_index`` equal), never negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCELoss", "TripletLoss", "multi_positive_targets"]


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
        scores = img @ txt.t()  # [N, N]
        diag = scores.diag().view(-1, 1)
        positive = image_index[:, None] == image_index[None, :]  # same image: not a negative
        cost_t = (self.margin + scores - diag).clamp(min=0).masked_fill(positive, 0)  # image i vs captions j
        cost_i = (self.margin + scores - diag.t()).clamp(min=0).masked_fill(positive, 0)  # caption j vs images i
        if self.max_violation:
            return {"triplet_loss": cost_t.max(1)[0].sum() + cost_i.max(0)[0].sum()}
        return {"triplet_loss": cost_t.sum() + cost_i.sum()}
