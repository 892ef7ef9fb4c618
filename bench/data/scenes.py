"""Scenes of the ``synthetic`` dataset: shape groups drawn at random, their captions from paraphrase templates, and
the rendered image (see :mod:`bench.data.synthetic` for the dataset built from them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.errors import DataError

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "LABEL_NAMES",
    "N_CAPTIONS",
    "SHAPES",
    "near_duplicate",
    "new_scene",
    "render_scene",
    "scene_captions",
    "scene_label",
]

N_CAPTIONS = 5

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


def new_scene(rng: np.random.Generator, size: int) -> dict[str, Any]:
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


def near_duplicate(rng: np.random.Generator, source: dict[str, Any], size: int) -> dict[str, Any]:
    """The same description as ``source`` with new positions, radii and colour jitter."""
    groups = [{k: v for k, v in g.items() if k != "objects"} for g in source["groups"]]
    scene = {"background": source["background"], "texture": dict(source["texture"]), "groups": groups}
    _place(rng, groups, size)
    return scene


def scene_label(scene: dict[str, Any]) -> int:
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


def scene_captions(rng: np.random.Generator, scene: dict[str, Any]) -> list[str]:
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
