"""A port of the SGRAF reference (Paranioar/SGRAF ``model.py`` and ``evaluation.py``), kept as the reference runs it:
``EncoderSimilarity.forward`` loops over captions in Python, each against a shard of images; ``encode_data`` encodes
captions in length-sorted batches; ``i2t`` / ``t2i`` rank with ``argsort``. The parity tests (``tests/test_sgraf.py``)
and the speed benchmark (``benchmarks/pair_scoring.py``) score the same model with it and with the harness.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def ref_l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    return torch.div(x, torch.pow(x, 2).sum(dim=dim, keepdim=True).sqrt() + eps)


def ref_l1norm(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    return torch.div(x, torch.abs(x).sum(dim=dim, keepdim=True) + eps)


class RefEncoderImage(nn.Module):
    def __init__(self, img_dim: int, embed_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ref_l2norm(self.fc(images), dim=-1)


class RefEncoderText(nn.Module):
    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.dropout = nn.Dropout(0.4)
        self.cap_rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=True)

    def forward(self, captions: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        packed = pack_padded_sequence(self.dropout(self.embed(captions)), lengths, batch_first=True)
        out, _ = self.cap_rnn(packed)
        cap_emb, _ = pad_packed_sequence(out, batch_first=True)
        cap_emb = (cap_emb[:, :, : cap_emb.size(2) // 2] + cap_emb[:, :, cap_emb.size(2) // 2 :]) / 2
        return ref_l2norm(cap_emb, dim=-1)


class RefVisualSA(nn.Module):
    def __init__(self, embed_dim: int, num_region: int) -> None:
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(num_region), nn.Tanh(),
                                             nn.Dropout(0.4))  # fmt: skip
        self.embedding_global = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.Tanh(),
                                              nn.Dropout(0.4))  # fmt: skip
        self.embedding_common = nn.Sequential(nn.Linear(embed_dim, 1))

    def forward(self, local: torch.Tensor, raw_global: torch.Tensor) -> torch.Tensor:
        l_emb = self.embedding_local(local)
        g_emb = self.embedding_global(raw_global).unsqueeze(1).repeat(1, l_emb.size(1), 1)
        weights = torch.softmax(self.embedding_common(l_emb.mul(g_emb)).squeeze(2), dim=1)
        return ref_l2norm((weights.unsqueeze(2) * local).sum(dim=1), dim=-1)


class RefTextSA(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh(), nn.Dropout(0.4))
        self.embedding_global = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh(), nn.Dropout(0.4))
        self.embedding_common = nn.Sequential(nn.Linear(embed_dim, 1))

    forward = RefVisualSA.forward


class RefGraphReasoning(nn.Module):
    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.graph_query_w = nn.Linear(sim_dim, sim_dim)
        self.graph_key_w = nn.Linear(sim_dim, sim_dim)
        self.sim_graph_w = nn.Linear(sim_dim, sim_dim)

    def forward(self, sim_emb: torch.Tensor) -> torch.Tensor:
        edge = torch.softmax(torch.bmm(self.graph_query_w(sim_emb), self.graph_key_w(sim_emb).permute(0, 2, 1)), -1)
        return torch.relu(self.sim_graph_w(torch.bmm(edge, sim_emb)))


class RefAttentionFiltration(nn.Module):
    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.attn_sim_w = nn.Linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, sim_emb: torch.Tensor) -> torch.Tensor:
        sim_attn = ref_l1norm(torch.sigmoid(self.bn(self.attn_sim_w(sim_emb).permute(0, 2, 1))), dim=-1)
        return ref_l2norm(torch.matmul(sim_attn, sim_emb).squeeze(1), dim=-1)


def ref_scan_attention(query: torch.Tensor, context: torch.Tensor, smooth: float) -> torch.Tensor:
    attn = torch.bmm(context, torch.transpose(query, 1, 2))
    attn = ref_l2norm(nn.LeakyReLU(0.1)(attn), 2)
    attn = F.softmax(torch.transpose(attn, 1, 2).contiguous() * smooth, dim=2)
    weighted = torch.bmm(torch.transpose(context, 1, 2), torch.transpose(attn, 1, 2).contiguous())
    return ref_l2norm(torch.transpose(weighted, 1, 2), dim=-1)


class RefEncoderSimilarity(nn.Module):
    def __init__(self, embed_size: int, sim_dim: int, module_name: str, sgr_step: int) -> None:
        super().__init__()
        self.module_name = module_name
        self.v_global_w = RefVisualSA(embed_size, 36)  # hard-coded 36 regions, as in the reference
        self.t_global_w = RefTextSA(embed_size)
        self.sim_tranloc_w = nn.Linear(embed_size, sim_dim)
        self.sim_tranglo_w = nn.Linear(embed_size, sim_dim)
        self.sim_eval_w = nn.Linear(sim_dim, 1)
        if module_name == "SGR":
            self.SGR_module = nn.ModuleList([RefGraphReasoning(sim_dim) for _ in range(sgr_step)])
        else:
            self.SAF_module = RefAttentionFiltration(sim_dim)

    def forward(self, img_emb: torch.Tensor, cap_emb: torch.Tensor, cap_lens: list[int]) -> torch.Tensor:
        sim_all = []
        n_image = img_emb.size(0)
        img_glo = self.v_global_w(img_emb, torch.mean(img_emb, 1))
        for i in range(cap_emb.size(0)):
            cap_i = cap_emb[i, : cap_lens[i], :].unsqueeze(0)
            cap_i_expand = cap_i.repeat(n_image, 1, 1)
            cap_glo_i = self.t_global_w(cap_i, torch.mean(cap_i, 1))
            context_img = ref_scan_attention(cap_i_expand, img_emb, smooth=9.0)
            sim_loc = ref_l2norm(self.sim_tranloc_w(torch.pow(torch.sub(context_img, cap_i_expand), 2)), dim=-1)
            sim_glo = ref_l2norm(self.sim_tranglo_w(torch.pow(torch.sub(img_glo, cap_glo_i), 2)), dim=-1)
            sim_emb = torch.cat([sim_glo.unsqueeze(1), sim_loc], 1)
            if self.module_name == "SGR":
                for module in self.SGR_module:
                    sim_emb = module(sim_emb)
                sim_vec = sim_emb[:, 0, :]
            else:
                sim_vec = self.SAF_module(sim_emb)
            sim_all.append(torch.sigmoid(self.sim_eval_w(sim_vec)))
        return torch.cat(sim_all, 1)


class RefSGRAF:
    """The reference ``SGRAF`` object: three modules, a list of three state dicts (``arch``: the ``opt`` fields)."""

    def __init__(self, arch: dict[str, Any], vocab_size: int, module_name: str, seed: int) -> None:
        torch.manual_seed(seed)
        self.img_enc = RefEncoderImage(arch["img_dim"], arch["embed_size"])
        self.txt_enc = RefEncoderText(vocab_size, arch["word_dim"], arch["embed_size"], arch["num_layers"])
        self.sim_enc = RefEncoderSimilarity(arch["embed_size"], arch["sim_dim"], module_name, arch["sgr_step"])
        for m in self.sim_enc.modules():  # trained-looking weights and batch-norm statistics: scores spread out
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 2.0 / m.in_features**0.5)
                nn.init.normal_(m.bias, 0.0, 0.1)
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                nn.init.normal_(m.weight, 1.0, 0.2)
                nn.init.normal_(m.bias, 0.0, 0.2)
        for m in (self.img_enc, self.txt_enc, self.sim_enc):
            m.eval()


def ref_encode_data(model: Any, images: np.ndarray, captions: list[list[int]], batch_size: int = 5,
                    device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, list[int]]:  # fmt: skip
    """evaluation.py's encode_data over data.py's loader: batches sorted by caption length, put back by index; the
    image rows repeat per caption (im_div 5 of the repeated layout: one row per caption)."""
    n = len(captions)
    max_n_word = max(len(c) for c in captions)
    img_embs = cap_embs = None
    cap_lens = [0] * n
    for s in range(0, n, batch_size):
        batch = sorted(range(s, min(s + batch_size, n)), key=lambda i: len(captions[i]), reverse=True)
        lengths = [len(captions[i]) for i in batch]
        targets = torch.zeros(len(batch), max(lengths)).long()
        for j, i in enumerate(batch):
            targets[j, : lengths[j]] = torch.tensor(captions[i])
        with torch.no_grad():
            img_emb = model.img_enc(torch.from_numpy(images[[i // 5 for i in batch]]).to(device)).cpu()
            cap_emb = model.txt_enc(targets.to(device), lengths)
            cap_emb = (cap_emb[0] if isinstance(cap_emb, tuple) else cap_emb).cpu()  # SCAN's also gives lengths
        if img_embs is None:
            img_embs = np.zeros((n, img_emb.size(1), img_emb.size(2)))
            cap_embs = np.zeros((n, max_n_word, cap_emb.size(2)))
        img_embs[batch] = img_emb.numpy().copy()
        cap_embs[batch, : max(lengths), :] = cap_emb.numpy().copy()
        for j, i in enumerate(batch):
            cap_lens[i] = lengths[j]
    assert img_embs is not None and cap_embs is not None
    return img_embs, cap_embs, cap_lens


def ref_shard_attn_scores(sim_enc: RefEncoderSimilarity, img_embs: np.ndarray, cap_embs: np.ndarray,
                          cap_lens: list[int], shard_size: int = 100, device: torch.device | str = "cpu"
                          ) -> np.ndarray:  # fmt: skip
    sims = np.zeros((len(img_embs), len(cap_embs)))
    for i in range((len(img_embs) - 1) // shard_size + 1):
        im_start, im_end = shard_size * i, min(shard_size * (i + 1), len(img_embs))
        for j in range((len(cap_embs) - 1) // shard_size + 1):
            ca_start, ca_end = shard_size * j, min(shard_size * (j + 1), len(cap_embs))
            with torch.no_grad():
                im = torch.from_numpy(img_embs[im_start:im_end]).float().to(device)
                ca = torch.from_numpy(cap_embs[ca_start:ca_end]).float().to(device)
                sims[im_start:im_end, ca_start:ca_end] = sim_enc(im, ca, cap_lens[ca_start:ca_end]).cpu().numpy()
    return sims


def ref_recalls(sims: np.ndarray) -> tuple[list[float], list[float]]:
    """evaluation.py's i2t and t2i (R@1, R@5, R@10)."""
    npts = sims.shape[0]
    ranks = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index])[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    ranks_t = np.zeros(5 * npts)
    for index in range(npts):
        for i in range(5):
            inds = np.argsort(sims.T[5 * index + i])[::-1]
            ranks_t[5 * index + i] = np.where(inds == index)[0][0]
    return ([100.0 * np.mean(ranks < k) for k in (1, 5, 10)], [100.0 * np.mean(ranks_t < k) for k in (1, 5, 10)])




def save_reference(ref: RefSGRAF, path: Any, opt: dict[str, Any]) -> None:
    """Save as the reference's ``train.py`` does: three state dicts and ``opt`` as an ``argparse.Namespace``."""
    state = [ref.img_enc.state_dict(), ref.txt_enc.state_dict(), ref.sim_enc.state_dict()]
    torch.save({"model": state, "opt": argparse.Namespace(**opt), "epoch": 3, "best_rsum": 1.0, "Eiters": 10}, path)


def ref_contrastive_loss(scores: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    """model.py's ``ContrastiveLoss`` (VSE++ hinge, hardest negative) of a batch's ``[N, N]`` score matrix."""
    diagonal = scores.diag().view(scores.size(0), 1)
    cost_s = (margin + scores - diagonal.expand_as(scores)).clamp(min=0)
    cost_im = (margin + scores - diagonal.t().expand_as(scores)).clamp(min=0)
    mask = torch.eye(scores.size(0)) > 0.5
    cost_s, cost_im = cost_s.masked_fill_(mask, 0), cost_im.masked_fill_(mask, 0)
    if max_violation:
        cost_s, cost_im = cost_s.max(1)[0], cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()
