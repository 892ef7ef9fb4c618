"""``bench score``: exact retrieval metrics for embeddings saved as ``.npy`` files.

Row j of the text embeddings is caption j and ``--text-to-image`` maps it to its image's row, so any model's outputs
can be scored without the harness's loaders::

    bench score --image-emb I.npy --text-emb T.npy --text-to-image M.npy --json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cli.common import int_at_least
from bench.errors import DataError
from bench.scoring import TIE_RULE

if TYPE_CHECKING:
    import numpy as np

__all__ = ["add_score_parser", "run_score"]

log = logging.getLogger(__name__)

_PROTOCOLS = ("i2t", "t2i", "t2t", "i2i")
_count_arg = int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` subcommand (``func=run_score``) to an argparse subparsers object."""
    p = subparsers.add_parser(
        "score",
        help="exact i2t/t2i/t2t recall from saved embeddings (.npy)",
        description=f"Exact retrieval metrics from saved embeddings. Ties: {TIE_RULE}.",
        epilog="""examples:
  bench score --image-emb I.npy --text-emb T.npy --text-to-image M.npy
  bench score --image-emb I.npy --text-emb T.npy --text-to-image M.npy --json --memory-mb 1024
  bench score ... --bootstrap 1000 --seed 0 --json     # adds "ci95": 95% intervals, images resampled
  bench score ... --per-query ranks.npz                # every query's rank and top-k, indexed like the inputs""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image-emb", required=True, type=Path, metavar="I.npy", help="[N_img, D] image embeddings")
    p.add_argument("--text-emb", required=True, type=Path, metavar="T.npy", help="[N_txt, D] caption embeddings")
    p.add_argument(
        "--text-to-image", required=True, type=Path, metavar="M.npy", help="int [N_txt]: M[j] = image row of caption j"
    )
    p.add_argument("--labels", type=Path, metavar="L.npy", help="optional int [N_img] image labels; adds i2i")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-normalize", action="store_true", help="embeddings are already L2-normalised; score as is")
    p.add_argument(
        "--memory-mb", type=_positive_float, default=256.0, help="memory for one strip of scores (default 256)"
    )
    p.add_argument("--ks", default="1,5,10", help="comma-separated Recall@K cut-offs (default 1,5,10; RSUM's kept)")
    p.add_argument("--topk", type=_count_arg, default=10, help="top-k list per query: nDCG@10, mAP@R (default 10)")
    p.add_argument("--per-query", type=Path, metavar="FILE.npz", help="write every query's rank and top-k list")
    p.add_argument("--bootstrap", type=_count_arg, default=0, metavar="N",
                   help="N image-clustered bootstrap resamples: adds 95%% intervals (ci95)")  # fmt: skip
    p.add_argument("--seed", type=_count_arg, default=0, help="the bootstrap's seed (default 0)")
    p.add_argument("--image-ids", type=Path, metavar="I.txt", help="COCO image id of each image row, one per line")
    p.add_argument("--caption-ids", type=Path, metavar="C.txt", help="COCO caption annotation id of each caption row")
    p.add_argument("--eccv", action="store_true",
                   help="add ECCV Caption (mAP@R, R-Precision, R@1) and CxC (R@1/5/10) of the COCO 5K test set; needs "
                        "--image-ids, --caption-ids and the eccv-caption package")  # fmt: skip
    p.set_defaults(func=run_score)


def _load_id_lines(path: Path, what: str) -> list[int]:
    try:
        lines = Path(path).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    out = []
    for n, text in enumerate(lines, 1):
        try:
            out.append(int(text))
        except ValueError:
            raise DataError(f"{path}: entry {n} is {text!r}, not an integer {what}") from None
    return out


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise DataError(f"--ks: expected comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise DataError(f"--ks: cut-offs must be integers >= 1, got {text!r}")
    return ks


def _load(path: Path) -> np.ndarray:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npy ({e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive loads as a mapping
        raise DataError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    return arr


def _load_embeddings(path: Path) -> np.ndarray:
    import numpy as np

    arr = _load(path)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D [N, D] array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.dtype == np.bool_:
        raise DataError(f"{path}: expected float embeddings, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: empty array of shape {arr.shape}")
    if not arr.dtype.isnative:  # a big-endian file: same values, this machine's byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: row {int(np.flatnonzero(~finite)[0])} has a non-finite value (nan or inf)")
    big = np.abs(arr).max(axis=1) > np.finfo(np.float32).max
    if big.any():
        raise DataError(
            f"{path}: row {int(np.flatnonzero(big)[0])} has a value beyond float32's range (scores are float32)"
        )
    return arr


def _load_ids(path: Path, what: str) -> np.ndarray:
    import numpy as np

    arr = _load(path)
    if arr.ndim != 1:
        raise DataError(f"{path}: expected a 1-D array of {what}, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: expected integer {what}, got dtype {arr.dtype}")
    return arr.astype(np.int64)  # native byte order whatever the file's


def _format_table(metrics: dict[str, Any]) -> str:
    ci = metrics.get("ci95") or {}
    lines = [f"{'':5} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'MRR':>7} {'mAP@R':>7} {'medr':>7} {'meanr':>9}"]
    for name in _PROTOCOLS:
        s = metrics.get(name)
        if s is None:
            lines.append(f"{name:5} {'n/a':>7}")
        else:
            mapr = f"{s['map_at_r']:7.2f}" if "map_at_r" in s else f"{'-':>7}"
            lines.append(f"{name:5} {s['r1']:7.2f} {s['r5']:7.2f} {s['r10']:7.2f} {s['mrr']:7.2f} {mapr} "
                         f"{s['medr']:7.1f} {s['meanr']:9.2f}")  # fmt: skip
    rsum = metrics.get("rsum")
    line = f"rsum  {'n/a' if rsum is None else f'{rsum:.2f}'}"
    if rsum is not None and "rsum" in ci:
        line += f"  95% CI [{ci['rsum'][0]:.2f}, {ci['rsum'][1]:.2f}] ({metrics['bootstrap']['resamples']} resamples)"
    lines.append(line)
    for bench_name in ("eccv", "cxc"):
        block = metrics.get(bench_name)
        if block:
            for d, m in block.items():
                values = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "n_queries")
                lines.append(f"{bench_name:5} {d}: {values} ({m['n_queries']:,} queries)")
    return "\n".join(lines)


def run_score(args: argparse.Namespace) -> int:
    """Score saved embeddings and print the metrics (JSON with ``--json``); returns the exit status.

    Raises:
        DataError: a file is missing or unreadable, or its shape, dtype, length or ids do not fit the others.
    """
    import numpy as np

    from bench.scoring.itr import itr_queries, recall_ks, summarize

    ks = recall_ks(_ks(args.ks))
    img_path, txt_path, map_path = Path(args.image_emb), Path(args.text_emb), Path(args.text_to_image)
    images = _load_embeddings(img_path)
    texts = _load_embeddings(txt_path)
    c2i = _load_ids(map_path, "image ids")
    if images.shape[1] != texts.shape[1]:
        raise DataError(
            f"{img_path} has dimension {images.shape[1]} but {txt_path} has {texts.shape[1]}; "
            "image and text embeddings must share one space"
        )
    if c2i.shape[0] != texts.shape[0]:
        raise DataError(f"{map_path}: has {c2i.shape[0]} entries but {txt_path} has {texts.shape[0]} rows")
    bad = np.flatnonzero((c2i < 0) | (c2i >= images.shape[0]))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{map_path}: row {row} has image id {c2i[row]}, out of range [0, {images.shape[0]})")
    labels = None
    if args.labels is not None:
        labels_path = Path(args.labels)
        labels = _load_ids(labels_path, "labels")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{labels_path}: has {labels.shape[0]} entries but {img_path} has {images.shape[0]} rows")

    log.info("scoring %d images x %d captions from %s and %s", images.shape[0], texts.shape[0], img_path, txt_path)
    queries = itr_queries(images, texts, c2i, labels, joint=True, normalize=not args.no_normalize,
                          topk=args.topk, memory_mb=args.memory_mb)  # fmt: skip
    metrics = summarize(queries, ks)
    result: dict[str, Any] = {name: metrics[name] for name in _PROTOCOLS} | {"rsum": metrics["rsum"]}
    if args.per_query is not None:
        from bench.scoring.perquery import save_per_query

        try:
            save_per_query(Path(args.per_query), queries, c2i, images.shape[0], image_label=labels,
                           meta={"image_emb": str(img_path), "text_emb": str(txt_path)})  # fmt: skip
        except OSError as e:
            raise DataError(f"{args.per_query}: cannot write the per-query file ({e.strerror or e})") from None
        log.info("per-query ranks written to %s", args.per_query)
    if args.bootstrap:
        from bench.stats.bootstrap import BootstrapConfig, confidence_intervals, query_values

        cfg = BootstrapConfig(resamples=args.bootstrap, seed=args.seed)
        result["ci95"] = confidence_intervals(query_values(queries, ks), images.shape[0], cfg)
        result["bootstrap"] = {"resamples": cfg.resamples, "seed": cfg.seed, "level": cfg.level, "unit": "image"}
    if args.eccv:
        from bench.scoring.eccv import eccv_cxc_metrics

        if args.image_ids is None or args.caption_ids is None:
            raise DataError("--eccv needs --image-ids I.txt and --caption-ids C.txt (COCO ids of the rows)")
        image_ids = _load_id_lines(args.image_ids, "COCO image id")
        caption_ids = _load_id_lines(args.caption_ids, "COCO caption id")
        for path, ids, rows in ((args.image_ids, image_ids, images.shape[0]), (args.caption_ids, caption_ids,
                                                                               texts.shape[0])):  # fmt: skip
            if len(ids) != rows:
                raise DataError(f"{path}: {len(ids)} ids for {rows} rows")
        result.update(eccv_cxc_metrics(images, texts, image_ids, caption_ids, normalize=not args.no_normalize,
                                       memory_mb=args.memory_mb))  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(_format_table(result) + "\n")
    return 0
