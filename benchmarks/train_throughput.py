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

    python benchmarks/train_throughput.py [--model ViT-S-32] [--batch 32] [--captions 320] [--workers 2]
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


def open_clip_loop(args: argparse.Namespace, rows: list[tuple[str, str]], device: torch.device, tmp: Path) -> float:
    """Images/s of open_clip_train's train_one_epoch on the rows (written as its CSV)."""
    import open_clip
    from open_clip_train.data import get_csv_dataset
    from open_clip_train.train import train_one_epoch

    table = tmp / "train.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        w.writerows(rows)
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
    )  # fmt: skip
    data = {"train": get_csv_dataset(oc, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)}
    loss = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    train_one_epoch(model, data, loss, 0, optimizer, None, None, None, oc)  # warm-up
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        train_one_epoch(model, data, loss, epoch, optimizer, None, None, None, oc)
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = data["train"].dataloader.num_samples  # drop_last: only whole batches are trained
    return args.epochs * n / (time.perf_counter() - t0)


def itr_bench_loop(args: argparse.Namespace, method: str, split, device: torch.device, tmp: Path) -> float:
    """Images/s of bench.train.fit with ``method`` on the split."""
    from bench.config import config_from_dict
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

    fit(adapter, objective, split, plan.train, device=device, seed=0, freeze_backbone=False, train_features=None,
        validate=lambda: 0.0, progress=False, on_epoch=on_epoch)  # fmt: skip
    return args.epochs * split.n_captions / sum(times[1:])  # the first epoch is the warm-up


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
    tmp = Path(tempfile.mkdtemp(prefix="itr-throughput-"))
    print(f"{args.model} (random init), batch {args.batch}, {len(keep)} captions/epoch, {args.epochs} timed epochs, "
          f"{args.workers} workers, {device}, {'bf16' if args.amp else 'fp32'}, {torch.get_num_threads()} threads")
    oc = open_clip_loop(args, rows, device, tmp)
    print(f"open_clip_train train_one_epoch: {oc:7.1f} images/s")
    ours = {}
    for method in args.methods.split(","):
        ours[method] = itr_bench_loop(args, method, split, device, tmp)
        print(f"itr-bench fit, {method:<12}: {ours[method]:7.1f} images/s")
    if "contrastive" in ours:
        print(f"open_clip / itr-bench contrastive step time ratio: {oc / ours['contrastive']:.3f} (goal <= 1.05)")
        if "cusa" in ours:
            print(f"cusa / contrastive step time ratio: {ours['contrastive'] / ours['cusa']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
