"""ARO's Visual Genome tests (Yuksekgonul et al., ICLR 2023), as choice sets read from the release's files.

* ``aro_vg_relation``: ``visual_genome_relation.json`` (a list of ``image_path``, ``bbox_x``, ``bbox_y``,
  ``bbox_w``, ``bbox_h``, ``true_caption``, ``false_caption``, ``relation_name``) and the photos in ``images/``.
  Each item is the photo cropped to its box, the true caption and the one with subject and object swapped. The
  subset is the relation; ``mean`` is the macro accuracy over the relations outside :data:`SYMMETRIC`, as the
  authors' notebook ("Replicate ARO! VG-Relation, VG-Attribution") computes the paper's number.
* ``aro_vg_attribution``: ``visual_genome_attribution.json`` (the same fields, ``attributes`` for the relation):
  the subset is the attribute pair ``<a>_<b>``; ``mean`` is the macro accuracy over the pairs with at least 25 items
  (the release's ``evaluate_scores`` leaves out rarer pairs).

The release's ``evaluate_scores`` takes the ``argmax`` over ``[false_caption, true_caption]``, so a tie goes to the
false caption: the same as the harness's strict rule. COCO-Order and Flickr30K-Order are not built in: their
negatives come from spaCy perturbations the release computes when it loads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data.base import only_test_split, read_json
from bench.data.choice import ChoiceSplit, ItemBuilder
from bench.data.refs import CroppedImage
from bench.data.registry import register_format
from bench.errors import DataError

__all__ = ["MIN_ATTRIBUTE_ITEMS", "SYMMETRIC", "load_vg_attribution", "load_vg_relation"]

MIN_ATTRIBUTE_ITEMS = 25

# The relations the authors' notebook leaves out of VG-Relation's macro accuracy (swapping their subject and object
# does not make the caption false, or too few items hold them), copied from it.
SYMMETRIC = frozenset((
    "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing", "chewing", "cleaning",
    "climbing", "close to", "coming from", "coming out of", "contain", "crossing", "dragging", "draped over",
    "drinking", "drinking from", "driving", "driving down", "driving on", "eating from", "eating in", "enclosing",
    "exiting", "facing", "filled with", "floating in", "floating on", "flying", "flying above", "flying in",
    "flying over", "flying through", "full of", "going down", "going into", "going through", "grazing in",
    "growing in", "growing on", "guiding", "hanging from", "hanging in", "hanging off", "hanging over", "higher than",
    "holding onto", "hugging", "in between", "jumping off", "jumping on", "jumping over", "kept in", "larger than",
    "leading", "leaning over", "leaving", "licking", "longer than", "looking in", "looking into", "looking out",
    "looking over", "looking through", "lying next to", "lying on top of", "making", "mixed with", "mounted on",
    "moving", "on the back of", "on the edge of", "on the front of", "on the other side of", "opening", "painted on",
    "parked at", "parked beside", "parked by", "parked in", "parked in front of", "parked near", "parked next to",
    "perched on", "petting", "piled on", "playing", "playing in", "playing on", "playing with", "pouring",
    "reaching for", "reading", "reflected on", "riding on", "running in", "running on", "running through",
    "seen through", "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
    "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on", "smiling at",
    "sniffing", "splashing", "sprinkled on", "stacked on", "standing against", "standing around", "standing behind",
    "standing beside", "standing in front of", "standing near", "standing next to", "staring at", "stuck in",
    "surrounding", "swimming in", "swinging", "talking to", "topped with", "touching", "traveling down",
    "traveling on", "tying", "typing on", "underneath", "wading in", "waiting for", "walking across", "walking by",
    "walking down", "walking next to", "walking through", "working in", "working on", "worn on", "wrapped around",
    "wrapped in", "by", "of", "near", "next to", "with", "beside", "on the side of", "around",
))  # fmt: skip


def _number(row: Mapping[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be a number, got {value!r}")
    return float(value)


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} is missing or empty")
    return value


def _load(root: Path, split: str, name: str, file: str, images: str, subset_of: Any) -> tuple[ItemBuilder, list[str]]:
    only_test_split(root, split, "ARO")
    path = root / file
    rows = read_json(path, "ARO annotation file")
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of test cases, got {type(rows).__name__}")
    builder = ItemBuilder(path)
    subsets = []
    for k, row in enumerate(rows):
        where = f"{path} item {k}"
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        box = tuple(_number(row, f"bbox_{c}", where) for c in ("x", "y", "w", "h"))
        image = root / images / _text(row, "image_path", where)
        crop = CroppedImage(image, ",".join(f"{v:g}" for v in box), box=box)  # type: ignore[arg-type]
        subset = subset_of(row, where)
        subsets.append(subset)
        builder.add(str(k), subset, [crop], [_text(row, "true_caption", where), _text(row, "false_caption", where)],
                    [0])  # fmt: skip
    return builder, subsets


@register_format("aro_vg_relation", task="choice")
def load_vg_relation(root: Path, split: str, *, name: str = "aro_vg_relation",
                     file: str = "visual_genome_relation.json", images: str = "images") -> ChoiceSplit:  # fmt: skip
    """ARO's VG-Relation: cropped photos, each with its relation caption and the one with the two objects
    swapped; ``mean`` leaves the symmetric relations out.

    Args:
        root: Folder holding the annotation file and ``images/``.
        split: ``test``.
        name: Dataset name stamped on the split.
        file: The annotation file, relative to root.
        images: The image folder, relative to root.
    """
    builder, subsets = _load(root, split, name, file, images, lambda row, where: _text(row, "relation_name", where))
    kept = tuple(s for s in dict.fromkeys(subsets) if s not in SYMMETRIC)
    if not kept:
        raise DataError(f"{root / file}: every relation is one ARO leaves out (symmetric); no macro accuracy")
    return builder.build(name, split, {"mean": kept}, source=root / file)


@register_format("aro_vg_attribution", task="choice")
def load_vg_attribution(root: Path, split: str, *, name: str = "aro_vg_attribution",
                        file: str = "visual_genome_attribution.json",
                        images: str = "images") -> ChoiceSplit:  # fmt: skip
    """ARO's VG-Attribution: cropped photos, each with its caption and the one with the two attributes
    swapped; ``mean`` is over the attribute pairs with at least 25 items.

    Args:
        root: Folder holding the annotation file and ``images/``.
        split: ``test``.
        name: Dataset name stamped on the split.
        file: The annotation file, relative to root.
        images: The image folder, relative to root.
    """

    def pair(row: Mapping[str, Any], where: str) -> str:
        attrs = row.get("attributes")
        if not (isinstance(attrs, list) and len(attrs) == 2 and all(isinstance(a, str) for a in attrs)):
            raise DataError(f"{where}: field 'attributes' must be a list of two strings, got {attrs!r}")
        return f"{attrs[0]}_{attrs[1]}"

    builder, subsets = _load(root, split, name, file, images, pair)
    counts: dict[str, int] = {}
    for s in subsets:
        counts[s] = counts.get(s, 0) + 1
    kept = tuple(s for s, n in counts.items() if n >= MIN_ATTRIBUTE_ITEMS)
    if not kept:
        raise DataError(f"{root / file}: no attribute pair has {MIN_ATTRIBUTE_ITEMS} items; no macro accuracy")
    return builder.build(name, split, {"mean": kept}, source=root / file)
