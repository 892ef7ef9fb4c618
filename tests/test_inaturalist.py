"""iNaturalist 2018 in ROADMAP's split layout: loading, labels from the species folder, broken lists refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import load_split
from bench.errors import DataError
from bench.scoring.unimodal import image_retrieval_metrics

ROWS = ["train_val2018/Plantae/7477/a.jpg", "train_val2018/Plantae/7477/b.jpg", "train_val2018/Aves/3001/c.jpg",
        "train_val2018/Aves/3001/d.jpg", "train_val2018/Aves/3002/e.jpg"]  # fmt: skip


def make_inat(root: Path) -> Path:
    for i, rel in enumerate(ROWS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 10, 200 - 30 * i)).save(root / rel)
    (root / "Inat_dataset_splits").mkdir()
    (root / "Inat_dataset_splits" / "Inaturalist_test_set1.txt").write_text("\n".join(ROWS) + "\n")
    return root


def test_inaturalist_loads_species_labels_and_scores(tmp_path: Path) -> None:
    root = make_inat(tmp_path)
    split = load_split("inat", {"format": "inaturalist", "root": str(root)}, "test", work_dir=tmp_path)
    assert list(split.image_ids) == ROWS and split.labels.tolist() == [7477, 7477, 3001, 3001, 3002]
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32)
    m = image_retrieval_metrics(emb, split.labels)
    assert m["n_queries"] == 4 and m["r1"] == 100.0  # species 3002 has one image: no positive, not a query


def test_inaturalist_refuses_broken_lists(tmp_path: Path) -> None:
    root = make_inat(tmp_path)
    spec = {"format": "inaturalist", "root": str(root)}
    listing = root / "Inat_dataset_splits" / "Inaturalist_test_set1.txt"
    listing.write_text("\n".join([*ROWS, "train_val2018/Aves/oops/f.jpg"]) + "\n")
    with pytest.raises(DataError, match=r"Inaturalist_test_set1.txt line 6: field 'species folder' must be an integer"):
        load_split("inat", spec, "test", work_dir=tmp_path)
    listing.write_text("\n".join([*ROWS, "train_val2018/Aves/3001/missing.jpg"]) + "\n")
    with pytest.raises(DataError, match=r"line 6: image .*missing.jpg is listed but does not exist"):
        load_split("inat", spec, "test", work_dir=tmp_path)
    with pytest.raises(DataError, match="Inaturalist_train_set1.txt"):
        load_split("inat", spec, "train", work_dir=tmp_path)
