"""ECCV Caption and CxC: the harness's exact scorer against ``eccv_caption.Metrics`` on the package's 5K test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

eccv_caption = pytest.importorskip("eccv_caption", reason="pip install eccv_caption (the test extra has it)")

from bench.scoring.eccv import eccv_annotations, eccv_cxc_metrics  # noqa: E402


def _coco_5k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The package's 5K test images, its 25,000 caption ids, and each caption's image row."""
    data = Path(eccv_caption.__file__).parent / "data"
    cap_ids = np.load(data / "coco_test_ids.npy").astype(np.int64)
    c2i_ids = {int(k): int(v[0]) for k, v in json.loads((data / "original_caption_to_image.json").read_text()).items()}
    image_ids = np.array(sorted({c2i_ids[int(c)] for c in cap_ids}), dtype=np.int64)
    row = {int(x): i for i, x in enumerate(image_ids)}
    return image_ids, cap_ids, np.array([row[c2i_ids[int(c)]] for c in cap_ids])


def _ranked_lists(queries: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray, length: dict[int, int],
                  query_ids: np.ndarray) -> dict[int, list[int]]:  # fmt: skip
    """Each wanted query's top ``length`` gallery ids by dot product (float64, no ties on random data)."""
    out: dict[int, list[int]] = {}
    want = np.array([i for i, q in enumerate(query_ids) if int(q) in length])
    for s in range(0, want.size, 2000):
        rows = want[s : s + 2000]
        scores = queries[rows].astype(np.float64) @ gallery.astype(np.float64).T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :60]
        for r, t in zip(rows, top, strict=True):
            out[int(query_ids[r])] = [int(x) for x in gallery_ids[t[: length[int(query_ids[r])]]]]
    return out


def test_eccv_and_cxc_equal_eccv_caption_metrics() -> None:
    image_ids, cap_ids, c2i = _coco_5k()
    assert image_ids.size == 5000 and cap_ids.size == 25000
    rng = np.random.default_rng(0)
    img = rng.normal(size=(5000, 32)).astype(np.float32)
    txt = img[c2i] + 1.2 * rng.normal(size=(25000, 32)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    ours = eccv_cxc_metrics(img, txt, image_ids.tolist(), cap_ids.tolist())

    ann = eccv_annotations()
    lengths = {}
    for direction in ("i2t", "t2i"):
        need: dict[int, int] = {}
        for bench_name in ("eccv", "cxc"):
            for q, pos in ann[bench_name][direction].items():
                need[q] = max(need.get(q, 10), len(pos))  # never shorter than a query's R: the peer reads the top R
        lengths[direction] = need
    i2t = _ranked_lists(img, txt, cap_ids, lengths["i2t"], image_ids)
    t2i = _ranked_lists(txt, img, image_ids, lengths["t2i"], cap_ids)
    peer = eccv_caption.Metrics().compute_all_metrics(
        i2t, t2i, target_metrics=("eccv_r1", "eccv_map_at_r", "eccv_rprecision", "cxc_recalls"), Ks=(1, 5, 10)
    )
    for direction in ("i2t", "t2i"):
        e = ours["eccv"][direction]
        assert e["map_at_r"] == pytest.approx(100 * peer["eccv_map_at_r"][direction], abs=0.01)
        assert e["r_precision"] == pytest.approx(100 * peer["eccv_rprecision"][direction], abs=0.01)
        assert e["r1"] == pytest.approx(100 * peer["eccv_r1"][direction], abs=0.01)
        for k in (1, 5, 10):
            assert ours["cxc"][direction][f"r{k}"] == pytest.approx(100 * peer[f"cxc_r{k}"][direction], abs=0.01)
    assert ours["eccv"]["i2t"]["n_queries"] == 1261 and ours["eccv"]["t2i"]["n_queries"] == 1332
    assert 0 < ours["eccv"]["i2t"]["map_at_r"] < ours["eccv"]["i2t"]["r1"] < 100  # a non-trivial problem


def test_eccv_ids_must_fit_the_rows() -> None:
    from bench.errors import DataError

    emb = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(DataError, match="image ids for"):
        eccv_cxc_metrics(emb, emb, [1], [1, 2])
    with pytest.raises(DataError, match="listed twice"):
        eccv_cxc_metrics(emb, emb, [1, 1], [1, 2])
    with pytest.raises(DataError, match="none of the annotated queries"):
        eccv_cxc_metrics(emb, emb, [1, 2], [3, 4])


def test_bench_score_eccv_contract(tmp_path: Path) -> None:
    from tiny_grid import run_main

    image_ids, cap_ids, c2i = _coco_5k()
    rng = np.random.default_rng(1)
    img = rng.normal(size=(5000, 16)).astype(np.float32)
    txt = img[c2i] + rng.normal(size=(25000, 16)).astype(np.float32)
    np.save(tmp_path / "I.npy", img)
    np.save(tmp_path / "T.npy", txt)
    np.save(tmp_path / "M.npy", c2i)
    (tmp_path / "I.txt").write_text("\n".join(map(str, image_ids)) + "\n")
    (tmp_path / "C.txt").write_text("\n".join(map(str, cap_ids)) + "\n")
    base = ["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy"),
            "--text-to-image", str(tmp_path / "M.npy"), "--topk", "0"]  # fmt: skip
    rc, out, err = run_main([*base, "--image-ids", str(tmp_path / "I.txt"), "--caption-ids", str(tmp_path / "C.txt"),
                             "--eccv", "--json"])  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    want = eccv_cxc_metrics(img, txt, image_ids.tolist(), cap_ids.tolist())
    assert res["eccv"] == want["eccv"] and res["cxc"] == want["cxc"]
    assert set(res["eccv"]["i2t"]) == {"map_at_r", "r_precision", "r1", "n_queries"}
    assert set(res["cxc"]["t2i"]) == {"r1", "r5", "r10", "n_queries"}
    rc, _, err = run_main([*base, "--eccv"])
    assert rc == 2 and "--eccv needs --image-ids" in err
    (tmp_path / "bad.txt").write_text("1\nx\n")
    rc, _, err = run_main([*base, "--eccv", "--image-ids", str(tmp_path / "bad.txt"), "--caption-ids",
                           str(tmp_path / "C.txt")])  # fmt: skip
    assert rc == 2 and "bad.txt: entry 2 is 'x'" in err


def test_coco_preset_gives_caption_ids_from_captions_val2014(tmp_path: Path) -> None:
    from test_data import _karpathy, _write_json

    from bench.data import load_split
    from bench.errors import DataError

    karpathy = _karpathy(tmp_path, coco=True)
    _write_json(tmp_path / "dataset_coco.json", karpathy)
    anns, next_id = [], 500
    for row in karpathy["images"]:
        if row["filepath"] == "val2014":  # val, test and restval images are val2014 photos
            for s in row["sentences"]:
                anns.append({"image_id": row["cocoid"], "id": next_id, "caption": "  " + s["raw"].upper() + " "})
                next_id += 1
    _write_json(tmp_path / "captions_val2014.json", {"annotations": anns[::-1]})  # any order
    spec = {"format": "coco", "root": str(tmp_path), "image_dir": "images", "captions_file": "captions_val2014.json"}
    test = load_split("coco", spec, "test", work_dir=tmp_path)
    by_text = {a["caption"].strip().lower(): a["id"] for a in anns}
    assert list(test.caption_ids) == [by_text[c] for c in test.captions]  # matched by image and text, not order
    assert load_split("coco", spec, "train", work_dir=tmp_path).caption_ids is None  # train2014 images: not in it
    next(a for a in anns if a["image_id"] == 1003)["caption"] = "something else"  # a test image's caption
    _write_json(tmp_path / "captions_val2014.json", {"annotations": anns})
    with pytest.raises(DataError, match=r"captions_val2014.json: image 1003 has no caption 'test 3 s0'"):
        load_split("coco", spec, "test", work_dir=tmp_path)


def test_eccv_blocks_of_a_split_with_caption_ids() -> None:
    from types import SimpleNamespace

    import torch

    from bench.config import EvalConfig
    from bench.evaluation.itr import eccv_blocks

    image_ids, cap_ids, c2i = _coco_5k()
    rng = np.random.default_rng(2)
    img = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(5000, 8)).astype(np.float32)), dim=1)
    txt = torch.nn.functional.normalize(img[torch.from_numpy(c2i)] + torch.randn(25000, 8), dim=1)
    split = SimpleNamespace(image_ids=[str(i) for i in image_ids], caption_ids=cap_ids.tolist(), dataset="coco",
                            split="test")  # fmt: skip
    got = eccv_blocks((img, txt), split, EvalConfig(), torch.device("cpu"))
    want = eccv_cxc_metrics(img.numpy(), txt.numpy(), image_ids.tolist(), cap_ids.tolist(), normalize=False)
    assert got == want and set(got) == {"eccv", "cxc"}


def test_caption_ids_follow_the_caption_protocol_options(tmp_path: Path) -> None:
    from test_data import _karpathy, _write_json

    from bench.data import load_split

    karpathy = _karpathy(tmp_path, coco=True)
    _write_json(tmp_path / "dataset_coco.json", karpathy)
    anns = [{"image_id": r["cocoid"], "id": 10 * r["cocoid"] + k, "caption": s["raw"]}
            for r in karpathy["images"] for k, s in enumerate(r["sentences"])]  # fmt: skip
    _write_json(tmp_path / "captions_val2014.json", {"annotations": anns})
    spec = {"format": "coco", "root": str(tmp_path), "image_dir": "images", "captions_file": "captions_val2014.json",
            "captions_per_image": 2, "pre_caption": True}  # fmt: skip
    test = load_split("coco", spec, "test", work_dir=tmp_path)
    assert test.n_captions == 4 and list(test.caption_ids) == [10030, 10031, 10050, 10051]
