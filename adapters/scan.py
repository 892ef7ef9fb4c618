"""SCAN, stacked cross attention (Lee et al., ECCV 2018; kuanghuei/SCAN), over region features (``scan``), loading
the authors' checkpoints and scoring many images against many captions per call.

Options: ``checkpoint`` (a ``model_best.pth.tar``, or two: the authors' ensemble, e.g. t-i and i-t, whose score is the
mean, as their ``evaluation_ensemble.py``), ``vocab`` (the ``*_precomp_vocab.json``). Without a checkpoint the model
is built at random from the architecture options (the reference's ``train.py`` defaults).

The official ``train.py`` saves ``{"model": [img_enc, txt_enc state dicts], "opt": argparse.Namespace, ...}``; it
loads as SGRAF's do, and ``opt`` sets the build: ``img_dim``, ``word_dim``, ``embed_size``, ``num_layers``,
``bi_gru``, ``no_imgnorm``, ``no_txtnorm``, ``precomp_enc_type``, ``cross_attn`` (``t2i``: each word attends over the
regions; ``i2t``: each region over the words), ``raw_feature_norm``, ``agg_func`` (``LogSumExp``, ``Mean``, ``Max``,
``Sum``), ``lambda_lse``, ``lambda_softmax``. A ``weight_norm`` image encoder's ``fc.weight_g`` / ``fc.weight_v`` are
folded into one weight (``g * v / ||v||``), which scores the same. The reference's ``l1norm`` and
``clipped_l1norm`` call a function it never defines, so they cannot be reproduced and are an error naming the field.

The reference ``xattn_score_t2i`` / ``xattn_score_i2t`` loop over captions in Python; here one call scores a block of
images x captions, padded words masked where the reference's per-caption slice would not have seen them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from bench.adapters.region_base import RegionAdapter, check_vocab, load_ensemble, load_parts, resolve_architecture
from bench.adapters.region_text import EncoderText, Vocabulary, l2norm
from bench.adapters.registry import register_adapter
from bench.adapters.weights import read_reference_checkpoint
from torch import nn

from bench.errors import ConfigError

__all__ = ["ARCHITECTURE", "SCAN", "ScanNet"]

# opt field -> the reference default (kuanghuei/SCAN train.py).
ARCHITECTURE: dict[str, Any] = {
    "img_dim": 2048, "word_dim": 300, "embed_size": 1024, "num_layers": 1, "bi_gru": False, "no_imgnorm": False,
    "no_txtnorm": False, "precomp_enc_type": "basic", "cross_attn": "t2i", "raw_feature_norm": "clipped_l2norm",
    "agg_func": "LogSumExp", "lambda_lse": 6.0, "lambda_softmax": 9.0,
}  # fmt: skip
CHOICES = {
    "precomp_enc_type": ("basic", "weight_norm"),
    "cross_attn": ("t2i", "i2t"),
    "raw_feature_norm": ("clipped_l2norm", "l2norm", "softmax", "clipped", "no_norm"),
    "agg_func": ("LogSumExp", "Mean", "Max", "Sum"),
}


def _check_choices(arch: dict[str, Any], where: str) -> None:
    for key, allowed in CHOICES.items():
        if arch[key] not in allowed:
            extra = " (the reference's l1 norms call an undefined l1norm_d)" if "l1norm" in str(arch[key]) else ""
            raise ConfigError(f"{where}: {key} = {arch[key]!r} is not one of {', '.join(allowed)}{extra}")


class EncoderImagePrecomp(nn.Module):
    """Region features to L2-normalised region states (``fc``)."""

    def __init__(self, img_dim: int, embed_size: int, no_imgnorm: bool = False) -> None:
        super().__init__()
        self.no_imgnorm = no_imgnorm
        self.fc = nn.Linear(img_dim, embed_size)
        r = math.sqrt(6.0) / math.sqrt(img_dim + embed_size)
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.fc(images)
        return out if self.no_imgnorm else l2norm(out, dim=-1)


def _cosine(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """The reference's ``cosine_similarity``: the dot product over the clamped product of the norms."""
    return (x1 * x2).sum(dim) / (torch.linalg.vector_norm(x1, dim=dim) * torch.linalg.vector_norm(x2, dim=dim)).clamp(
        min=eps)  # fmt: skip


class ScanNet(nn.Module):
    """One trained SCAN model: ``img_enc`` and ``txt_enc`` (module names as the reference's), and its attention."""

    def __init__(self, *, vocab_size: int, img_dim: int, word_dim: int, embed_size: int, num_layers: int,
                 bi_gru: bool, no_imgnorm: bool, no_txtnorm: bool, cross_attn: str, raw_feature_norm: str,
                 agg_func: str, lambda_lse: float, lambda_softmax: float, **_: Any) -> None:  # fmt: skip
        super().__init__()
        self.embed_size, self.img_dim, self.num_region = embed_size, img_dim, None
        # The reference opt; an exported weight-normed encoder is written folded, so as "basic".
        self.opt = {"vocab_size": vocab_size, "img_dim": img_dim, "word_dim": word_dim, "embed_size": embed_size,
                    "num_layers": num_layers, "bi_gru": bi_gru, "no_imgnorm": no_imgnorm, "no_txtnorm": no_txtnorm,
                    "precomp_enc_type": "basic", "cross_attn": cross_attn, "raw_feature_norm": raw_feature_norm,
                    "agg_func": agg_func, "lambda_lse": lambda_lse, "lambda_softmax": lambda_softmax}  # fmt: skip
        self.parts = ("img_enc", "txt_enc")
        self.cross_attn, self.raw_feature_norm, self.agg_func = cross_attn, raw_feature_norm, agg_func
        self.lambda_lse, self.lambda_softmax = float(lambda_lse), float(lambda_softmax)
        self.img_enc = EncoderImagePrecomp(img_dim, embed_size, no_imgnorm)
        self.txt_enc = EncoderText(vocab_size, word_dim, embed_size, num_layers, bi_gru, no_txtnorm, rnn_name="rnn",
                                   dropout=0.0)  # fmt: skip

    def _raw_norm(self, attn: torch.Tensor, dim: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The reference's first normalisation of the attention logits, over ``dim`` (``mask``: the positions along
        it that exist; None when all do)."""
        norm = self.raw_feature_norm
        if norm == "softmax":
            return torch.softmax(attn if mask is None else attn.masked_fill(~mask, -torch.inf), dim=dim)
        if norm.startswith("clipped"):
            attn = F.leaky_relu(attn, 0.1)
        return l2norm(attn, dim=dim) if norm.endswith("l2norm") else attn

    def _aggregate(self, sim: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Pool ``sim`` over its last dimension (``mask``: the entries that exist) by ``agg_func``."""
        if self.agg_func == "LogSumExp":
            e = (sim * self.lambda_lse).exp()
            return torch.log((e if mask is None else e * mask).sum(dim=-1)) / self.lambda_lse
        if self.agg_func == "Max":
            return (sim if mask is None else sim.masked_fill(~mask, -torch.inf)).amax(dim=-1)
        total = (sim if mask is None else sim * mask).sum(dim=-1)
        if self.agg_func == "Sum":
            return total
        return total / (sim.shape[-1] if mask is None else mask.sum(dim=-1))

    def score(self, images: torch.Tensor, texts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores ``[Bi, Bc]`` of region states ``[Bi, R, d]`` against word states ``[Bc, L, d]``."""
        n_img, n_reg, dim = images.shape
        n_cap, n_word, _ = texts.shape
        words = torch.arange(n_word, device=texts.device)[None, :] < lengths.to(texts.device)[:, None]  # [Bc, L]
        # Word-region logits of every pair: [Bc, L, Bi, R].
        attn = (texts.reshape(n_cap * n_word, dim) @ images.reshape(n_img * n_reg, dim).T).view(n_cap, n_word,
                                                                                                n_img, n_reg)
        if self.cross_attn == "t2i":
            # Each word attends over the image's regions; the first norm runs over the caption's words.
            attn = self._raw_norm(attn, 1, words[:, :, None, None])
            attn = torch.softmax(attn * self.lambda_softmax, dim=3)
            context = torch.bmm(attn.permute(2, 0, 1, 3).reshape(n_img, n_cap * n_word, n_reg), images)
            sim = _cosine(texts[None], context.view(n_img, n_cap, n_word, dim), dim=-1)  # [Bi, Bc, L]
            return self._aggregate(sim, words[None].expand(n_img, -1, -1))
        # i2t: each region attends over the caption's words; the first norm runs over the regions.
        attn = self._raw_norm(attn, 3, None)
        attn = attn.masked_fill(~words[:, :, None, None], -torch.inf)
        attn = torch.softmax(attn * self.lambda_softmax, dim=1)  # over words
        context = torch.bmm(attn.permute(0, 2, 3, 1).reshape(n_cap, n_img * n_reg, n_word), texts)
        sim = _cosine(images[None], context.view(n_cap, n_img, n_reg, dim), dim=-1)  # [Bc, Bi, R]
        return self._aggregate(sim, None).T

    def pair_floats(self, regions: int, words: int) -> int:
        """Working floats of one pair: the attention maps and the attended context."""
        attended = words if self.cross_attn == "t2i" else regions
        return 4 * words * regions + 3 * attended * self.embed_size


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``fc.weight_g`` / ``fc.weight_v`` of ``weight_norm(Linear, dim=None)`` as one ``fc.weight``."""
    if "fc.weight_v" not in state:
        return state
    out = {k: v for k, v in state.items() if k not in ("fc.weight_g", "fc.weight_v")}
    v = state["fc.weight_v"]
    out["fc.weight"] = state["fc.weight_g"] * v / torch.linalg.vector_norm(v)
    return out


def _net_from_checkpoint(path: str, vocab: Vocabulary, explicit: dict[str, Any], allow_pickle: bool) -> ScanNet:
    ckpt = read_reference_checkpoint(path, parts=("img_enc", "txt_enc"), family="SCAN", repo="kuanghuei/SCAN",
                                     allow_pickle=allow_pickle)  # fmt: skip
    arch = resolve_architecture(path, ckpt.opt, ARCHITECTURE, explicit)
    _check_choices(arch, f"{path}: opt")
    check_vocab(path, vocab, ckpt.parts[1], ckpt.opt)
    net = ScanNet(vocab_size=len(vocab), **arch)
    load_parts(path, {"img_enc": net.img_enc, "txt_enc": net.txt_enc}, [_fold_weight_norm(ckpt.parts[0]),
                                                                           ckpt.parts[1]])  # fmt: skip
    return net


@register_adapter("scan")
class SCAN(RegionAdapter):
    """SCAN (t-i or i-t attention), or an ensemble of two, over region features; scores every pair."""

    def __init__(self, nets: list[ScanNet], vocab: Vocabulary, source: str) -> None:
        super().__init__(nets, vocab, source)
        kinds = [f"SCAN {n.cross_attn} {n.agg_func}" for n in nets]
        self.pair_score_kind = kinds[0] if len(nets) == 1 else f"mean of {' and '.join(kinds)}"

    @classmethod
    def build(
        cls,
        *,
        vocab: str,
        checkpoint: str | list[str] | None = None,
        allow_pickle: bool = False,
        img_dim: int | None = None,
        word_dim: int | None = None,
        embed_size: int | None = None,
        num_layers: int | None = None,
        bi_gru: bool | None = None,
        no_imgnorm: bool | None = None,
        no_txtnorm: bool | None = None,
        cross_attn: str | None = None,
        raw_feature_norm: str | None = None,
        agg_func: str | None = None,
        lambda_lse: float | None = None,
        lambda_softmax: float | None = None,
    ) -> SCAN:
        """Build from the authors' checkpoint(s), or at random from the architecture options."""
        voc = Vocabulary.load(vocab)
        explicit = {"img_dim": img_dim, "word_dim": word_dim, "embed_size": embed_size, "num_layers": num_layers,
                    "bi_gru": bi_gru, "no_imgnorm": no_imgnorm, "no_txtnorm": no_txtnorm, "cross_attn": cross_attn,
                    "raw_feature_norm": raw_feature_norm, "agg_func": agg_func, "lambda_lse": lambda_lse,
                    "lambda_softmax": lambda_softmax}  # fmt: skip
        if checkpoint is None:
            arch = {k: v if explicit.get(k) is None else explicit[k] for k, v in ARCHITECTURE.items()}
            _check_choices(arch, "scan options")
            return cls([ScanNet(vocab_size=len(voc), **arch)], voc, "random")
        nets, source = load_ensemble(checkpoint, lambda p: _net_from_checkpoint(p, voc, explicit, allow_pickle),
                                     "the authors' ensemble")  # fmt: skip
        return cls(nets, voc, source)
