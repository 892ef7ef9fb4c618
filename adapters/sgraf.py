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

How it plugs into the harness: :class:`~bench.adapters.region_base.RegionAdapter`.
"""

from __future__ import annotations

from typing import Any

from bench.adapters.region_base import RegionAdapter, check_vocab, load_ensemble, load_parts, resolve_architecture
from bench.adapters.region_text import Vocabulary
from bench.adapters.registry import register_adapter
from bench.adapters.sgraf_net import SGRAFNet
from bench.adapters.weights import read_reference_checkpoint

from bench.errors import ConfigError

__all__ = ["ARCHITECTURE", "SGRAF"]

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
    arch = resolve_architecture(path, opt, ARCHITECTURE, explicit)
    if arch["module_name"] not in ("SGR", "SAF"):
        raise ConfigError(f"{path}: opt.module_name = {arch['module_name']!r}; SGRAF checkpoints are SGR or SAF")
    check_vocab(path, vocab, state[1], opt)
    if _REGIONS_KEY not in state[2]:
        raise ConfigError(f"{path}: the sim_enc state dict has no {_REGIONS_KEY}")
    net = SGRAFNet(vocab_size=len(vocab), num_region=int(state[2][_REGIONS_KEY].shape[0]), **arch)
    load_parts(path, {"img_enc": net.img_enc, "txt_enc": net.txt_enc, "sim_enc": net.sim_enc}, state)
    return net


@register_adapter("sgraf")
class SGRAF(RegionAdapter):
    """SGR, SAF, or their SGRAF ensemble, over region features; scores every (image, caption) pair."""

    def __init__(self, nets: list[SGRAFNet], vocab: Vocabulary, source: str) -> None:
        super().__init__(nets, vocab, source)
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
        nets, source = load_ensemble(checkpoint, lambda p: _net_from_checkpoint(p, voc, explicit, allow_pickle),
                                     "SGRAF (SGR and SAF)")  # fmt: skip
        if len(nets) == 2 and sorted(n.sim_enc.module_name for n in nets) != ["SAF", "SGR"]:
            raise ConfigError(f"checkpoint: SGRAF averages an SGR and an SAF model; {source} are "
                              f"{[n.sim_enc.module_name for n in nets]}")  # fmt: skip
        return cls(nets, voc, source)
