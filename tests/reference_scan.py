"""A port of the SCAN reference (kuanghuei/SCAN ``model.py``), kept as the reference runs it: ``xattn_score_t2i`` and
``xattn_score_i2t`` loop over captions in Python, each against a shard of images (``evaluation.py``'s
``shard_xattn_*`` loops are :func:`reference_sgraf.ref_shard_attn_scores`, the same shards). ``tests/test_scan.py``
scores the same checkpoints with it and with the harness.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.nn.utils.weight_norm import weight_norm


def ref_l2norm(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    return torch.div(x, torch.pow(x, 2).sum(dim=dim, keepdim=True).sqrt() + eps)


class RefEncoderImagePrecomp(nn.Module):
    def __init__(self, img_dim: int, embed_size: int, weight_normed: bool = False) -> None:
        super().__init__()
        fc = nn.Linear(img_dim, embed_size)
        with warnings.catch_warnings():  # torch deprecates the old weight_norm; the reference saved its keys
            warnings.simplefilter("ignore", FutureWarning)
            self.fc = weight_norm(fc, dim=None) if weight_normed else fc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ref_l2norm(self.fc(images), dim=-1)


class RefEncoderText(nn.Module):
    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int, use_bi_gru: bool) -> None:
        super().__init__()
        self.use_bi_gru = use_bi_gru
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=use_bi_gru)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, Any]:
        packed = pack_padded_sequence(self.embed(x), lengths, batch_first=True)
        out, _ = self.rnn(packed)
        cap_emb, cap_len = pad_packed_sequence(out, batch_first=True)
        if self.use_bi_gru:
            cap_emb = (cap_emb[:, :, : cap_emb.size(2) // 2] + cap_emb[:, :, cap_emb.size(2) // 2 :]) / 2
        return ref_l2norm(cap_emb, dim=-1), cap_len


def func_attention(query: torch.Tensor, context: torch.Tensor, opt: argparse.Namespace, smooth: float
                   ) -> torch.Tensor:  # fmt: skip
    batch_size, query_l = query.size(0), query.size(1)
    source_l = context.size(1)
    attn = torch.bmm(context, torch.transpose(query, 1, 2))
    if opt.raw_feature_norm == "softmax":
        attn = F.softmax(attn.view(batch_size * source_l, query_l), dim=1).view(batch_size, source_l, query_l)
    elif opt.raw_feature_norm == "l2norm":
        attn = ref_l2norm(attn, 2)
    elif opt.raw_feature_norm == "clipped_l2norm":
        attn = ref_l2norm(nn.LeakyReLU(0.1)(attn), 2)
    elif opt.raw_feature_norm == "clipped":
        attn = nn.LeakyReLU(0.1)(attn)
    attn = torch.transpose(attn, 1, 2).contiguous().view(batch_size * query_l, source_l)
    attn = F.softmax(attn * smooth, dim=1).view(batch_size, query_l, source_l)
    attn_t = torch.transpose(attn, 1, 2).contiguous()
    weighted = torch.bmm(torch.transpose(context, 1, 2), attn_t)
    return torch.transpose(weighted, 1, 2)


def cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    w12 = torch.sum(x1 * x2, dim)
    w1, w2 = torch.norm(x1, 2, dim), torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def _aggregate(row_sim: torch.Tensor, opt: argparse.Namespace) -> torch.Tensor:
    if opt.agg_func == "LogSumExp":
        row_sim = row_sim.mul(opt.lambda_lse).exp()
        return torch.log(row_sim.sum(dim=1, keepdim=True)) / opt.lambda_lse
    if opt.agg_func == "Max":
        return row_sim.max(dim=1, keepdim=True)[0]
    if opt.agg_func == "Sum":
        return row_sim.sum(dim=1, keepdim=True)
    return row_sim.mean(dim=1, keepdim=True)


def xattn_score_t2i(images: torch.Tensor, captions: torch.Tensor, cap_lens: list[int], opt: argparse.Namespace
                    ) -> torch.Tensor:  # fmt: skip
    similarities = []
    n_image = images.size(0)
    for i in range(captions.size(0)):
        cap_i = captions[i, : cap_lens[i], :].unsqueeze(0).contiguous()
        cap_i_expand = cap_i.repeat(n_image, 1, 1)
        wei_context = func_attention(cap_i_expand, images, opt, smooth=opt.lambda_softmax)
        row_sim = cosine_similarity(cap_i_expand.contiguous(), wei_context.contiguous(), dim=2)
        similarities.append(_aggregate(row_sim.view(n_image, -1), opt))
    return torch.cat(similarities, 1)


def xattn_score_i2t(images: torch.Tensor, captions: torch.Tensor, cap_lens: list[int], opt: argparse.Namespace
                    ) -> torch.Tensor:  # fmt: skip
    similarities = []
    n_image = images.size(0)
    for i in range(captions.size(0)):
        cap_i = captions[i, : cap_lens[i], :].unsqueeze(0).contiguous()
        cap_i_expand = cap_i.repeat(n_image, 1, 1)
        wei_context = func_attention(images, cap_i_expand, opt, smooth=opt.lambda_softmax)
        row_sim = cosine_similarity(images, wei_context, dim=2)
        similarities.append(_aggregate(row_sim.view(n_image, -1), opt))
    return torch.cat(similarities, 1)


class RefSCAN:
    """The reference ``SCAN`` object: two modules, a list of two state dicts; ``opt`` as its ``train.py`` parses."""

    def __init__(self, opt: argparse.Namespace, seed: int) -> None:
        torch.manual_seed(seed)
        self.opt = opt
        self.img_enc = RefEncoderImagePrecomp(opt.img_dim, opt.embed_size, opt.precomp_enc_type == "weight_norm")
        self.txt_enc = RefEncoderText(opt.vocab_size, opt.word_dim, opt.embed_size, opt.num_layers, opt.bi_gru)
        for m in (self.img_enc, self.txt_enc):
            m.eval()

    def score(self, images: torch.Tensor, captions: torch.Tensor, cap_lens: list[int]) -> torch.Tensor:
        fn = xattn_score_t2i if self.opt.cross_attn == "t2i" else xattn_score_i2t
        return fn(images, captions, cap_lens, self.opt)

    def save(self, path: Any) -> None:
        """As the reference's ``train.py`` saves it."""
        state = [self.img_enc.state_dict(), self.txt_enc.state_dict()]
        torch.save({"model": state, "opt": self.opt, "epoch": 5, "best_rsum": 1.0, "Eiters": 10}, path)


def scan_opt(**changes: Any) -> argparse.Namespace:
    """SCAN's train.py defaults at a tiny width, with ``changes``."""
    opt = {"img_dim": 24, "word_dim": 12, "embed_size": 16, "num_layers": 1, "bi_gru": False, "no_imgnorm": False,
           "no_txtnorm": False, "precomp_enc_type": "basic", "cross_attn": "t2i", "raw_feature_norm": "clipped_l2norm",
           "agg_func": "LogSumExp", "lambda_lse": 6.0, "lambda_softmax": 9.0, "margin": 0.2, "max_violation": True,
           "data_name": "f30k_precomp"}  # fmt: skip
    return argparse.Namespace(**{**opt, **changes})


