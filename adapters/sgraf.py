"""SGR, SAF and SGRAF over region features (``sgraf``), loading the authors' checkpoints (Paranioar/SGRAF).

Options: ``checkpoint`` (a ``model_best.pth.tar``, or two, an SGR and an SAF one: SGRAF, whose score is the mean of
the two models' scores as the authors evaluate it), ``vocab`` (the ``*_precomp_vocab.json`` the model was trained
with). Without a checkpoint the model is built at random from the architecture options (the reference's defaults),
for training.

The official ``train.py`` saves ``{"model": [img_enc, txt_enc, sim_enc state dicts], "opt": argparse.Namespace,
"epoch", "best_rsum", "Eiters"}``; it loads with ``weights_only=True`` and only ``Namespace`` allowed, a ``module.``
prefix is dropped, and ``opt`` sets the build (``img_dim``, ``word_dim``, ``embed_size``, ``sim_dim``,
``num_layers``, ``bi_gru``, ``no_imgnorm``, ``no_txtnorm``, ``module_name``, ``sgr_step``, ``vocab_size``); the
regions per image come from the saved ``VisualSA`` batch norm. An option given as well must agree with ``opt``.

How it plugs into the harness: images are rows of a precomp dataset's region array
(:class:`~bench.data.precomp.RegionRows`), which the adapter reads itself (:meth:`SGRAF.split_features`, memory-mapped),
so no pixel model runs and nothing is cached; stage 2 (the whole trained model) maps regions and word ids to local
states, and :meth:`SGRAF.score_matrix` scores blocks of image x caption pairs for :mod:`bench.evaluation.pairs`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from bench.adapters.protocol import AdapterBase, Features
from bench.adapters.region_text import Vocabulary
from bench.adapters.registry import register_adapter
from bench.adapters.sgraf_net import SGRAFNet, pair_floats
from bench.adapters.weights import read_reference_checkpoint
from torch import nn

from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, DataError

__all__ = ["ARCHITECTURE", "SGRAF"]

log = logging.getLogger(__name__)

# opt field -> the reference default (Paranioar/SGRAF opts.py); the build options of the same names.
ARCHITECTURE: dict[str, Any] = {
    "img_dim": 2048, "word_dim": 300, "embed_size": 1024, "sim_dim": 256, "num_layers": 1, "bi_gru": True,
    "no_imgnorm": False, "no_txtnorm": False, "module_name": "SGR", "sgr_step": 3,
}  # fmt: skip
_REGIONS_KEY = "v_global_w.embedding_local.1.running_mean"


def _net_from_checkpoint(path: str, vocab: Vocabulary, explicit: dict[str, Any], allow_pickle: bool) -> SGRAFNet:
    ckpt = read_reference_checkpoint(path, parts=("img_enc", "txt_enc", "sim_enc"), family="SGRAF",
                                     repo="Paranioar/SGRAF", allow_pickle=allow_pickle)  # fmt: skip
    state, opt = ckpt.parts, ckpt.opt
    arch = {}
    for field, default in ARCHITECTURE.items():
        saved = opt.get(field, default)
        if explicit.get(field) is not None and explicit[field] != saved:
            raise ConfigError(f"{path}: opt.{field} = {saved!r}, but the model options set {field} = "
                              f"{explicit[field]!r}; leave it out to use the checkpoint's")  # fmt: skip
        arch[field] = saved
    if arch["module_name"] not in ("SGR", "SAF"):
        raise ConfigError(f"{path}: opt.module_name = {arch['module_name']!r}; SGRAF checkpoints are SGR or SAF")
    embed = state[1].get("embed.weight")
    if embed is None or _REGIONS_KEY not in state[2]:
        raise ConfigError(f"{path}: the txt_enc / sim_enc state dicts lack embed.weight or {_REGIONS_KEY}")
    if embed.shape[0] != len(vocab):
        raise ConfigError(f"{vocab.path}: {len(vocab)} words, but {path} was trained with {embed.shape[0]} "
                          f"(opt.vocab_size {opt.get('vocab_size')}); pass the model's own vocabulary")  # fmt: skip
    net = SGRAFNet(vocab_size=len(vocab), num_region=int(state[2][_REGIONS_KEY].shape[0]), **arch)
    for part, sd in zip((net.img_enc, net.txt_enc, net.sim_enc), state, strict=True):
        missing, unexpected = part.load_state_dict(sd, strict=False)
        if missing or unexpected:
            name = ("img_enc", "txt_enc", "sim_enc")[[net.img_enc, net.txt_enc, net.sim_enc].index(part)]
            raise ConfigError(f"{path}: {name} does not match opt (missing {sorted(missing)[:4]}, unexpected "
                              f"{sorted(unexpected)[:4]})")  # fmt: skip
    return net


class _NoPixels:
    """The image transform of a region-feature model: there is none."""

    def __call__(self, image: Any) -> torch.Tensor:
        raise DataError("sgraf reads region features (a precomp dataset, format = \"precomp\"), not images")


@register_adapter("sgraf")
class SGRAF(AdapterBase):
    """SGR, SAF, or their SGRAF ensemble, over region features; scores every (image, caption) pair."""

    default_loss = "triplet"
    pair_score_kind = "sgraf similarity"

    def __init__(self, nets: list[SGRAFNet], vocab: Vocabulary, source: str) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"image": nn.Identity(), "text": nn.Identity()})
        self.head = nn.ModuleDict({"nets": nn.ModuleList(nets)})
        self.vocab, self.source = vocab, source
        self.embed_dim = nets[0].embed_size
        kinds = [n.sim_enc.module_name for n in nets]
        self.pair_score_kind = "SGRAF: mean of SGR and SAF" if len(nets) == 2 else kinds[0]

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
        sim_dim: int | None = None,
        num_layers: int | None = None,
        bi_gru: bool | None = None,
        no_imgnorm: bool | None = None,
        no_txtnorm: bool | None = None,
        module_name: str | None = None,
        sgr_step: int | None = None,
        regions: int = 36,
    ) -> SGRAF:
        """Build from the authors' checkpoint(s), or at random from the architecture options."""
        voc = Vocabulary.load(vocab)
        explicit = {"img_dim": img_dim, "word_dim": word_dim, "embed_size": embed_size, "sim_dim": sim_dim,
                    "num_layers": num_layers, "bi_gru": bi_gru, "no_imgnorm": no_imgnorm, "no_txtnorm": no_txtnorm,
                    "module_name": module_name, "sgr_step": sgr_step}  # fmt: skip
        if checkpoint is None:
            arch = {k: ARCHITECTURE[k] if v is None else v for k, v in explicit.items()}
            if arch["module_name"] not in ("SGR", "SAF"):
                raise ConfigError(f"module_name must be SGR or SAF, got {arch['module_name']!r}")
            return cls([SGRAFNet(vocab_size=len(voc), num_region=regions, **arch)], voc, "random")
        paths = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
        if not 1 <= len(paths) <= 2:
            raise ConfigError(f"checkpoint: one model_best.pth.tar, or two (SGR and SAF) for SGRAF; got {len(paths)}")
        nets = [_net_from_checkpoint(p, voc, explicit, allow_pickle) for p in paths]
        if len(nets) == 2 and sorted(n.sim_enc.module_name for n in nets) != ["SAF", "SGR"]:
            raise ConfigError(f"checkpoint: SGRAF averages an SGR and an SAF model; {paths} are "
                              f"{[n.sim_enc.module_name for n in nets]}")  # fmt: skip
        if len({(n.embed_size, n.img_enc.fc.in_features) for n in nets}) > 1:
            raise ConfigError(f"checkpoint: {paths} differ in embed_size or img_dim")
        return cls(nets, voc, ", ".join(paths))

    @property
    def nets(self) -> list[SGRAFNet]:
        return list(self.head["nets"])  # type: ignore[arg-type]

    # Stage 1: the inputs themselves (region rows, word ids).

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return _NoPixels()

    def tokenize(self, texts: Sequence[str]) -> Features:
        return self.vocab.tokenize(texts)

    def image_features(self, images: torch.Tensor) -> Features:
        return {"regions": images}

    def text_features(self, tokens: Features) -> Features:
        return dict(tokens)

    def backbone_key(self) -> str:
        return "sgraf:regions"

    def split_features(self, split: RetrievalSplit) -> tuple[Features, Features]:
        """A precomp split's region rows (memory-mapped, read batch by batch) and its captions' word ids."""
        from bench.data.precomp import region_rows

        with warnings.catch_warnings():  # a read-only memory map: stage 2 only reads it
            warnings.simplefilter("ignore", UserWarning)
            regions = torch.from_numpy(region_rows(split.image_paths))
        n_reg = self.nets[0].sim_enc.v_global_w.embedding_local[1].num_features
        dim = self.nets[0].img_enc.fc.in_features
        if tuple(regions.shape[1:]) != (n_reg, dim):
            raise DataError(f"{split.image_paths[0].container}: regions of shape {tuple(regions.shape[1:])}, but "
                            f"the model reads {n_reg} x {dim} (regions x img_dim)")  # fmt: skip
        return {"regions": regions}, self.tokenize(split.captions)

    # Stage 2: the trained model.

    def embed_image(self, feats: Features) -> torch.Tensor:
        regions = feats["regions"].float()
        return torch.cat([n.img_enc(regions) for n in self.nets], dim=-1)

    def embed_text(self, feats: Features) -> torch.Tensor:
        ids, lengths = feats["ids"], feats["lengths"]
        return torch.cat([n.txt_enc(ids, lengths, total_length=ids.shape[1]) for n in self.nets], dim=-1)

    def score_matrix(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Scores ``[Bi, Bc]`` of local states from :meth:`embed_image` and :meth:`embed_text` (the mean over the
        ensemble's models)."""
        lengths = (texts != 0).any(dim=-1).sum(dim=1)
        d = self.embed_dim
        total = None
        for k, net in enumerate(self.nets):
            s = net.sim_enc(images[..., k * d : (k + 1) * d], texts[..., k * d : (k + 1) * d], lengths)
            total = s if total is None else total + s
        assert total is not None
        return total / len(self.nets)

    def pair_floats(self, regions: int, words: int) -> int:
        n = self.nets[0]
        return pair_floats(regions, words, n.embed_size, n.sim_dim, n.sgr_step if n.sim_enc.module_name == "SGR" else 1)

