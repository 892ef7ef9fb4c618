"""What the region-feature families (``sgraf``, ``scan``) share as adapters: precomputed regions in, word ids in,
local states out, and every pair scored by the family's cross-attention (an ensemble's scores averaged).

Stage 1 is the input itself: a precomp split's region rows, which :meth:`RegionAdapter.split_features` reads
memory-mapped (no pixel model runs, nothing is cached), and the captions' word ids. Stage 2 is the whole trained
model: each model of the ensemble maps regions and words to L2-normalised local states, concatenated along the last
dimension, and :meth:`RegionAdapter.score_matrix` splits them again to score a block of pairs for
:mod:`bench.evaluation.pairs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from bench.adapters.protocol import AdapterBase, Exported, Features
from bench.adapters.region_text import EncoderText, Vocabulary
from torch import nn

from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, DataError

__all__ = ["RegionAdapter", "RegionNet", "check_vocab", "load_ensemble", "load_parts", "resolve_architecture"]


class RegionNet(Protocol):
    """One trained model of a region family."""

    img_enc: nn.Module  # regions [B, R, img_dim] -> [B, R, embed_size]
    txt_enc: EncoderText
    embed_size: int
    img_dim: int
    num_region: int | None  # the regions per image the model requires (None: any)

    def score(self, images: torch.Tensor, texts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor: ...
    def pair_floats(self, regions: int, words: int) -> int: ...


def resolve_architecture(path: str, opt: dict[str, Any], defaults: dict[str, Any], explicit: dict[str, Any]
                         ) -> dict[str, Any]:  # fmt: skip
    """The build of a checkpoint: each field of ``defaults`` from its ``opt`` (the reference's default where the
    ``opt`` lacks it); an option set as well (not None in ``explicit``) must agree, or the error names the field."""
    arch = {}
    for key, default in defaults.items():
        saved = opt.get(key, default)
        if explicit.get(key) is not None and explicit[key] != saved:
            raise ConfigError(f"{path}: opt.{key} = {saved!r}, but the model options set {key} = "
                              f"{explicit[key]!r}; leave it out to use the checkpoint's")  # fmt: skip
        arch[key] = saved
    return arch


def load_ensemble(checkpoint: str | list[str], load: Callable[[str], Any], two: str) -> tuple[list[Any], str]:
    """The model of each checkpoint (one, or two: an ensemble, ``two`` says of what), which must agree in
    ``embed_size`` and ``img_dim``; and the paths as the adapter's ``source``."""
    paths = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    if not 1 <= len(paths) <= 2:
        raise ConfigError(f"checkpoint: one model_best.pth.tar, or two for {two}; got {len(paths)}")
    nets = [load(p) for p in paths]
    if len({(n.embed_size, n.img_dim) for n in nets}) > 1:
        raise ConfigError(f"checkpoint: {paths} differ in embed_size or img_dim")
    return nets, ", ".join(paths)


def check_vocab(path: str, vocab: Vocabulary, state: dict[str, torch.Tensor], opt: dict[str, Any]) -> None:
    """The vocabulary must have the words the checkpoint's word embedding (``embed.weight`` of ``state``) has."""
    embed = state.get("embed.weight")
    if embed is None:
        raise ConfigError(f"{path}: the txt_enc state dict has no embed.weight")
    if embed.shape[0] != len(vocab):
        raise ConfigError(f"{vocab.path}: {len(vocab)} words, but {path} was trained with {embed.shape[0]} "
                          f"(opt.vocab_size {opt.get('vocab_size')}); pass the model's own vocabulary")  # fmt: skip


def load_parts(path: str, parts: dict[str, nn.Module], state: list[dict[str, torch.Tensor]]) -> None:
    """Load each state dict into its part (``{"img_enc": module, ...}``, in the checkpoint's order), every key
    matched, or the error names the part and the keys."""
    for (name, part), sd in zip(parts.items(), state, strict=True):
        missing, unexpected = part.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{path}: {name} does not match opt (missing {sorted(missing)[:4]}, unexpected "
                              f"{sorted(unexpected)[:4]})")  # fmt: skip


class _NoPixels:
    """The image transform of a region-feature model: there is none."""

    def __init__(self, family: str) -> None:
        self.family = family

    def __call__(self, image: Any) -> torch.Tensor:
        raise DataError(f'{self.family} reads region features (a precomp dataset, format = "precomp"), not images')


class RegionAdapter(AdapterBase):
    """A region-feature model (or an ensemble whose score is its models' mean) behind the adapter protocol."""

    default_loss = "triplet"
    pair_score_kind = ""

    def __init__(self, nets: Sequence[nn.Module], vocab: Vocabulary, source: str) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"image": nn.Identity(), "text": nn.Identity()})
        self.head = nn.ModuleDict({"nets": nn.ModuleList(nets)})
        self.vocab, self.source = vocab, source
        self.embed_dim = int(nets[0].embed_size)  # type: ignore[arg-type]

    @property
    def nets(self) -> list[Any]:
        """The ensemble's models (one for a single checkpoint)."""
        return list(self.head["nets"])  # type: ignore[arg-type]

    # Stage 1: the inputs themselves (region rows, word ids).

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return _NoPixels(self.name or type(self).__name__)

    def tokenize(self, texts: Sequence[str]) -> Features:
        return self.vocab.tokenize(texts)

    def image_features(self, images: torch.Tensor) -> Features:
        return {"regions": images}

    def text_features(self, tokens: Features) -> Features:
        return dict(tokens)

    def backbone_key(self) -> str:
        return f"{self.name}:regions"

    def split_features(self, split: RetrievalSplit) -> tuple[Features, Features]:
        """A precomp split's region rows (memory-mapped, read batch by batch) and its captions' word ids."""
        from bench.data.precomp import region_rows

        with warnings.catch_warnings():  # a read-only memory map: stage 2 only reads it
            warnings.simplefilter("ignore", UserWarning)
            regions = torch.from_numpy(region_rows(split.image_paths))
        net = self.nets[0]
        want = (net.num_region or regions.shape[1], net.img_dim)
        if tuple(regions.shape[1:]) != want:
            raise DataError(f"{split.image_paths[0].container}: regions of shape {tuple(regions.shape[1:])}, but "
                            f"the model reads {want[0]} x {want[1]} (regions x img_dim)")  # fmt: skip
        return {"regions": regions}, self.tokenize(split.captions)

    # Stage 2: the trained models.

    def embed_image(self, feats: Features) -> torch.Tensor:
        regions = feats["regions"].float()
        return torch.cat([n.img_enc(regions) for n in self.nets], dim=-1)

    def embed_text(self, feats: Features) -> torch.Tensor:
        ids, lengths = feats["ids"], feats["lengths"]
        return torch.cat([n.txt_enc(ids, lengths, total_length=ids.shape[1]) for n in self.nets], dim=-1)

    def score_matrix(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Scores ``[Bi, Bc]`` of local states from :meth:`embed_image` and :meth:`embed_text` (words first, zero
        rows after): the mean over the ensemble's models."""
        lengths = (texts != 0).any(dim=-1).sum(dim=1)
        d = self.embed_dim
        total = None
        for k, net in enumerate(self.nets):
            s = net.score(images[..., k * d : (k + 1) * d], texts[..., k * d : (k + 1) * d], lengths)
            total = s if total is None else total + s
        assert total is not None
        return total / len(self.nets)

    def pair_floats(self, regions: int, words: int) -> int:
        """Working floats of one pair: the largest of the ensemble's (its models run one after the other)."""
        return max(int(n.pair_floats(regions, words)) for n in self.nets)

    def export_native(self, out: Path) -> Exported:
        """The authors' layout: ``model_best.pth.tar`` as the reference ``train.py`` saves it (its state dicts, and
        ``opt`` as an ``argparse.Namespace``), which this family and the reference's ``evaluation.py`` load."""
        import argparse

        if len(self.nets) != 1:
            raise ConfigError(f"{self.name} export: an ensemble of {len(self.nets)} models; export each model")
        net = self.nets[0]
        state = [{k: v.detach().cpu().contiguous() for k, v in getattr(net, p).state_dict().items()} for p in net.parts]
        path = Path(out) / "model_best.pth.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": state, "opt": argparse.Namespace(**net.opt), "epoch": None}, path)
        repo = {"scan": "kuanghuei/SCAN", "sgraf": "Paranioar/SGRAF"}.get(self.name, "the reference")
        load = f"{repo}'s evaluation.py, or itr-bench's {self.name} adapter with checkpoint = '{path}'"
        return Exported(load, {"adapter": self.name, "checkpoint": str(path), "vocab": str(self.vocab.path)})
