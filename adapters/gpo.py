"""GPO, the Generalized Pooling Operator of VSE∞ (Chen et al., CVPR 2021).

Each feature dimension is sorted over the set (descending) and pooled with weights that a small BiGRU generates from
positional encodings of the sorted positions, so the pooling adapts between mean-, max- and k-max pooling per set
size. Follows ``lib/modules/aggr/gpo.py`` of the official VSE∞ code, so its state-dict keys (``gru``, ``linear``) load
the authors' checkpoints unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["GPO", "positional_encoding_1d"]


def positional_encoding_1d(d_model: int, length: int) -> torch.Tensor:
    """Sinusoidal encodings ``[length, d_model]`` (Vaswani et al.)."""
    pe = torch.zeros(length, d_model)
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class GPO(nn.Module):
    """Generalized pooling over variable-size sets.

    Args:
        d_pe: Size of the positional encodings fed to the GRU.
        d_hidden: GRU hidden size.
    """

    def __init__(self, d_pe: int = 32, d_hidden: int = 32) -> None:
        super().__init__()
        self.d_pe, self.d_hidden = d_pe, d_hidden
        self.gru = nn.GRU(d_pe, d_hidden, 1, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(d_hidden, 1, bias=False)
        self._pe: dict[int, torch.Tensor] = {}

    def _pe_for(self, length: int) -> torch.Tensor:
        if length not in self._pe:
            self._pe[length] = positional_encoding_1d(self.d_pe, length)
        return self._pe[length]

    def compute_pool_weights(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooling weights ``[B, K, 1]`` and the validity mask ``[B, K, 1]`` for sets of the given sizes."""
        max_len = int(lengths.max())
        bsz, device = lengths.size(0), lengths.device
        mask = (torch.arange(max_len, device=device).expand(bsz, max_len) < lengths.long().unsqueeze(1)).unsqueeze(-1)
        # The weights depend on the set size alone, so the GRU runs once per distinct size (one for image grids)
        # instead of once per set; the result is the same, row by row.
        sizes, inverse = torch.unique(lengths.long(), return_inverse=True)
        n = sizes.numel()
        pes = self._pe_for(max_len).to(device).unsqueeze(0).expand(n, -1, -1)
        umask = (torch.arange(max_len, device=device).expand(n, max_len) < sizes.unsqueeze(1)).unsqueeze(-1)
        pes = pes.masked_fill(~umask, 0)
        packed = pack_padded_sequence(pes, sizes.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out_emb, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
        half = out_emb.size(2) // 2
        out_emb = (out_emb[:, :, :half] + out_emb[:, :, half:]) / 2  # average the two directions
        scores = self.linear(out_emb).masked_fill(~umask, -10000)
        weights = torch.softmax(scores / 0.1, dim=1)
        return weights[inverse], mask

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pool ``features [B, K, D]`` (valid up to ``lengths [B]``) to ``[B, D]``."""
        weights, mask = self.compute_pool_weights(lengths)
        features = features[:, : int(lengths.max())]
        # Sorting along the last, contiguous axis is 2-3x faster on CPU than along dim 1; the values are the same.
        masked = features.masked_fill(~mask, -10000).transpose(1, 2).contiguous()
        sorted_features = masked.sort(dim=-1, descending=True)[0].transpose(1, 2)
        sorted_features = sorted_features.masked_fill(~mask, 0)
        return (sorted_features * weights.to(sorted_features.dtype)).sum(1)
