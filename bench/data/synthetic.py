"""The built-in ``synthetic`` dataset: rendered shape scenes with five paraphrased captions each.

Every image is a plain or lightly textured background with one or two *groups* of objects. A group is ``count``
(1-3) objects of one colour (6), one shape (4) and one size (small/large), placed in one region (left, right, top,
bottom, centre). Each image gets five captions from five different templates, with synonyms ("square"/"box",
"red"/"crimson"), number words and group order varied, so paraphrases exist. The image label (for image-to-image
retrieval) is the ``(colour, shape)`` class of the first group, which is the largest.

About 15% of the scenes of each split are near-duplicates: copies of an earlier scene of the same split with
re-drawn positions, sizes and colour jitter. Half of them also copy the captions verbatim, the rest re-word them.
So, as in COCO, a caption often matches images other than its own (false negatives). The index JSON records this
as ``duplicate_of`` (the row of the original scene, or null).

The data is generated on first use into ``<work_dir>/synthetic/v1-seed{seed}-{n_train}-{n_val}-{n_test}-{size}``:
one PNG per image, then ``index.json`` written last and atomically, so a folder without a valid index (an
interrupted run) is regenerated. Everything derives from ``seed`` through numpy Generators, one independent
stream per split, so the splits are disjoint draws from the same distribution and a split does not change when
another split's size does. Objects stay within [0.13, 0.87] of each side, so a 224 centre crop of a 256 resize
keeps them whole.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import register_format
from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = [
    "COLOURS",
    "LABEL_NAMES",
    "SHAPES",
    "VERSION",
    "ensure_generated",
    "load_synthetic",
    "render_scene",
    "synthetic_dir",
]

log = logging.getLogger(__name__)

VERSION = 1
SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}
N_CAPTIONS = 5
DUPLICATE_FRACTION = 0.15

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
LABEL_NAMES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (242, 242, 238),
    "grey": (150, 150, 152),
    "black": (28, 28, 32),
    "beige": (228, 214, 186),
}
REGIONS = ("left", "right", "top", "bottom", "centre")
# Two groups always sit in opposite regions, so they never overlap and "on the left ... on the right" is true.
_REGION_PAIRS = (("left", "right"), ("top", "bottom"))
# Boxes (fractions of the side) that object centres are drawn from. With radii up to 0.088 objects stay within
# [0.132, 0.868]; a 224 crop of a 256 resize keeps [0.0625, 0.9375].
_REGION_BOX = {
    "left": ((0.22, 0.36), (0.25, 0.75)),
    "right": ((0.64, 0.78), (0.25, 0.75)),
    "top": ((0.25, 0.75), (0.22, 0.36)),
    "bottom": ((0.25, 0.75), (0.64, 0.78)),
    "centre": ((0.36, 0.64), (0.36, 0.64)),
}
_RADIUS = {"small": 0.05, "large": 0.08}

# Synonyms: the first word is the canonical one and is used most often.
_COLOUR_WORDS = {
    "red": ("red", "crimson"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "tangerine"),
}
_SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"), ("wedge", "wedges")),
    "star": (("star", "stars"),),
}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "a pair of"), 3: ("three",)}
_REGION_WORDS = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "centre": ("in the centre", "in the middle", "at the center"),
}
_BG_WORDS = {
    "white": ("white", "pale"),
    "grey": ("grey", "gray"),
    "black": ("black", "dark"),
    "beige": ("beige", "cream"),
}


# ---------------------------------------------------------------------------------------------------------------
# scenes


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    # The canonical word 60% of the time, so synonyms are present but not dominant.
    if len(options) == 1 or rng.random() < 0.6:
        return options[0]
    return options[1 + int(rng.integers(len(options) - 1))]


def _place(rng: np.random.Generator, groups: list[dict[str, Any]], size: int) -> None:
    """Draw object positions, radii and colour jitter for every group, avoiding overlaps (in place)."""
    placed: list[tuple[float, float, float]] = []
    for g in groups:
        (x0, x1), (y0, y1) = _REGION_BOX[g["region"]]
        objects = []
        for _ in range(g["count"]):
            r = _RADIUS[g["size"]] * float(rng.uniform(0.9, 1.1))
            # Rejection sampling; after 200 misses accept an overlap rather than loop forever.
            for _try in range(200):
                x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
                if all((x - px) ** 2 + (y - py) ** 2 >= (r + pr + 0.02) ** 2 for px, py, pr in placed):
                    break
            placed.append((x, y, r))
            base = np.asarray(COLOURS[g["colour"]])
            rgb = np.clip(base + rng.integers(-14, 15, size=3), 0, 255)
            objects.append([round(x * size, 2), round(y * size, 2), round(r * size, 2), [int(c) for c in rgb]])
        g["objects"] = objects


def _new_scene(rng: np.random.Generator, size: int) -> dict[str, Any]:
    n_groups = 1 if rng.random() < 0.5 else 2
    classes = rng.choice(len(COLOURS) * len(SHAPES), size=n_groups, replace=False)
    regions = [REGIONS[int(rng.integers(len(REGIONS)))]]
    if n_groups == 2:
        pair = _REGION_PAIRS[int(rng.integers(len(_REGION_PAIRS)))]
        regions = list(pair) if rng.random() < 0.5 else list(pair[::-1])
    groups = []
    for cls, region in zip(classes, regions, strict=True):
        colour, shape = divmod(int(cls), len(SHAPES))
        groups.append(
            {
                "count": int(rng.integers(1, 4)),
                "colour": list(COLOURS)[colour],
                "shape": SHAPES[shape],
                "size": "large" if rng.random() < 0.5 else "small",
                "region": region,
            }
        )
    # The first group is the largest one: it defines the label.
    groups.sort(key=lambda g: g["size"] != "large")
    texture_kind = ("plain", "gradient", "stripes")[int(rng.integers(3))]
    texture = {
        "kind": texture_kind,
        "axis": int(rng.integers(2)),
        "amplitude": int(rng.integers(6, 16)),
        "period": int(rng.integers(8, 20)),
    }
    scene = {"background": list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))], "texture": texture, "groups": groups}
    _place(rng, groups, size)
    return scene


def _near_duplicate(rng: np.random.Generator, source: dict[str, Any], size: int) -> dict[str, Any]:
    """The same description as ``source`` with new positions, radii and colour jitter."""
    groups = [{k: v for k, v in g.items() if k != "objects"} for g in source["groups"]]
    scene = {"background": source["background"], "texture": dict(source["texture"]), "groups": groups}
    _place(rng, groups, size)
    return scene


def _label(scene: dict[str, Any]) -> int:
    g = scene["groups"][0]
    return list(COLOURS).index(g["colour"]) * len(SHAPES) + SHAPES.index(g["shape"])


# ---------------------------------------------------------------------------------------------------------------
# captions


def _with_article(words: list[str]) -> str:
    if words[0] == "a" and words[1][0] in "aeiou":
        words = ["an", *words[1:]]
    return " ".join(words)


def _np(rng: np.random.Generator, g: dict[str, Any], *, size: bool = True) -> str:
    singular, plural = _pick(rng, _SHAPE_WORDS[g["shape"]])
    words = [_pick(rng, _COUNT_WORDS[g["count"]])]
    if size:
        words.append(_pick(rng, _SIZE_WORDS[g["size"]]))
    words += [_pick(rng, _COLOUR_WORDS[g["colour"]]), singular if g["count"] == 1 else plural]
    return _with_article(" ".join(words).split())


def _pos(rng: np.random.Generator, g: dict[str, Any]) -> str:
    return _pick(rng, _REGION_WORDS[g["region"]])


Template = Callable[[np.random.Generator, list[dict[str, Any]], str], str]


def _t_plain(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return " and ".join(f"{_np(r, g)} {_pos(r, g)}" for g in gs)


def _t_picture(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return "a picture of " + " and ".join(_np(r, g) for g in gs)


def _t_there(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    verb = "is" if gs[0]["count"] == 1 else "are"
    return f"there {verb} " + ", and ".join(f"{_np(r, g)} {_pos(r, g)}" for g in gs)


def _t_background(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return " and ".join(_np(r, g) for g in gs) + f" on a {bg} background"


def _t_image_with(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return "an image with " + " and ".join(f"{_np(r, g, size=False)} {_pos(r, g)}" for g in gs)


def _t_position_first(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return "; ".join(f"{_pos(r, g)}, {_np(r, g)}" for g in gs)


def _t_backdrop(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return f"a {bg} backdrop showing " + " and ".join(_np(r, g) for g in gs)


def _t_drawing(r: np.random.Generator, gs: list[dict[str, Any]], bg: str) -> str:
    return "simple drawing of " + " next to ".join(_np(r, g, size=False) for g in gs)


# Each template has its own fixed words or punctuation, so five different templates give five different captions.
_TEMPLATES: tuple[Template, ...] = (
    _t_plain,
    _t_picture,
    _t_there,
    _t_background,
    _t_image_with,
    _t_position_first,
    _t_backdrop,
    _t_drawing,
)


def _captions(rng: np.random.Generator, scene: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for t in rng.permutation(len(_TEMPLATES))[:N_CAPTIONS]:
        gs = list(scene["groups"])
        if len(gs) == 2 and rng.random() < 0.5:
            gs.reverse()
        bg = _pick(rng, _BG_WORDS[scene["background"]])
        text = _TEMPLATES[int(t)](rng, gs, bg)
        out.append(text[0].upper() + text[1:] + ".")
    if len(set(out)) != len(out):  # cannot happen with distinct templates; guard the invariant the tests rely on
        raise AssertionError(f"synthetic captions collide: {out}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _star(x: float, y: float, r: float) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    return [(x + float(rr * np.cos(a)), y + float(rr * np.sin(a))) for a, rr in zip(angles, radii, strict=True)]


def render_scene(scene: dict[str, Any], size: int):  # -> PIL.Image.Image
    """Draw a scene description (as stored in the index JSON) as an RGB image; deterministic, no randomness."""
    from PIL import Image, ImageDraw

    base = np.asarray(BACKGROUNDS[scene["background"]], dtype=np.int16)
    tex = scene["texture"]
    ramp = np.arange(size)
    if tex["kind"] == "gradient":
        offset = np.round((ramp / max(size - 1, 1) - 0.5) * 2 * tex["amplitude"]).astype(np.int16)
    elif tex["kind"] == "stripes":
        offset = np.where((ramp // tex["period"]) % 2 == 0, tex["amplitude"] // 2, -(tex["amplitude"] // 2))
    else:
        offset = np.zeros(size, dtype=np.int16)
    offset = offset.astype(np.int16)
    shade = offset[:, None] if tex["axis"] == 0 else offset[None, :]
    pix = np.clip(base[None, None, :] + shade[..., None], 0, 255).astype(np.uint8)
    pix = np.broadcast_to(pix, (size, size, 3)).copy()
    im = Image.fromarray(pix, "RGB")
    draw = ImageDraw.Draw(im)
    for g in scene["groups"]:
        for x, y, r, rgb in g["objects"]:
            fill = tuple(rgb)
            if g["shape"] == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            elif g["shape"] == "square":
                h = 0.88 * r  # equal-ish area to the circle of the same radius
                draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
            elif g["shape"] == "triangle":
                draw.polygon([(x, y - r), (x - 0.95 * r, y + 0.75 * r), (x + 0.95 * r, y + 0.75 * r)], fill=fill)
            elif g["shape"] == "star":
                draw.polygon(_star(x, y, r), fill=fill)
            else:
                raise DataError(f"synthetic scene has unknown shape {g['shape']!r}")
    return im


# ---------------------------------------------------------------------------------------------------------------
# generation and cache


def synthetic_dir(base: Path, seed: int, n_train: int, n_val: int, n_test: int, image_size: int) -> Path:
    """The cache folder of one synthetic configuration under ``base`` (``<work_dir>/synthetic``)."""
    return Path(base) / f"v{VERSION}-seed{seed}-{n_train}-{n_val}-{n_test}-{image_size}"


def _write_atomic(path: Path, data: bytes) -> None:
    # Same-folder temp file + os.replace: a reader (or a concurrent generator) never sees a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _generate_split(seed: int, split: str, n: int, size: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    n_dup = max(1, round(DUPLICATE_FRACTION * n)) if n >= 2 else 0
    dups = set(int(i) for i in rng.choice(np.arange(1, n), size=n_dup, replace=False)) if n_dup else set()
    rows: list[dict[str, Any]] = []
    originals: list[int] = []
    n_seen_dups = 0
    for i in range(n):
        if i in dups:
            src = originals[int(rng.integers(len(originals)))]
            scene = _near_duplicate(rng, rows[src]["scene"], size)
            # Alternate verbatim and re-worded captions, so both kinds of false negatives exist in every split.
            caps = list(rows[src]["captions"]) if n_seen_dups % 2 == 0 else _captions(rng, scene)
            n_seen_dups += 1
            dup_of: int | None = src
        else:
            scene = _new_scene(rng, size)
            caps = _captions(rng, scene)
            dup_of = None
            originals.append(i)
        rows.append(
            {
                "file": f"{split}/{i:06d}.png",
                "captions": caps,
                "label": _label(scene),
                "duplicate_of": dup_of,
                "scene": scene,
            }
        )
    return rows


def _params(seed: int, n_train: int, n_val: int, n_test: int, image_size: int) -> dict[str, int]:
    return {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size}


def _read_index(folder: Path, params: dict[str, int]) -> dict[str, Any] | None:
    """The index when the folder is complete and matches ``params``; None when it must be (re)generated."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("version") != VERSION or index.get("params") != params:
        return None
    splits = index.get("splits")
    if not isinstance(splits, dict) or any(len(splits.get(s, ())) != params[f"n_{s}"] for s in SPLITS):
        return None
    if not all(os.path.exists(folder / row["file"]) for s in SPLITS for row in splits[s]):
        return None
    return index


def ensure_generated(
    base: Path, *, seed: int = 0, n_train: int = 1000, n_val: int = 200, n_test: int = 200, image_size: int = 224
) -> Path:
    """Generate the synthetic dataset under ``base`` unless a complete copy is there; return its folder.

    Raises:
        ConfigError: a size is negative or the image size is below 32.
    """
    return _ensure(base, _params(seed, n_train, n_val, n_test, image_size))[0]


def _ensure(base: Path, params: dict[str, int]) -> tuple[Path, dict[str, Any]]:
    for key in ("n_train", "n_val", "n_test"):
        if params[key] < 0:
            raise ConfigError(f"synthetic: option {key!r} must be >= 0, got {params[key]}")
    if params["image_size"] < 32:
        raise ConfigError(f"synthetic: option 'image_size' must be >= 32, got {params['image_size']}")
    seed, image_size = params["seed"], params["image_size"]
    folder = synthetic_dir(base, seed, params["n_train"], params["n_val"], params["n_test"], image_size)
    index = _read_index(folder, params)
    if index is not None:
        return folder, index

    t0 = time.perf_counter()
    log.info("generating synthetic dataset into %s", folder)
    splits = {s: _generate_split(seed, s, params[f"n_{s}"], image_size) for s in SPLITS}
    for s, rows in splits.items():
        (folder / s).mkdir(parents=True, exist_ok=True)
        for row in rows:
            buf = io.BytesIO()
            # compress_level 1: several times faster than the default and the flat scenes still compress well.
            render_scene(row["scene"], image_size).save(buf, format="PNG", compress_level=1)
            _write_atomic(folder / row["file"], buf.getvalue())
    index = {
        "format": "itr-bench synthetic",
        "version": VERSION,
        "params": params,
        "label_names": LABEL_NAMES,
        "splits": splits,
    }
    # Written last: its presence marks the folder complete.
    _write_atomic(folder / "index.json", json.dumps(index, indent=1).encode())
    log.info("generated %d synthetic images in %.1f s", sum(len(r) for r in splits.values()), time.perf_counter() - t0)
    return folder, index


@register_format("synthetic")
def load_synthetic(
    root: Path | None = None,
    split: str = "test",
    *,
    name: str = "synthetic",
    work_dir: Path | None = None,
    seed: int = 0,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 200,
    image_size: int = 224,
) -> RetrievalSplit:
    """Load (generating on first use) a split of the synthetic shapes dataset.

    Args:
        root: Folder to cache the data in instead of ``work_dir/synthetic``.
        split: ``train``, ``val`` or ``test``.
        name: Dataset name stamped on the split.
        work_dir: The run's work folder; the data goes to ``work_dir/synthetic/v1-seed...``.
        seed: Seed of everything: scenes, captions, duplicates.
        n_train: Train images.
        n_val: Validation images.
        n_test: Test images.
        image_size: Side of the square PNG images.

    Returns:
        The split, five captions per image, with ``image_labels`` (index into :data:`LABEL_NAMES`).
    """
    if split not in SPLITS:
        raise SplitNotFoundError(f"synthetic: unknown split {split!r}; available splits: {', '.join(SPLITS)}")
    if root is None:
        if work_dir is None:
            raise ConfigError("synthetic: needs a work_dir (or a 'root') to generate its images in")
        root = Path(work_dir) / "synthetic"
    folder, index = _ensure(Path(root), _params(seed, n_train, n_val, n_test, image_size))
    index_path = folder / "index.json"
    rows = index["splits"][split]
    captions = [c for row in rows for c in row["captions"]]
    c2i = np.repeat(np.arange(len(rows), dtype=np.int64), [len(row["captions"]) for row in rows])
    return RetrievalSplit(
        dataset=name,
        split=split,
        image_paths=[folder / row["file"] for row in rows],
        image_ids=[row["file"].removesuffix(".png") for row in rows],
        captions=captions,
        caption_to_image=c2i,
        image_labels=np.asarray([row["label"] for row in rows], dtype=np.int64),
        source=index_path,
    )
