"""The ``embeddings`` adapter: precomputed vectors scored exactly as stored, aligned by order or by id, with errors
that name the file; and ``bench run`` end to end on a synthetic split."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench.adapters.embeddings import caption_ids_of
from bench.adapters.registry import create_adapter
from PIL import Image

from bench.cli.main import main
from bench.config import EvalConfig
from bench.data import load_split
from bench.data.base import RetrievalSplit
from bench.encode.features import encode_split
from bench.errors import DataError
from bench.evaluation.itr import evaluate
from bench.grid.records import read_record
from bench.scoring.itr import itr_metrics

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


def _split(tmp_path: Path, n_img: int = 5, seed: int = 0) -> RetrievalSplit:
    """Random images (PNG) with one to three captions each, and class labels (for i2i)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_img):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (8 + i, 9, 3), dtype=np.uint8)).save(paths[-1])
    c2i = np.repeat(np.arange(n_img), rng.integers(1, 4, size=n_img))
    captions = [f"caption {j} of image {i}" for j, i in enumerate(c2i)]
    ids, labels = [f"id{i}" for i in range(n_img)], rng.integers(0, 2, size=n_img)
    return RetrievalSplit(dataset="tiny", split="test", image_paths=paths, image_ids=ids, captions=captions,
                          caption_to_image=c2i, image_labels=labels)  # fmt: skip


def _vectors(split: RetrievalSplit, dim: int = 8, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(split.n_images, dim)).astype(np.float32)
    txt = (img[split.caption_to_image] + rng.normal(size=(split.n_captions, dim))).astype(np.float32)
    return img, txt


def _save(folder: Path, **arrays: np.ndarray) -> dict[str, str]:
    out = {}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
        out[name] = str(folder / f"{name}.npy")
    return out


def test_split_order_scores_the_stored_vectors_exactly(tmp_path: Path) -> None:
    split = _split(tmp_path)
    img, txt = _vectors(split)
    adapter = create_adapter("embeddings", _save(tmp_path, image_emb=img, text_emb=txt))
    assert adapter.joint_space and adapter.embed_dim == 8 and adapter.trained_parts(False) == []
    got_img, got_txt = encode_split(adapter, split, device=CPU, features=adapter.split_features(split))
    assert torch.equal(got_img, torch.from_numpy(img)) and torch.equal(got_txt, torch.from_numpy(txt))
    out = evaluate(adapter, split, EvalConfig(), device=CPU, progress=False)
    assert out == itr_metrics(img, txt, split.caption_to_image, split.image_labels)


def test_ids_align_shuffled_and_extra_rows(tmp_path: Path) -> None:
    """Id files reorder the rows, and may hold rows of items outside the split."""
    split = _split(tmp_path)
    img, txt = _vectors(split)
    rng = np.random.default_rng(3)
    img_perm, txt_perm = rng.permutation(split.n_images + 2), rng.permutation(split.n_captions + 3)
    img_ids = np.array([*split.image_ids, "other1", "other2"])[img_perm]
    cap_ids = np.array([*caption_ids_of(split), "x#0", "x#1", "y#0"])[txt_perm]
    big_img = np.concatenate([img, rng.normal(size=(2, 8)).astype(np.float32)])[img_perm]
    big_txt = np.concatenate([txt, rng.normal(size=(3, 8)).astype(np.float32)])[txt_perm]
    (tmp_path / "image_ids.txt").write_text("\n".join(img_ids) + "\n")
    opts = _save(tmp_path, image_emb=big_img, text_emb=big_txt, caption_ids=cap_ids)
    adapter = create_adapter("embeddings", {**opts, "image_ids": str(tmp_path / "image_ids.txt")})
    got_img, got_txt = encode_split(adapter, split, device=CPU, features=adapter.split_features(split))
    assert torch.equal(got_img, torch.from_numpy(img)) and torch.equal(got_txt, torch.from_numpy(txt))
    assert evaluate(adapter, split, EvalConfig(), device=CPU, progress=False) == itr_metrics(
        img, txt, split.caption_to_image, split.image_labels
    )


def test_caption_ids_count_within_each_image(tmp_path: Path) -> None:
    split = _split(tmp_path)
    ids = caption_ids_of(split)
    for image in range(split.n_images):
        rows = np.flatnonzero(split.caption_to_image == image)
        assert [ids[j] for j in rows] == [f"{split.image_ids[image]}#{k}" for k in range(len(rows))]


def test_row_count_and_id_errors_name_the_file(tmp_path: Path) -> None:
    split = _split(tmp_path)
    img, txt = _vectors(split)
    opts = _save(tmp_path, image_emb=img, text_emb=txt)
    short = _save(tmp_path, short_img=img[:-1], short_txt=txt[:-1])
    with pytest.raises(DataError, match=r"short_img\.npy: 4 rows, but tiny/test has 5 images"):
        create_adapter("embeddings", {**opts, "image_emb": short["short_img"]}).split_features(split)
    with pytest.raises(DataError, match=r"short_txt\.npy: .* rows, but tiny/test has .* captions"):
        create_adapter("embeddings", {**opts, "text_emb": short["short_txt"]}).split_features(split)
    # An id file: as many ids as rows, no duplicates, and every split item present (the first missing one named).
    (tmp_path / "few.txt").write_text("id0\nid1\n")
    with pytest.raises(DataError, match=r"few\.txt: 2 ids for the 5 rows of .*image_emb\.npy"):
        create_adapter("embeddings", {**opts, "image_ids": str(tmp_path / "few.txt")})
    (tmp_path / "dup.txt").write_text("id0\nid1\nid1\nid3\nid4\n")
    with pytest.raises(DataError, match=r"dup\.txt: image_ids has id 'id1' twice"):
        create_adapter("embeddings", {**opts, "image_ids": str(tmp_path / "dup.txt")})
    (tmp_path / "wrong.txt").write_text("id0\nid1\nidX\nidY\nid4\n")
    adapter = create_adapter("embeddings", {**opts, "image_ids": str(tmp_path / "wrong.txt")})
    with pytest.raises(DataError, match=r"wrong\.txt: no row for image id 'id2' \(tiny/test image 2\)"):
        adapter.split_features(split)
    with pytest.raises(DataError, match=r"wrong\.txt"):
        evaluate(adapter, split, EvalConfig(), device=CPU, progress=False)
    bad_caps = _save(tmp_path, cap_ids=np.array([f"c{j}" for j in range(split.n_captions)]))
    adapter = create_adapter("embeddings", {**opts, "caption_ids": bad_caps["cap_ids"]})
    with pytest.raises(DataError, match=r"cap_ids\.npy: no row for caption id 'id0#0' \(tiny/test caption 0\)"):
        adapter.split_features(split)


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.zeros(5, dtype=np.float32), "2-D"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "row 0 has a non-finite value"),
        (np.array([["a", "b"]]), "must hold numbers"),
    ],
)
def test_bad_arrays_name_the_file(tmp_path: Path, array: np.ndarray, pattern: str) -> None:
    opts = _save(tmp_path, bad=array, good=np.ones((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match=rf"bad\.npy: .*{pattern}"):
        create_adapter("embeddings", {"image_emb": opts["bad"], "text_emb": opts["good"]})
    with pytest.raises(DataError, match=r"missing\.npy: text_emb file not found"):
        create_adapter("embeddings", {"image_emb": opts["good"], "text_emb": str(tmp_path / "missing.npy")})


def test_raw_inputs_encode_after_bind(tmp_path: Path) -> None:
    split = _split(tmp_path)
    img, txt = _vectors(split)
    adapter = create_adapter("embeddings", _save(tmp_path, image_emb=img, text_emb=txt))
    tf = adapter.image_transform()
    images = torch.stack([tf(split.load_image(i)) for i in range(split.n_images)])
    with pytest.raises(DataError, match="not among the bound rows"):
        adapter.encode_image(images)
    adapter.bind(split)
    with torch.no_grad():
        assert torch.equal(adapter.encode_image(images[[3, 0]]), torch.from_numpy(img[[3, 0]]))
        assert torch.equal(adapter.encode_text(adapter.tokenize(split.captions)), torch.from_numpy(txt))
    with pytest.raises(DataError, match="zeroshot"):
        adapter.encode_text(adapter.tokenize(["a caption of no image"]))


def test_different_widths_have_no_joint_space(tmp_path: Path) -> None:
    split = _split(tmp_path)
    img, txt = _vectors(split)
    adapter = create_adapter("embeddings", _save(tmp_path, image_emb=img, text_emb=txt[:, :5]))
    assert adapter.joint_space is False
    out = evaluate(adapter, split, EvalConfig(), device=CPU, progress=False)
    assert out["i2t"] is None and out["t2t"] == itr_metrics(img, txt[:, :5], split.caption_to_image, joint=False)["t2t"]


def test_bench_run_zeroshot_end_to_end(tmp_path: Path) -> None:
    """``bench run --models <embeddings model> --methods zeroshot`` scores the stored vectors of a synthetic split."""
    work, results = tmp_path / "work", tmp_path / "results"
    dataset = {"format": "synthetic", "seed": 0, "n_train": 4, "n_val": 2, "n_test": 6, "image_size": 32}
    split = load_split("synthetic", dataset, "test", work_dir=work)
    img, txt = _vectors(split, dim=16)
    (tmp_path / "ids.txt").write_text("\n".join(reversed(split.image_ids)) + "\n")
    opts = _save(tmp_path, image_emb=img[::-1].copy(), text_emb=txt)
    config = tmp_path / "bench.toml"
    config.write_text(
        f"""
[paths]
results_dir = {json.dumps(str(results))}
work_dir = {json.dumps(str(work))}

[train]
device = "cpu"

[models.external]
adapter = "embeddings"
image_emb = {json.dumps(opts["image_emb"])}
text_emb = {json.dumps(opts["text_emb"])}
image_ids = {json.dumps(str(tmp_path / "ids.txt"))}

[datasets.synthetic]
{chr(10).join(f"{k} = {json.dumps(v)}" for k, v in dataset.items())}
"""
    )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["run", "--config", str(config), "--models", "external", "--datasets", "synthetic",
                   "--methods", "zeroshot", "-q"])  # fmt: skip
    assert rc == 0, err.getvalue()
    record: dict[str, Any] = read_record(results / "runs" / "external" / "synthetic" / "test" / "zeroshot-seed0.json")
    assert record["status"] == "ok" and record["adapter"] == "embeddings"
    want = itr_metrics(img, txt, split.caption_to_image, split.image_labels)
    assert record["metrics"] == json.loads(json.dumps(want))
    assert "external" in out.getvalue()  # the table printed at the end has the model's row
