"""End-to-end fine-tuning throughput: itr-bench's ``fit`` (contrastive, and cusa with cached teachers) against
open_clip's own training loop (``open_clip_train.train.train_one_epoch``), same model, images, batch, optimizer,
precision and DataLoader workers, in one run.

Both loops fine-tune the same randomly initialised open_clip architecture (``--model``, default ``ViT-S-32`` on a
CPU; ``ViT-B-32`` at batch 128 on a GPU) on the same ``--captions`` caption rows of coco-sample's train split (each
with its photo), decoded and transformed by the model's own eval transform in ``--workers`` DataLoader workers, fp32
(bf16 autocast on CUDA with ``--amp``), AdamW at a constant learning rate. open_clip's loop reads a CSV of the same
rows through its own ``CsvDataset`` and DataLoader. Each loop runs one untimed warm-up epoch (workers start, caches
fill), then ``--epochs`` timed epochs; images/s = caption rows trained per second. CUSA's teacher features are
computed before timing (the offline default teachers), as the paper's released setup caches them.

With ``--validate`` each loop also validates after every epoch, as a fine-tuning run does, on coco-sample's test split
(201 photos, 1,000 captions): open_clip with its own ``open_clip_train.train.evaluate`` (val loss and retrieval
metrics), itr-bench with the validation its grid runs (exact ranks, the selection metric). Seconds per epoch then
include validation on both sides, which is not the same work: open_clip's CSV pairs make it encode one image per
caption row (1,000 for the test split), the harness encodes each image once (201). Compare the loops themselves
without ``--validate``; ``--val-captions N`` validates on the first N captions only (a dry run on a CPU).

    python benchmarks/train_throughput.py [--model ViT-S-32] [--batch 32] [--captions 320] [--workers 2] [--validate]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COCO = ROOT.parent / "shared" / "data" / "coco-sample"


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    return path


def open_clip_loop(
    args: argparse.Namespace, rows: list[tuple[str, str]], val_rows: list[tuple[str, str]] | None,
    device: torch.device, tmp: Path,
) -> tuple[float, float]:  # fmt: skip
    """Images/s and seconds per epoch of open_clip_train's train_one_epoch on the rows (written as its CSV), each
    epoch followed by its own ``evaluate`` on ``val_rows`` when given."""
    import open_clip
    from open_clip_train.data import get_csv_dataset
    from open_clip_train.train import evaluate, train_one_epoch

    table = _write_csv(tmp / "train.csv", rows)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None, output_dict=True)
    model = model.to(device)
    tokenizer = open_clip.get_tokenizer(args.model)
    oc = SimpleNamespace(
        train_data=str(table), csv_img_key="filepath", csv_caption_key="title", csv_separator="\t",
        batch_size=args.batch, workers=args.workers, distributed=False, train_num_samples=None, world_size=1,
        device=str(device), precision="amp_bf16" if args.amp else "fp32", accum_freq=1, distill=False,
        skip_scheduler=True, grad_clip_norm=None, log_every_n_steps=10**9, wandb=False, rank=0, local_rank=0,
        save_logs=False, horovod=False, grad_checkpointing=False, batch_size_val=None, val_frequency=1,
        epochs=args.epochs + 1, zeroshot_frequency=0, model=args.model,
    )  # fmt: skip
    data = {"train": get_csv_dataset(oc, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)}
    if val_rows:
        oc.val_data = str(_write_csv(tmp / "val.csv", val_rows))
        data["val"] = get_csv_dataset(oc, preprocess, is_train=False, epoch=0, tokenizer=tokenizer)
    loss = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    def epoch_of(epoch: int) -> None:
        train_one_epoch(model, data, loss, epoch, optimizer, None, None, None, oc)
        if val_rows:
            evaluate(model, data, epoch + 1, oc, tokenizer=tokenizer)

    epoch_of(0)  # warm-up
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        epoch_of(epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    n = data["train"].dataloader.num_samples  # drop_last: only whole batches are trained
    return args.epochs * n / seconds, seconds / args.epochs


def itr_bench_loop(
    args: argparse.Namespace, method: str, split, val, device: torch.device, tmp: Path
) -> tuple[float, float]:  # fmt: skip
    """Images/s and seconds per epoch of bench.train.fit with ``method`` on the split, validating on ``val`` after
    every epoch (as the grid does) when given."""
    from bench.config import EvalConfig, config_from_dict
    from bench.evaluation.itr import evaluate, metric_value
    from bench.grid.cell import Cell
    from bench.grid.pipeline import build_adapter, make_objective, plan_cell
    from bench.train.fit import fit

    cfg = config_from_dict({
        "paths": {"work_dir": str(tmp / "work"), "results_dir": str(tmp / "results")},
        "train": {"epochs": args.epochs + 1, "batch_size": args.batch, "lr": args.lr, "weight_decay": 0.0,
                  "warmup_epochs": 0.0, "min_lr_ratio": 1.0, "grad_clip": 0.0, "freeze_backbone": False,
                  "amp": args.amp, "device": str(device), "num_workers": args.workers, "loss": "infonce"},
        "models": {"m": {"adapter": "clip", "checkpoint": args.model, "pretrained": "random"}},
        "datasets": {"d": {"format": "flat_json", "root": str(COCO)}},
    }, "train_throughput")  # fmt: skip
    plan = plan_cell(Cell("m", "d", method, 0, "test"), cfg, progress=False)
    torch.manual_seed(0)
    adapter = build_adapter(plan)
    objective = make_objective(plan, adapter, split)  # cusa: the teachers' features, computed and cached here
    times: list[float] = []

    def on_epoch(row: dict[str, float]) -> None:
        times.append(row["seconds"])

    def validate() -> float:
        if val is None:
            return 0.0
        m = evaluate(adapter, val, EvalConfig(bootstrap=0), device=device, objective=objective, progress=False,
                     rerank=False, topk=0)  # fmt: skip
        return metric_value(m, "rsum")

    fit(adapter, objective, split, plan.train, device=device, seed=0, freeze_backbone=False, train_features=None,
        validate=validate, progress=False, on_epoch=on_epoch)  # fmt: skip
    seconds = sum(times[1:])  # the first epoch is the warm-up
    return args.epochs * split.n_captions / seconds, seconds / args.epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-S-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--captions", type=int, default=320, help="caption rows per epoch (a multiple of --batch)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--methods", default="contrastive,cusa")
    ap.add_argument("--validate", action="store_true", help="validate on coco-sample's test split after each epoch")
    ap.add_argument("--val-captions", type=int, default=None, help="validate on the first N test captions (dry runs)")
    args = ap.parse_args()
    if not (COCO / "train.json").is_file():
        sys.exit(f"{COCO} is absent")
    from bench.data import load_split

    device = torch.device(args.device)
    full = load_split("d", {"format": "flat_json", "root": str(COCO)}, "train", work_dir=Path("/none"))
    keep = np.arange(min(args.captions, full.n_captions))
    split = dataclasses.replace(full, captions=[full.captions[j] for j in keep],
                                caption_to_image=full.caption_to_image[keep], _fingerprint=[])  # fmt: skip
    rows = [(str(full.image_paths[full.caption_to_image[j]]), full.captions[j]) for j in keep]
    val, val_rows = None, None
    if args.validate:
        val = load_split("d", {"format": "flat_json", "root": str(COCO)}, "test", work_dir=Path("/none"))
        if args.val_captions:
            cut = min(args.val_captions, val.n_captions)
            val = dataclasses.replace(val, captions=val.captions[:cut], caption_to_image=val.caption_to_image[:cut],
                                      _fingerprint=[])  # fmt: skip
        val_rows = [(str(val.image_paths[val.caption_to_image[j]]), val.captions[j]) for j in range(val.n_captions)]
    tmp = Path(tempfile.mkdtemp(prefix="itr-throughput-"))
    print(f"{args.model} (random init), batch {args.batch}, {len(keep)} captions/epoch, {args.epochs} timed epochs, "
          f"{args.workers} workers, {device}, {'bf16' if args.amp else 'fp32'}, {torch.get_num_threads()} threads, "
          f"{'validation on coco-sample test each epoch' if args.validate else 'no validation'}")
    oc, oc_epoch = open_clip_loop(args, rows, val_rows, device, tmp)
    print(f"open_clip_train train_one_epoch{' + evaluate' if args.validate else ''}: {oc:7.1f} images/s, "
          f"{oc_epoch:6.2f} s/epoch")
    ours = {}
    for method in args.methods.split(","):
        ours[method], epoch_s = itr_bench_loop(args, method, split, val, device, tmp)
        print(f"itr-bench fit, {method:<12}: {ours[method]:7.1f} images/s, {epoch_s:6.2f} s/epoch")
    if "contrastive" in ours:
        print(f"open_clip / itr-bench contrastive step time ratio: {oc / ours['contrastive']:.3f} (goal <= 1.05)")
        if "cusa" in ours:
            print(f"cusa / contrastive step time ratio: {ours['contrastive'] / ours['cusa']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
