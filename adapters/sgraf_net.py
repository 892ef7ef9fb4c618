"""SGR and SAF (Diao et al., AAAI 2021; Paranioar/SGRAF), with the reference's module names, scoring many images
against many captions per call.

The reference ``EncoderSimilarity.forward`` loops over captions in Python, each against a shard of images. Here one
call scores a block of ``Bi`` images x ``Bc`` captions: region-word attention is one matrix product over the block,
captions are padded to the block's longest, and padded words are masked wherever the reference's per-caption slice
would not have seen them (the text self-attention, the graph's edges, the filtration weights). The arithmetic is the
reference's, so scores agree with its loop to float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from bench.adapters.region_text import EncoderText, l1norm, l2norm, uniform_init
from torch import nn

__all__ = ["EncoderImage", "EncoderSimilarity", "SGRAFNet", "pair_floats"]


def _l2norm_(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """:func:`~bench.adapters.region_text.l2norm` in place (scoring only: no autograd)."""
    return x.div_(torch.linalg.vector_norm(x, dim=dim, keepdim=True).add_(eps))


class EncoderImage(nn.Module):
    """Region features to L2-normalised region states (one Linear layer, ``fc``)."""

    def __init__(self, img_dim: int, embed_size: int, no_imgnorm: bool = False) -> None:
        super().__init__()
        self.no_imgnorm = no_imgnorm
        self.fc = nn.Linear(img_dim, embed_size)
        uniform_init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.fc(images)
        return out if self.no_imgnorm else l2norm(out, dim=-1)


class VisualSA(nn.Module):
    """The image's global state: regions weighted by self-attention against their mean."""

    def __init__(self, embed_dim: int, dropout_rate: float, num_region: int) -> None:
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(num_region), nn.Tanh(),
                                             nn.Dropout(dropout_rate))  # fmt: skip
        self.embedding_global = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.Tanh(),
                                              nn.Dropout(dropout_rate))  # fmt: skip
        self.embedding_common = nn.Sequential(nn.Linear(embed_dim, 1))
        uniform_init(self)

    def forward(self, local: torch.Tensor, raw_global: torch.Tensor) -> torch.Tensor:
        common = self.embedding_local(local) * self.embedding_global(raw_global)[:, None, :]
        weights = torch.softmax(self.embedding_common(common).squeeze(2), dim=1)
        return l2norm((weights[:, :, None] * local).sum(dim=1), dim=-1)


class TextSA(nn.Module):
    """The caption's global state: its words weighted by self-attention against their mean (padded words masked)."""

    def __init__(self, embed_dim: int, dropout_rate: float) -> None:
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh(), nn.Dropout(dropout_rate))
        self.embedding_global = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh(), nn.Dropout(dropout_rate))
        self.embedding_common = nn.Sequential(nn.Linear(embed_dim, 1))
        uniform_init(self)

    def forward(self, local: torch.Tensor, raw_global: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        common = self.embedding_local(local) * self.embedding_global(raw_global)[:, None, :]
        logits = self.embedding_common(common).squeeze(2).masked_fill(~words, -torch.inf)
        weights = torch.softmax(logits, dim=1)
        return l2norm((weights[:, :, None] * local).sum(dim=1), dim=-1)


class GraphReasoning(nn.Module):
    """One step of similarity graph reasoning over the alignment nodes (edges to padded nodes masked)."""

    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.graph_query_w = nn.Linear(sim_dim, sim_dim)
        self.graph_key_w = nn.Linear(sim_dim, sim_dim)
        self.sim_graph_w = nn.Linear(sim_dim, sim_dim)
        self.relu = nn.ReLU()
        uniform_init(self)

    def forward(self, sim_emb: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        edges = torch.bmm(self.graph_query_w(sim_emb), self.graph_key_w(sim_emb).transpose(1, 2))
        edges = torch.softmax(edges.masked_fill(~nodes[:, None, :], -torch.inf), dim=-1)
        return self.relu(self.sim_graph_w(torch.bmm(edges, sim_emb)))


class AttentionFiltration(nn.Module):
    """Similarity attention filtration: gate weights over the alignment nodes, L1-normalised over the real ones."""

    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.attn_sim_w = nn.Linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)
        uniform_init(self)

    def forward(self, sim_emb: torch.Tensor, nodes: torch.Tensor, n_cap: int = 1) -> torch.Tensor:
        """``sim_emb`` ``[Bi * Bc, L + 1, s]``, pairs image-major (``n_cap`` captions per image)."""
        logits = self.attn_sim_w(sim_emb).permute(0, 2, 1)  # [pairs, 1, nodes]
        normed = self._caption_norm(logits, nodes, n_cap) if self.training else self.bn(logits)
        gate = torch.sigmoid(normed)
        attn = l1norm(gate * nodes[:, None, :].to(gate.dtype), dim=-1)
        return l2norm(torch.matmul(attn, sim_emb).squeeze(1), dim=-1)

    def _caption_norm(self, logits: torch.Tensor, nodes: torch.Tensor, n_cap: int) -> torch.Tensor:
        """The batch norm in training mode as the reference applies it: once per caption, over that caption's images
        and real nodes, its running statistics moved once per caption, in caption order."""
        bn = self.bn
        x = logits.view(-1, n_cap, logits.shape[-1])  # [Bi, Bc, nodes]
        real = nodes.view(-1, n_cap, nodes.shape[-1]).to(x.dtype)
        count = real.sum(dim=(0, 2))  # per caption
        mean = (x * real).sum(dim=(0, 2)) / count
        var = ((x - mean[None, :, None]).pow(2) * real).sum(dim=(0, 2)) / count
        out = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps) * bn.weight + bn.bias
        if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
            with torch.no_grad():
                m = 0.1 if bn.momentum is None else bn.momentum
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                for c in range(n_cap):
                    bn.running_mean.mul_(1 - m).add_(m * mean[c].detach())
                    bn.running_var.mul_(1 - m).add_(m * unbiased[c])
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.add_(n_cap)
        return out.view_as(logits)


def pair_floats(regions: int, words: int, embed_size: int, sim_dim: int, sgr_step: int) -> int:
    """Working floats of one (image, caption) pair in :meth:`EncoderSimilarity.forward`: attention maps, the attended
    context and its difference to the words, and the alignment graph."""
    nodes = words + 1
    return words * (3 * regions + 4 * embed_size + 4 * sim_dim) + nodes * (4 * sim_dim + 2 * nodes) * max(sgr_step, 1)


class EncoderSimilarity(nn.Module):
    """Image-text similarity by SGR (``module_name = "SGR"``) or SAF (``"SAF"``)."""

    def __init__(self, embed_size: int, sim_dim: int, module_name: str = "SGR", sgr_step: int = 3,
                 num_region: int = 36, smooth: float = 9.0) -> None:  # fmt: skip
        super().__init__()
        self.module_name, self.smooth = module_name, smooth
        self.v_global_w = VisualSA(embed_size, 0.4, num_region)
        self.t_global_w = TextSA(embed_size, 0.4)
        self.sim_tranloc_w = nn.Linear(embed_size, sim_dim)
        self.sim_tranglo_w = nn.Linear(embed_size, sim_dim)
        self.sim_eval_w = nn.Linear(sim_dim, 1)
        self.sigmoid = nn.Sigmoid()
        if module_name == "SGR":
            self.SGR_module = nn.ModuleList([GraphReasoning(sim_dim) for _ in range(sgr_step)])
        elif module_name == "SAF":
            self.SAF_module = AttentionFiltration(sim_dim)
        else:
            raise ValueError(f"module_name must be SGR or SAF, got {module_name!r}")
        uniform_init(self)

    def forward(self, img_emb: torch.Tensor, cap_emb: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        """Scores ``[Bi, Bc]`` of every image of ``img_emb`` ``[Bi, R, d]`` against every caption of ``cap_emb``
        ``[Bc, L, d]`` (words first, ``cap_lens`` of them, zero rows after)."""
        n_img, n_reg, dim = img_emb.shape
        n_cap, n_word, _ = cap_emb.shape
        words = torch.arange(n_word, device=cap_emb.device)[None, :] < cap_lens.to(cap_emb.device)[:, None]
        img_glo = self.v_global_w(img_emb, img_emb.mean(dim=1))
        cap_ave = cap_emb.sum(dim=1) / cap_lens.to(cap_emb)[:, None]
        cap_glo = self.t_global_w(cap_emb, cap_ave, words)

        # Each word attends over each image's regions (the reference's SCAN_attention), for the whole block at once.
        # Scoring runs the steps on the [images, captions, words, dim] tensors in place (they are memory-bound, the
        # block's largest); training keeps every intermediate for autograd.
        inplace = not torch.is_grad_enabled()
        attn = cap_emb.reshape(n_cap * n_word, dim) @ img_emb.reshape(n_img * n_reg, dim).T
        attn = F.leaky_relu(attn.view(n_cap, n_word, n_img, n_reg), 0.1)
        attn = _l2norm_(attn, 1) if inplace else l2norm(attn, dim=1)  # over each caption's words (l2norm(attn, 2))
        attn = torch.softmax(attn.mul_(self.smooth) if inplace else attn * self.smooth, dim=3)  # over regions
        context = torch.bmm(attn.permute(2, 0, 1, 3).reshape(n_img, n_cap * n_word, n_reg), img_emb)
        del attn
        context = context.view(n_img, n_cap, n_word, dim)
        context = _l2norm_(context, -1) if inplace else l2norm(context, dim=-1)
        diff = context.sub_(cap_emb[None]).square_() if inplace else (context - cap_emb[None]).pow(2)
        del context
        sim_loc = l2norm(self.sim_tranloc_w(diff), dim=-1)
        del diff
        sim_glo = l2norm(self.sim_tranglo_w((img_glo[:, None, :] - cap_glo[None, :, :]).pow(2)), dim=-1)
        sim_emb = torch.cat([sim_glo[:, :, None, :], sim_loc], dim=2).flatten(0, 1)
        nodes = torch.cat([torch.ones_like(words[:, :1]), words], dim=1).repeat(n_img, 1)
        if self.module_name == "SGR":
            for module in self.SGR_module:
                sim_emb = module(sim_emb, nodes)
            sim_vec = sim_emb[:, 0, :]
        else:
            sim_vec = self.SAF_module(sim_emb, nodes, n_cap)
        return self.sigmoid(self.sim_eval_w(sim_vec)).view(n_img, n_cap)


class SGRAFNet(nn.Module):
    """One trained SGR or SAF model: ``img_enc``, ``txt_enc`` and ``sim_enc``, the three state dicts the reference
    saves."""

    def __init__(self, *, vocab_size: int, img_dim: int, word_dim: int, embed_size: int, sim_dim: int,
                 num_layers: int, bi_gru: bool, no_imgnorm: bool, no_txtnorm: bool, module_name: str,
                 sgr_step: int, num_region: int) -> None:  # fmt: skip
        super().__init__()
        self.embed_size, self.sim_dim, self.sgr_step = embed_size, sim_dim, sgr_step
        self.img_dim, self.num_region = img_dim, num_region
        self.opt = {"img_dim": img_dim, "word_dim": word_dim, "embed_size": embed_size, "sim_dim": sim_dim,
                    "num_layers": num_layers, "bi_gru": bi_gru, "no_imgnorm": no_imgnorm, "no_txtnorm": no_txtnorm,
                    "module_name": module_name, "sgr_step": sgr_step, "vocab_size": vocab_size}  # fmt: skip
        self.parts = ("img_enc", "txt_enc", "sim_enc")  # the reference checkpoint's state dicts, in order
        self.img_enc = EncoderImage(img_dim, embed_size, no_imgnorm)
        self.txt_enc = EncoderText(vocab_size, word_dim, embed_size, num_layers, bi_gru, no_txtnorm)
        self.sim_enc = EncoderSimilarity(embed_size, sim_dim, module_name, sgr_step, num_region)

    def score(self, images: torch.Tensor, texts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores ``[Bi, Bc]`` of region states ``[Bi, R, d]`` against word states ``[Bc, L, d]``."""
        return self.sim_enc(images, texts, lengths)

    def pair_floats(self, regions: int, words: int) -> int:
        """Working floats of one pair (:func:`pair_floats`)."""
        steps = self.sgr_step if self.sim_enc.module_name == "SGR" else 1
        return pair_floats(regions, words, self.embed_size, self.sim_dim, steps)
