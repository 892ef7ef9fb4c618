"""VALSE (Parcalabescu et al., ACL 2022) as a choice set, read from its repository.

VALSE's piece files (``{"<id>": {"image_file", "caption", "foil", "mturk"}}``) from its repository,
each piece's images where its scripts read them (option ``images`` moves them); option ``pieces`` reads fewer than
the eleven, ``valid_only`` (default true) keeps the items two of three annotators validated. Split ``test``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bench.data.base import only_test_split, read_json
from bench.data.choice import ChoiceSplit, ItemBuilder, text_field
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError

__all__ = ["VALSE_PIECES", "load_valse"]


# VALSE's pieces as its evaluation scripts list them (Heidelberg-NLP/VALSE config.py, the ARR version): the piece's
# image folder and its file, relative to the repository. FOIL-it's images are COCO val2014 (the scripts' own path is
# absolute and theirs).
VALSE_PIECES = {
    "existence": ("data/visual7w/images", "data/existence.json"),
    "plurals": ("data/plurals/test_images", "data/plurals.json"),
    "counting_hard": ("data/visual7w/images", "data/counting_hard.json"),
    "counting_small": ("data/visual7w/images", "data/counting-small-quant.json"),
    "counting_adversarial": ("data/visual7w/images", "data/counting_adversarial.json"),
    "relations": ("data/relations/test_images", "data/relation.json"),
    "action_replace": ("data/actions/images_512", "data/action-replacement.json"),
    "actant_swap": ("data/actions/images_512", "data/actions/actant-swap.json"),
    "coref": ("data/coref/release_too_many_is_this_in_color/images", "data/coreference-standard.json"),
    "coref_hard": ("data/coref/release_v18/test_images", "data/coreference-hard.json"),
    "foil_it": ("data/coco/val2014", "data/foil-it.json"),
}


@register_format("valse", task="choice")
def load_valse(root: Path, split: str, *, name: str = "valse", pieces: list[str] | None = None,
               images: dict[str, str] | None = None, valid_only: bool = True) -> ChoiceSplit:  # fmt: skip
    """VALSE (Parcalabescu et al., ACL 2022): a caption against its foil, per linguistic piece.

    Args:
        root: The VALSE repository (its ``data/`` files), with each piece's images where :data:`VALSE_PIECES` says.
        split: ``test``.
        name: Dataset name stamped on the split.
        pieces: The pieces to read (default all eleven).
        images: Piece -> image folder relative to root, for pieces whose images are elsewhere.
        valid_only: Only the items at least two of three annotators validated (``mturk.caption >= 2``), as the
            paper and its scripts score.

    Returns:
        The split: one item per kept entry, captions ``(caption, foil)``, truth ``(0,)``, subset the piece; ``mean``
        is the mean over pieces (the paper's average).
    """
    only_test_split(root, split, "valse")
    chosen = list(VALSE_PIECES) if pieces is None else pieces
    if not isinstance(chosen, list) or not chosen or any(p not in VALSE_PIECES for p in chosen):
        raise ConfigError(f"option 'pieces' must be a non-empty list of {', '.join(VALSE_PIECES)}; got {pieces!r}")
    if images is not None and not (isinstance(images, Mapping) and all(isinstance(v, str) for v in images.values())):
        raise ConfigError(f"option 'images' must map piece names to folders, got {images!r}")
    builder = ItemBuilder(root)
    for piece in chosen:
        folder, file = VALSE_PIECES[piece]
        image_dir = root / (images or {}).get(piece, folder)
        path = root / file
        rows = read_json(path, f"VALSE {piece} file")
        if not isinstance(rows, Mapping):
            raise DataError(f"{path}: expected a JSON object of items, got {type(rows).__name__}")
        builder.source = path
        for key, row in rows.items():
            votes = row.get("mturk") if isinstance(row, Mapping) else None
            if valid_only:
                if not isinstance(votes, Mapping) or not isinstance(votes.get("caption"), int):
                    raise DataError(f"{path}: item {key!r}: field 'mturk.caption' is missing (valid_only = true)")
                if votes["caption"] < 2:
                    continue
            caption = row.get("caption") if isinstance(row, Mapping) else None
            if isinstance(caption, list) and caption:  # some releases list the caption
                caption = caption[0]
            image = image_dir / text_field(row, "image_file", path, key)
            texts = [text_field({"caption": caption}, "caption", path, key), text_field(row, "foil", path, key)]
            builder.add(f"{piece}/{key}", piece, [image], texts, [0])
    if not builder.items:
        raise DataError(f"{root}: no VALSE item is left ({'valid only' if valid_only else 'all'})")
    return builder.build(name, split, {}, source=root)
