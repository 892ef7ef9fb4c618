"""What the region-feature models (SCAN, SGR, SAF) share on the text side: the reference repositories' vocabulary and
tokenisation, their Bi-GRU word encoder, and their normalisations.

Tokenisation is the reference ``data.py``'s: the caption lowercased (ASCII letters only: the reference lowercases the
line's bytes), NLTK's word tokenizer, ``<start>`` before and ``<end>`` after, unknown words ``<unk>``. The reference
calls ``nltk.word_tokenize``, which first splits sentences with the punkt model (a download); here the same word
tokenizer runs on the whole caption (``preserve_line=True``), which differs only where a caption holds a
sentence-ending period before its last word.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.data.precomp import read_vocab
from bench.errors import ConfigError, DataError

__all__ = ["EncoderText", "Vocabulary", "l1norm", "l2norm", "uniform_init"]

_SPECIAL = ("<start>", "<end>", "<unk>")


def l1norm(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """``x`` over its absolute sum along ``dim`` plus ``eps`` (the reference's ``l1norm``)."""
    return x / (x.abs().sum(dim=dim, keepdim=True) + eps)


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``x`` over its L2 norm along ``dim`` plus ``eps`` (the reference's ``l2norm``: eps added to the norm, so a zero
    row stays zero)."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


def uniform_init(module: nn.Module) -> None:
    """The reference's initialisation of a module's direct children: Linear weights uniform in ``±sqrt(6 / (in +
    out))`` with zero bias, BatchNorm at weight 1 and bias 0 (children that are Sequentials are entered once)."""
    for child in module.children():
        for m in child if isinstance(child, nn.Sequential) else [child]:
            if isinstance(m, nn.Linear):
                r = math.sqrt(6.0) / math.sqrt(m.in_features + m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class Vocabulary:
    """A reference vocabulary (SGRAF's ``*_precomp_vocab.json``) and the reference tokenisation."""

    def __init__(self, word2idx: dict[str, int], path: Path) -> None:
        missing = [w for w in _SPECIAL if w not in word2idx]
        if missing:
            raise DataError(f"{path}: field 'word2idx' has no {', '.join(missing)}")
        self.word2idx, self.path = word2idx, path
        self.start, self.end, self.unk = (word2idx[w] for w in _SPECIAL)
        try:
            from nltk.tokenize import NLTKWordTokenizer
        except ImportError:
            raise ConfigError("region-feature models tokenise with NLTK: pip install nltk") from None
        self._words = NLTKWordTokenizer()

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary file (a :class:`~bench.errors.DataError` names a missing or malformed one)."""
        path = Path(path).expanduser()
        return cls(read_vocab(path), path)

    def __len__(self) -> int:
        return len(self.word2idx)

    def words(self, caption: str) -> list[str]:
        """The tokens of ``caption``, as the reference tokenises it."""
        return self._words.tokenize(caption.strip().encode("utf-8").lower().decode("utf-8"))

    def encode(self, caption: str) -> list[int]:
        """Word ids of ``caption``: ``<start>``, its tokens, ``<end>``."""
        return [self.start, *(self.word2idx.get(w, self.unk) for w in self.words(caption)), self.end]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"ids": [B, T] int64 (0-padded), "lengths": [B]}`` of ``texts``."""
        encoded = [self.encode(t) for t in texts]
        width = max((len(e) for e in encoded), default=1)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = e
        return {"ids": torch.from_numpy(ids), "lengths": torch.tensor([len(e) for e in encoded], dtype=torch.int64)}


class EncoderText(nn.Module):
    """The reference word encoder: word embeddings, dropout (SGRAF's 0.4; SCAN has none), a (Bi-)GRU whose two
    directions are averaged, each word state L2-normalised. Module names are the reference's: ``embed`` and the GRU's
    ``rnn_name`` (SGRAF ``cap_rnn``, SCAN ``rnn``)."""

    def __init__(self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int, use_bi_gru: bool = True,
                 no_txtnorm: bool = False, *, rnn_name: str = "cap_rnn", dropout: float = 0.4) -> None:  # fmt: skip
        super().__init__()
        self.embed_size, self.no_txtnorm, self.use_bi_gru, self.rnn_name = embed_size, no_txtnorm, use_bi_gru, rnn_name
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.dropout = nn.Dropout(dropout)
        self.add_module(rnn_name, nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=use_bi_gru))
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, total_length: int | None = None) -> torch.Tensor:
        """Word states ``[B, T, embed_size]``: each caption's words first, zero rows after (``T`` = ``total_length``,
        else the longest caption)."""
        x = self.dropout(self.embed(ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = getattr(self, self.rnn_name)(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=total_length)
        if self.use_bi_gru:
            half = out.shape[2] // 2
            out = (out[:, :, :half] + out[:, :, half:]) / 2
        return out if self.no_txtnorm else l2norm(out, dim=-1)
