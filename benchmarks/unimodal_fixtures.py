"""Small uni-modal fixtures in the published layouts, built from real photos and hand-written sentence pairs.

No uni-modal benchmark can be downloaded here, so this writes stand-ins that the real loaders read unchanged:

* image sets (CUB-200-2011, Cars196 as ``cars_annos.mat`` and as its CSV export, Stanford Online Products, In-Shop)
  from the photos of ``../shared/data/coco-sample``, grouped into classes by a property derivable from the data: the
  COCO object named by at least 3 of an image's 5 captions (``giraffe``, ``skateboard``, ``bathroom``, ...; an image
  naming two such objects is left out). Photos are symlinked (copied where links are not possible), never moved into
  the repository;
* STS sets (STS-B ``sts-{dev,test}.csv``, SICK-R ``SICK.txt``, plain TSV) from :data:`PAIRS`, sentence pairs written by
  hand with gold scores on the STS 0-5 scale.

Class ids follow each set's retrieval split: the ``n_train_classes`` smallest classes get the train ids (CUB 1..,
Cars 1..) and the rest the test ids (CUB 101.., Cars 99..), so the loaders' split rules are exercised as published.

    python benchmarks/unimodal_fixtures.py [--coco ../shared/data/coco-sample] [--out work_dir/unimodal]
        [--splits test] [--min-per-class 3] [--max-per-class N]

The command line uses only the photos of coco-sample's ``test.json`` by default, so a model fine-tuned on its
``train.json`` (``configs/unimodal.toml``) is scored on photos it never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"

# Class name -> caption words that name it (COCO categories, merged where COCO captions use one for the other).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "cat": ("cat", "cats", "kitten"),
    "dog": ("dog", "dogs", "puppy"),
    "giraffe": ("giraffe", "giraffes"),
    "elephant": ("elephant", "elephants"),
    "zebra": ("zebra", "zebras"),
    "horse": ("horse", "horses"),
    "bear": ("bear", "bears"),
    "sheep_cow": ("sheep", "cow", "cows", "cattle", "lamb"),
    "skateboard": ("skateboard", "skateboarder", "skateboarding"),
    "snow": ("ski", "skis", "skier", "skiers", "skiing", "snowboard", "snowboarder", "snowboarding"),
    "surf": ("surfboard", "surfer", "surfers", "surfing"),
    "baseball": ("baseball", "batter", "pitcher"),
    "pizza": ("pizza", "pizzas"),
    "cake": ("cake", "cakes"),
    "bathroom": ("toilet", "bathroom", "sink"),
    "bed": ("bed", "bedroom"),
    "train": ("train", "trains"),
    "bus": ("bus", "buses"),
    "plane": ("airplane", "plane", "jet", "airplanes", "planes"),
    "computer": ("computer", "laptop", "keyboard"),
    "boat": ("boat", "boats"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike"),
    "clock": ("clock",),
    "traffic": ("traffic", "stop"),
    "umbrella": ("umbrella", "umbrellas"),
    "banana": ("banana", "bananas"),
    "donut": ("donut", "donuts", "doughnut", "doughnuts"),
}

# Hand-written sentence pairs with gold similarity on the STS scale (5 = same meaning, 0 = unrelated).
PAIRS: list[tuple[str, str, float]] = [
    ("A man is riding a horse on the beach.", "A man rides a horse along the beach.", 5.0),
    ("A cat is sleeping on a bed.", "A cat sleeps on the bed.", 4.8),
    ("Two giraffes stand near a tree.", "A pair of giraffes standing next to a tree.", 4.6),
    ("A skateboarder does a trick on a ramp.", "A person performs a skateboard trick on a ramp.", 4.4),
    ("A plate of pizza sits on the table.", "There is a pizza on a plate on the table.", 4.4),
    ("A red bus drives down the street.", "A bus is driving on a city street.", 3.8),
    ("A woman is cutting a cake.", "A woman slices a birthday cake.", 3.8),
    ("A dog catches a frisbee in the park.", "A dog is playing with a frisbee on the grass.", 3.6),
    ("A train pulls into the station.", "A train is arriving at a platform.", 3.6),
    ("A surfer rides a big wave.", "A man is surfing in the ocean.", 3.4),
    ("A bathroom with a white toilet and sink.", "A clean bathroom with a sink.", 3.2),
    ("An elephant walks through tall grass.", "An elephant is eating grass.", 2.8),
    ("A clock tower stands in the city centre.", "A large clock on the side of a building.", 2.6),
    ("A man is skiing down a snowy slope.", "A snowboarder jumps on a snowy hill.", 2.4),
    ("A laptop sits on a wooden desk.", "A computer keyboard on a desk.", 2.4),
    ("A boat is floating on the lake.", "People are swimming in the lake.", 1.8),
    ("A baseball player swings a bat.", "A tennis player hits the ball.", 1.6),
    ("A zebra grazes in a field.", "A horse grazes in a field.", 1.6),
    ("A bowl of bananas on the counter.", "A kitchen counter with a microwave.", 1.2),
    ("A motorcycle is parked by the road.", "A car drives down the road.", 1.2),
    ("A bear walks in the forest.", "A man walks his dog in the park.", 0.6),
    ("A plate of donuts on a table.", "An airplane is flying in the sky.", 0.2),
    ("Sheep are grazing on a hill.", "A man is typing on a laptop.", 0.0),
    ("A stop sign at an intersection.", "A cat is sleeping on a couch.", 0.0),
    ("A child is flying a kite.", "A kid flies a kite on the beach.", 4.2),
    ("A woman holds an umbrella in the rain.", "A person with an umbrella walks in the rain.", 4.2),
    ("A man is cooking in the kitchen.", "A man prepares food in a kitchen.", 4.6),
    ("Two dogs run on the beach.", "Two dogs are playing in the snow.", 2.2),
    ("A plane is parked at the airport.", "An airplane sits on the runway.", 4.0),
    ("A group of people ride bikes.", "People are sitting on a bench.", 1.0),
    ("A horse pulls a cart down the street.", "A cart is pulled by a horse.", 4.8),
    ("A vase of flowers on a table.", "Flowers in a vase on a wooden table.", 4.8),
]
# SICK rates relatedness on 1-5; the same pairs, rescaled.
SICK_SETS = ("TRAIN", "TRIAL", "TEST")


def coco_classes(
    coco: Path = COCO,
    max_per_class: int | None = None,
    min_per_class: int = 4,
    splits: tuple[str, ...] = ("train", "test"),
) -> dict[str, list[Path]]:
    """Photos of coco-sample grouped by the one COCO object at least 3 of their captions name.

    Args:
        coco: The coco-sample folder.
        max_per_class: Keep at most this many photos per class (the first by file name).
        min_per_class: Drop classes with fewer photos.
        splits: The coco-sample files whose photos to use (``("test",)`` keeps them apart from the train photos a
            model may be fine-tuned on).

    Returns:
        Class name -> photo paths, classes largest first (then by name), photos sorted by name.
    """
    rows = [r for s in splits for r in json.loads((coco / f"{s}.json").read_text())]
    captions: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        captions[r["image_path"]].append(r["caption"].lower())
    words = {c: set(ws) for c, ws in KEYWORDS.items()}
    groups: dict[str, list[Path]] = defaultdict(list)
    for image in sorted(captions):
        hits: Counter[str] = Counter()
        for cap in captions[image]:
            tokens = set(re.findall(r"[a-z]+", cap))
            hits.update(c for c, ws in words.items() if tokens & ws)
        strong = [c for c, n in hits.items() if n >= 3]
        if len(strong) == 1:
            groups[strong[0]].append(coco / image)
    out = {c: ps[:max_per_class] for c, ps in groups.items() if len(ps) >= min_per_class}
    return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _split_classes(classes: dict[str, list[Path]], n_train: int) -> tuple[list[str], list[str]]:
    # The smallest classes train, so the test split keeps the larger ones.
    names = list(classes)
    return names[len(names) - n_train :], names[: len(names) - n_train]


def build_cub(root: Path, classes: dict[str, list[Path]], n_train_classes: int = 2) -> Path:
    """CUB-200-2011 layout: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``, ``train_test_split.txt``,
    ``images/<NNN.name>/<file>``; 200 classes listed, train classes at ids 1.., test classes at ids 101.."""
    train, test = _split_classes(classes, n_train_classes)
    ids = {c: i + 1 for i, c in enumerate(train)} | {c: 101 + i for i, c in enumerate(test)}
    folder = {cid: f"{cid:03d}.{name}" for name, cid in ids.items()}
    all_classes = [f"{i} {folder.get(i, f'{i:03d}.unused_{i:03d}')}" for i in range(1, 201)]
    images, labels, split = [], [], []
    n = 0
    for name, paths in classes.items():
        for p in paths:
            n += 1
            rel = f"{folder[ids[name]]}/{p.name}"
            _link(p, root / "images" / rel)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {ids[name]}")
            split.append(f"{n} {n % 2}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(all_classes) + "\n")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return root


def _cars_rows(root: Path, classes: dict[str, list[Path]], n_train_classes: int) -> list[tuple[str, int]]:
    train, test = _split_classes(classes, n_train_classes)
    ids = {c: i + 1 for i, c in enumerate(train)} | {c: 99 + i for i, c in enumerate(test)}
    rows = []
    for name, paths in classes.items():
        for p in paths:
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            _link(p, root / rel)
            rows.append((rel, ids[name]))
    return rows


def build_cars196(root: Path, classes: dict[str, list[Path]], n_train_classes: int = 2, *, mat: bool = True) -> Path:
    """Cars196 layout: ``car_ims/NNNNNN.jpg`` and ``cars_annos.mat`` (``mat``, needs scipy) or its CSV export
    ``cars_annos.csv`` with ``class_names.txt``; train classes at ids 1.., test classes at ids 99.."""
    rows = _cars_rows(root, classes, n_train_classes)
    names = [f"car model {i}" for i in range(1, 197)]
    if mat:
        from scipy.io import savemat

        dtype = [("relative_im_path", object), ("bbox_x1", object), ("bbox_y1", object), ("bbox_x2", object),
                 ("bbox_y2", object), ("class", object), ("test", object)]  # fmt: skip
        annos = np.zeros((1, len(rows)), dtype=dtype)
        for i, (rel, cid) in enumerate(rows):
            annos[0, i] = (rel, 1, 1, 100, 100, cid, i % 2)
        savemat(str(root / "cars_annos.mat"), {"annotations": annos, "class_names": np.array(names, dtype=object)})
    else:
        lines = ["relative_im_path,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class,test"]
        lines += [f"{rel},1,1,100,100,{cid},{i % 2}" for i, (rel, cid) in enumerate(rows)]
        (root / "cars_annos.csv").write_text("\n".join(lines) + "\n")
        (root / "class_names.txt").write_text("\n".join(names) + "\n")
    return root


def build_sop(root: Path, classes: dict[str, list[Path]], n_train_classes: int = 2) -> Path:
    """Stanford Online Products layout: ``Ebay_train.txt`` / ``Ebay_test.txt`` and ``<super>_final/<file>``; each
    class is a product, super classes number animals (1), sports (2) and the rest (3)."""
    animals = {"cat", "dog", "giraffe", "elephant", "zebra", "horse", "bear", "sheep_cow"}
    sports = {"skateboard", "snow", "surf", "baseball"}
    train, _ = _split_classes(classes, n_train_classes)
    files = {"train": ["image_id class_id super_class_id path"], "test": ["image_id class_id super_class_id path"]}
    n = 0
    for cid, (name, paths) in enumerate(classes.items(), start=1):
        sup = 1 if name in animals else 2 if name in sports else 3
        part = "train" if name in train else "test"
        for p in paths:
            n += 1
            rel = f"{('animal', 'sport', 'other')[sup - 1]}_final/{cid}_{p.name}"
            _link(p, root / rel)
            files[part].append(f"{n} {cid} {sup} {rel}")
    for part, lines in files.items():
        (root / f"Ebay_{part}.txt").write_text("\n".join(lines) + "\n")
    return root


def build_inshop(root: Path, classes: dict[str, list[Path]], n_train_classes: int = 2) -> Path:
    """In-Shop layout: ``list_eval_partition.txt`` (count line, header, ``image item_id status``) and ``img/``; each
    class is an item; test items put their first half of photos in query and the rest in gallery."""
    train, _ = _split_classes(classes, n_train_classes)
    lines = []
    for k, (name, paths) in enumerate(classes.items(), start=1):
        item = f"id_{k:08d}"
        n_query = len(paths) // 2
        for j, p in enumerate(paths):
            rel = f"img/MEN/{name}/{item}/{j:02d}_{p.name}"
            _link(p, root / rel)
            status = "train" if name in train else "query" if j < n_query else "gallery"
            lines.append(f"{rel} {item} {status}")
    text = [str(len(lines)), "image_name item_id evaluation_status", *lines]
    (root / "list_eval_partition.txt").write_text("\n".join(text) + "\n")
    return root


def build_stsb(root: Path, pairs: list[tuple[str, str, float]] = PAIRS) -> Path:
    """STS-B layout: ``sts-dev.csv`` and ``sts-test.csv``, tab separated (genre, file, year, id, score, s1, s2)."""
    root.mkdir(parents=True, exist_ok=True)
    half = len(pairs) // 4
    for name, part in (("dev", pairs[:half]), ("test", pairs)):
        lines = [
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{a}\t{b}" for i, (a, b, score) in enumerate(part)
        ]
        (root / f"sts-{name}.csv").write_text("\n".join(lines) + "\n")
    return root


def build_sick(root: Path, pairs: list[tuple[str, str, float]] = PAIRS) -> Path:
    """SICK layout: ``SICK.txt`` with its 12 columns; relatedness is the STS score mapped to 1-5; every third pair
    is TRAIN, the rest TEST."""
    root.mkdir(parents=True, exist_ok=True)
    columns = ["pair_ID", "sentence_A", "sentence_B", "entailment_label", "relatedness_score", "entailment_AB",
               "entailment_BA", "sentence_A_original", "sentence_B_original", "sentence_A_dataset",
               "sentence_B_dataset", "SemEval_set"]  # fmt: skip
    header = "\t".join(columns)
    lines = [header]
    for i, (a, b, score) in enumerate(pairs, start=1):
        related = 1 + 4 * score / 5
        label = "ENTAILMENT" if score >= 4 else "NEUTRAL"
        part = "TRAIN" if i % 3 == 0 else "TEST"
        lines.append(
            f"{i}\t{a}\t{b}\t{label}\t{related:.1f}\tA_neutral_B\tB_neutral_A\t{a}\t{b}\tFLICKR\tFLICKR\t{part}"
        )
    (root / "SICK.txt").write_text("\n".join(lines) + "\n")
    return root


def build_sts_tsv(root: Path, pairs: list[tuple[str, str, float]] = PAIRS) -> Path:
    """Plain TSV: ``captions.tsv`` (pairs with a header line) and ``objects.tsv`` (the rest, no header)."""
    root.mkdir(parents=True, exist_ok=True)
    half = len(pairs) // 2
    first = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{s}" for a, b, s in pairs[:half]]
    (root / "captions.tsv").write_text("\n".join(first) + "\n")
    (root / "objects.tsv").write_text("\n".join(f"{a}\t{b}\t{s}" for a, b, s in pairs[half:]) + "\n")
    return root


def build_all(out: Path, classes: dict[str, list[Path]], *, n_train_classes: int = 2) -> dict[str, Path]:
    """Every fixture under ``out``; returns dataset name -> root (the keys match ``configs/unimodal.toml``)."""
    return {
        "cub": build_cub(out / "CUB_200_2011", classes, n_train_classes),
        "cars196": build_cars196(out / "cars196", classes, n_train_classes, mat=_has_scipy()),
        "sop": build_sop(out / "Stanford_Online_Products", classes, n_train_classes),
        "inshop": build_inshop(out / "inshop", classes, n_train_classes),
        "stsb": build_stsb(out / "STSBenchmark"),
        "sick": build_sick(out / "SICK"),
        "sts_tsv": build_sts_tsv(out / "sts_tsv"),
    }


def _has_scipy() -> bool:
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco", type=Path, default=COCO, help="the coco-sample folder")
    parser.add_argument("--out", type=Path, default=Path("work_dir/unimodal"), help="where to write the fixtures")
    parser.add_argument("--splits", default="test", help="coco-sample files to take photos from (default: test)")
    parser.add_argument("--min-per-class", type=int, default=3, help="drop classes with fewer photos")
    parser.add_argument("--max-per-class", type=int, default=None, help="photos per class (default: all)")
    args = parser.parse_args()
    if not (args.coco / "train.json").is_file():
        raise SystemExit(f"{args.coco}: coco-sample not found (pass --coco)")
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    classes = coco_classes(args.coco, args.max_per_class, args.min_per_class, splits)
    roots = build_all(args.out, classes)
    print(f"{sum(len(v) for v in classes.values())} photos in {len(classes)} classes: "
          + ", ".join(f"{c} {len(v)}" for c, v in classes.items()))  # fmt: skip
    for name, root in roots.items():
        print(f"{name}: {root}")


if __name__ == "__main__":
    main()
