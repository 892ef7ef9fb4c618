"""Exhaustive pair scoring of a cross-attention model: the harness against the reference implementation.

One SGR (or SAF) model at random, saved in the authors' layout, scores every pair of ``--images`` images x 5 captions
each, twice:

* the reference, as Paranioar/SGRAF's ``evaluation.py`` runs it (``tests/reference_sgraf.py``): ``encode_data`` then
  ``shard_attn_scores`` with its shards of 100, ``EncoderSimilarity.forward`` looping over captions in Python;
* the harness: the ``sgraf`` adapter loading that checkpoint, ``encode_split`` then
  :func:`bench.evaluation.pairs.score_all_pairs` (blocks of many images x many captions within ``--memory-mb``).

It prints both similarity stages' pairs/s, their ratio, the largest score difference, and what COCO 5K (5,000 x
25,000 pairs) takes at each rate on one such device. Captions
are 8-18 random words (COCO's are 10.5 on average, plus ``<start>`` and ``<end>``); regions 36 x ``--img-dim``.

    python benchmarks/pair_scoring.py --images 500 --embed-size 256 --sim-dim 64
    python benchmarks/pair_scoring.py --images 100 --embed-size 1024 --sim-dim 256   # the published width
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

COCO_5K_PAIRS = 5000 * 25000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--module", choices=["SGR", "SAF"], default="SGR")
    ap.add_argument("--embed-size", type=int, default=256)
    ap.add_argument("--sim-dim", type=int, default=64)
    ap.add_argument("--img-dim", type=int, default=2048)
    ap.add_argument("--memory-mb", type=float, default=256.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from bench.adapters.registry import create_adapter
    from reference_sgraf import RefSGRAF, ref_encode_data, ref_shard_attn_scores, save_reference

    from bench.data import load_split
    from bench.encode.features import encode_split
    from bench.evaluation.pairs import score_all_pairs

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(1000)]
    arch = {"img_dim": args.img_dim, "word_dim": 300, "embed_size": args.embed_size, "sim_dim": args.sim_dim,
            "num_layers": 1, "bi_gru": True, "no_imgnorm": False, "no_txtnorm": False, "sgr_step": 3}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feats = rng.random((args.images, 36, args.img_dim), dtype=np.float32)
        np.save(root / "test_ims.npy", feats)
        caps = [" ".join(rng.choice(words, int(rng.integers(8, 19)))) for _ in range(5 * args.images)]
        (root / "test_caps.txt").write_text("\n".join(caps) + "\n")
        vocab = {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", *words])}
        (root / "vocab.json").write_text(json.dumps({"word2idx": vocab}))
        ref = RefSGRAF(arch, len(vocab), args.module, seed=0)
        save_reference(ref, root / "model_best.pth.tar", {**arch, "module_name": args.module, "vocab_size": len(vocab)})
        for m in (ref.img_enc, ref.txt_enc, ref.sim_enc):
            m.to(device)
        split = load_split("bench", {"format": "precomp", "root": str(root)}, "test", work_dir=root)
        adapter = create_adapter("sgraf", {"checkpoint": str(root / "model_best.pth.tar"),
                                           "vocab": str(root / "vocab.json")}).to(device).eval()  # fmt: skip

        # The reference: encode, keep every 5th image row (its im_div), then the shard loop.
        token_ids = [adapter.vocab.encode(c) for c in caps]
        img_embs, cap_embs, cap_lens = ref_encode_data(ref, feats, token_ids, batch_size=128, device=device)
        img_embs = np.array([img_embs[i] for i in range(0, len(img_embs), 5)])
        t0 = time.perf_counter()
        expected = ref_shard_attn_scores(ref.sim_enc, img_embs, cap_embs, cap_lens, shard_size=100, device=device)
        ref_s = time.perf_counter() - t0

        img, txt = encode_split(adapter, split, device=device, features=adapter.split_features(split), progress=False)
        t0 = time.perf_counter()
        got = score_all_pairs(adapter, img, txt, memory_mb=args.memory_mb, device=device)
        ours_s = time.perf_counter() - t0

    pairs = args.images * 5 * args.images
    diff = float(np.abs(got.numpy() - expected).max())
    out = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "module": args.module, "images": args.images, "captions": 5 * args.images, "pairs": pairs,
        "embed_size": args.embed_size, "sim_dim": args.sim_dim, "memory_mb": args.memory_mb,
        "reference_s": round(ref_s, 2), "harness_s": round(ours_s, 2),
        "reference_pairs_per_s": round(pairs / ref_s), "harness_pairs_per_s": round(pairs / ours_s),
        "speedup": round(ref_s / ours_s, 2), "max_abs_diff": diff,
        "coco5k_reference_h": round(COCO_5K_PAIRS / (pairs / ref_s) / 3600, 2),
        "coco5k_harness_h": round(COCO_5K_PAIRS / (pairs / ours_s) / 3600, 2),
    }  # fmt: skip
    print(f"{out['module']} (embed {args.embed_size}, sim {args.sim_dim}) on {out['device']}: "
          f"{args.images} images x {5 * args.images} captions = {pairs:,} pairs")  # fmt: skip
    print(f"  reference (per-caption loop, shards of 100): {ref_s:8.2f} s  {pairs / ref_s:12,.0f} pairs/s")
    print(f"  harness (blocks, {args.memory_mb:g} MB):            {ours_s:8.2f} s  {pairs / ours_s:12,.0f} pairs/s")
    print(f"  speed-up {ref_s / ours_s:.2f}x; largest score difference {diff:.2e}")
    print(f"  COCO 5K (125M pairs) at these rates: reference {out['coco5k_reference_h']:.2f} h, harness "
          f"{out['coco5k_harness_h']:.2f} h on one such device (the caption blocks are independent: / N on N)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
