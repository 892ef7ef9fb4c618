"""Stage-1 (backbone) feature extraction over a split, and stage-2 embedding.

The encode loop lives here once, for every adapter (the anchors copy it into each model wrapper): transformed image
batches in channels-last layout, tokenised caption batches, the encoders' precision and the precision stage-1
features are stored in. :mod:`bench.encode.cache` keeps a frozen backbone's features on disk.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bench.adapters.protocol import Adapter, Features
from bench.config import FeatureDtype, Precision
from bench.data.base import RetrievalSplit
from bench.errors import DataError

__all__ = [
    "FEATURE_DTYPES",
    "PRECISIONS",
    "FeatureSet",
    "HEAD_BATCH",
    "embed_features",
    "encode_split",
    "encoding_precision",
    "extract_image_features",
    "extract_text_features",
    "iter_image_batches",
    "for_storage",
    "map_images",
    "map_texts",
    "pad_cat",
    "storage_dtype",
    "to_device",
    "use_channels_last",
    "worker_error",
]

FeatureSet = dict[str, torch.Tensor]  # batch-first tensors over a whole split, padded along dim 1
HEAD_BATCH = 512  # rows per stage-2 (head) batch over cached features


class _ImageDataset(Dataset):
    def __init__(self, split: RetrievalSplit, transform: Callable[[Any], torch.Tensor], rows: Any = None) -> None:
        self.split, self.transform = split, transform
        self.rows = list(range(split.n_images)) if rows is None else list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.load_image(self.rows[i]))


def iter_image_batches(
    split: RetrievalSplit,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    num_workers: int = 0,
    rows: Any = None,
    pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """Transformed image batches ``[B, 3, H, W]`` of ``split`` (all images, or ``rows``), in order."""
    ds = _ImageDataset(split, transform, rows)
    try:
        # A private generator: a DataLoader otherwise draws its seed from torch's global one, so encoding (a cold
        # cache) and not encoding (a warm one) would leave different random states behind for what follows.
        loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                            generator=torch.Generator())  # fmt: skip
        yield from loader
    except DataError as e:
        raise worker_error(e) from None


def worker_error(e: DataError) -> DataError:
    """A DataLoader worker's :class:`DataError` comes back with the worker's whole traceback as its message: the
    one line that matters, as its own error."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return DataError(lines[-1].removeprefix("bench.errors.DataError: "))


def pad_cat(chunks: list[Features]) -> FeatureSet:
    out: FeatureSet = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].ndim >= 2:
            width = max(p.shape[1] for p in parts)
            parts = [F.pad(p, [0, 0] * (p.ndim - 2) + [0, width - p.shape[1]]) for p in parts]
        out[key] = torch.cat(parts)
    return out


def to_device(feats: Features, device: torch.device, dtype: torch.dtype | None = None) -> Features:
    return {
        k: v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else v.dtype)
        for k, v in feats.items()
    }


PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
FEATURE_DTYPES: tuple[str, ...] = typing.get_args(FeatureDtype)
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def storage_dtype(precision: str, feature_dtype: str = "auto") -> str:
    """What stage-1 features are stored in, for encoders that ran at ``precision`` (``"fp32"`` or ``"bf16"``).

    ``"auto"`` keeps the encoder's precision, so what is scored is never rounded below what was computed;
    ``"fp16"``/``"bf16"`` halve a frozen backbone's feature cache and round the features (near-tied ranks change).
    """
    if feature_dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {feature_dtype!r}")
    return precision if feature_dtype == "auto" else feature_dtype


def for_storage(feats: Features, dtype: str = "fp32") -> Features:
    """``feats`` detached on the CPU, floating tensors in ``dtype`` (:func:`storage_dtype`)."""
    return {
        k: (v.detach().to("cpu", _TORCH_DTYPES[dtype]) if v.is_floating_point() else v.detach().cpu())
        for k, v in feats.items()
    }


def encoding_precision(device: torch.device | str, precision: str = "auto") -> str:
    """What encoders run in: ``"bf16"`` (autocast) or ``"fp32"``. ``precision="auto"`` is bf16 on CUDA (as
    CLIP_benchmark's ``--amp``) and fp32 elsewhere. Part of the feature-cache key: features encoded at one precision
    are never served for the other."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def use_channels_last(module: Any) -> None:
    """Put ``module``'s 4-D weights in channels-last layout, once, as ordinary tensors.

    Channels-last is faster for convolutions on our CPU and under cuDNN; towers without convolutions are unchanged.
    The conversion runs with inference mode off: weights converted inside ``torch.inference_mode`` (evaluation runs
    there) would become inference tensors, and an end-to-end training could not backpropagate through them in its next
    epoch.
    """
    if not isinstance(module, torch.nn.Module):
        return
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.ndim != 4 or t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        return
    with torch.inference_mode(False), torch.no_grad():
        module.to(memory_format=torch.channels_last)


def _precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if encoding_precision(device, precision) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def map_images(
    adapter: Adapter, split: RetrievalSplit, fn: Callable[[torch.Tensor], Any], *, device: torch.device,
    batch_size: int, num_workers: int, progress: bool, desc: str, precision: str = "fp32", rows: range | None = None,
) -> list[Any]:  # fmt: skip
    """``fn`` over every transformed image batch of ``split`` (all images, or ``rows``; on ``device``), in order, in
    channels-last layout and under bf16 autocast where ``precision`` says so (:func:`encoding_precision`)."""
    out = []
    layout = torch.channels_last
    use_channels_last(adapter)
    total = split.n_images if rows is None else len(rows)
    bar = tqdm(total=total, desc=f"{desc} {split.dataset}/{split.split}", disable=not progress, leave=False)
    for images in iter_image_batches(
        split, adapter.image_transform(), batch_size, num_workers, rows=rows, pin_memory=device.type == "cuda"
    ):
        with _precision_context(device, precision):
            out.append(fn(images.to(device, non_blocking=True, memory_format=layout)))
        bar.update(len(images))
    bar.close()
    return out


def _map_captions(
    adapter: Adapter, split: RetrievalSplit, fn: Callable[[Features], Any], *, device: torch.device, batch_size: int,
    progress: bool, desc: str, precision: str = "fp32", rows: range | None = None,
) -> list[Any]:  # fmt: skip
    """``fn`` over every tokenised caption batch of ``split`` (all captions, or ``rows``; on ``device``), in order,
    under bf16 autocast where ``precision`` says so."""
    texts = list(split.captions) if rows is None else list(split.captions[rows.start : rows.stop])
    return map_texts(adapter, texts, fn, device=device, batch_size=batch_size, precision=precision,
                     progress=progress, desc=f"{desc} {split.dataset}/{split.split}")  # fmt: skip


def map_texts(
    adapter: Adapter, texts: list[str], fn: Callable[[Features], Any], *, device: torch.device, batch_size: int,
    precision: str = "fp32", progress: bool = False, desc: str = "",
) -> list[Any]:  # fmt: skip
    """``fn`` over every tokenised batch of ``texts`` (on ``device``), in order, under bf16 autocast where
    ``precision`` says so (:func:`encoding_precision`)."""
    out = []
    starts = range(0, len(texts), batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        with _precision_context(device, precision):
            out.append(fn(to_device(adapter.tokenize(texts[s : s + batch_size]), device)))
    return out


@torch.inference_mode()
def extract_image_features(
    adapter: Adapter, split: RetrievalSplit, *, device: torch.device, batch_size: int = 64, num_workers: int = 0,
    progress: bool = True, precision: str = "fp32", rows: range | None = None, feature_dtype: str = "auto",
) -> FeatureSet:  # fmt: skip
    """Stage-1 features of every image of ``split`` (or of ``rows``; on CPU), encoded at ``precision`` and stored as
    :func:`storage_dtype` says."""
    adapter.eval()
    dtype = storage_dtype(encoding_precision(device, precision), feature_dtype)
    fn = lambda x: for_storage(adapter.image_features(x), dtype)  # noqa: E731
    return pad_cat(map_images(adapter, split, fn, device=device, batch_size=batch_size, num_workers=num_workers,
                                progress=progress, desc="backbone images", precision=precision, rows=rows))  # fmt: skip


@torch.inference_mode()
def extract_text_features(
    adapter: Adapter, split: RetrievalSplit, *, device: torch.device, batch_size: int = 128, progress: bool = True,
    precision: str = "fp32", rows: range | None = None, feature_dtype: str = "auto",
) -> FeatureSet:  # fmt: skip
    """Stage-1 features of every caption of ``split`` (or of ``rows``; on CPU), encoded at ``precision`` and stored
    as :func:`storage_dtype` says."""
    adapter.eval()
    dtype = storage_dtype(encoding_precision(device, precision), feature_dtype)
    fn = lambda t: for_storage(adapter.text_features(t), dtype)  # noqa: E731
    return pad_cat(_map_captions(adapter, split, fn, device=device, batch_size=batch_size, progress=progress,
                                  desc="backbone captions", precision=precision, rows=rows))  # fmt: skip


def _slice(feats: FeatureSet, idx: Any) -> Features:
    return {k: v[idx] for k, v in feats.items()}


def embed_features(
    embed: Callable[[Features], torch.Tensor],
    feats: FeatureSet,
    *,
    device: torch.device,
    batch_size: int = HEAD_BATCH,
) -> torch.Tensor:
    """Stage 2 over a cached feature set: ``[N, D]`` float32 embeddings on CPU."""
    n = next(iter(feats.values())).shape[0]
    out = []
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            out.append(embed(to_device(_slice(feats, slice(s, s + batch_size)), device, torch.float32)).float().cpu())
    return torch.cat(out)


@torch.inference_mode()
def encode_split(
    adapter: Adapter,
    split: RetrievalSplit,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and caption embeddings of ``split`` (float32, CPU, unnormalised).

    With ``features`` (cached stage-1 outputs) only the heads run (in float32); otherwise images and captions go end
    to end at ``precision`` (:func:`encoding_precision`).
    """
    adapter.eval()
    if features is not None:
        img_feats, txt_feats = features
        return (
            embed_features(adapter.embed_image, img_feats, device=device),
            embed_features(adapter.embed_text, txt_feats, device=device),
        )
    img = map_images(
        adapter,
        split,
        lambda x: adapter.encode_image(x).float().cpu(),
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="encode images",
        precision=precision,
    )
    txt = _map_captions(adapter, split, lambda t: adapter.encode_text(t).float().cpu(), device=device,
                        batch_size=2 * batch_size, progress=progress, desc="encode captions",
                        precision=precision)  # fmt: skip
    return torch.cat(img), torch.cat(txt)
