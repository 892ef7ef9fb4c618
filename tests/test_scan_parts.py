"""A scan cut into parts (what the tasks of a sharded evaluation run) merges into the whole scan, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.scoring.itr_scan import itr_scan, itr_scan_part, merge_itr_parts
from bench.scoring.sibling_scan import merge_sibling_parts, sibling_scan, sibling_scan_part
from bench.scoring.tiles import part_ranges


def _problem(seed: int, n_img: int = 90, d: int = 16) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_image = rng.integers(0, 7, size=n_img)  # 0: captionless images; up to 6 captions each
    c2i = np.repeat(np.arange(n_img), per_image)
    rng.shuffle(c2i)  # captions not grouped by image: the scan reorders them
    # Coarse values make exact ties between positives and negatives common.
    img = torch.from_numpy(rng.integers(-2, 3, size=(n_img, d)).astype(np.float32))
    txt = torch.from_numpy(rng.integers(-2, 3, size=(c2i.size, d)).astype(np.float32))
    txt[::7] = img[c2i[::7]]  # some captions equal to their image's embedding
    return img, txt, c2i


def _same_lists(a, b) -> None:
    assert (a is None) == (b is None)
    if a is not None:  # the order is total (score, then negatives first, then gallery row): ties included
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.positive, b.positive)


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("topk", [0, 5])
def test_itr_parts_merge_into_the_whole_scan(parts: int, topk: int) -> None:
    img, txt, c2i = _problem(parts * 10 + topk)
    memory_mb = 200 * 4 / 2**20  # tiles of 200 scores: many image groups
    whole = itr_scan(img, txt, c2i, topk=topk, memory_mb=memory_mb)
    pieces = [itr_scan_part(img, txt, c2i, part=p, parts=parts, topk=topk, memory_mb=memory_mb) for p in range(parts)]
    merged = merge_itr_parts(pieces[::-1], c2i, img.shape[0])  # any order
    np.testing.assert_array_equal(merged.i2t, whole.i2t)
    np.testing.assert_array_equal(merged.t2i, whole.t2i)
    _same_lists(merged.i2t_lists, whole.i2t_lists)
    _same_lists(merged.t2i_lists, whole.t2i_lists)


def test_top_k_lists_do_not_depend_on_the_tiling() -> None:
    """Many exact ties (coarse values, duplicated rows): the lists are the same whatever the tile budget, and equal
    to the one-way strip scorer's."""
    from bench.scoring.strips import ranks_and_topk

    img, txt, c2i = _problem(11)
    txt[1::5] = txt[0]  # duplicated captions: equal scores everywhere
    scans = [itr_scan(img, txt, c2i, topk=6, memory_mb=m) for m in (50 * 4 / 2**20, 700 * 4 / 2**20, 64.0)]
    for scan in scans[1:]:
        _same_lists(scan.t2i_lists, scans[0].t2i_lists)
        _same_lists(scan.i2t_lists, scans[0].i2t_lists)
    strips = ranks_and_topk(txt, img, [np.array([c]) for c in c2i], 6, memory_mb=30 * 13 / 2**20)
    np.testing.assert_array_equal(strips.indices.numpy(), scans[0].t2i_lists.index)


@pytest.mark.parametrize("parts", [1, 2, 5])
@pytest.mark.parametrize("topk", [0, 4])
@pytest.mark.parametrize("memory_mb", [64 * 4 / 2**20, 4 * 4 / 2**20])  # 8-item blocks; 2-item side: strips
def test_sibling_parts_merge_into_the_whole_scan(parts: int, topk: int, memory_mb: float) -> None:
    _, txt, c2i = _problem(parts + topk)
    whole = sibling_scan(txt, c2i, topk=topk, memory_mb=memory_mb)
    pieces = [sibling_scan_part(txt, c2i, part=p, parts=parts, topk=topk, memory_mb=memory_mb) for p in range(parts)]
    merged = merge_sibling_parts(pieces, c2i)
    np.testing.assert_array_equal(merged.queries, whole.queries)
    np.testing.assert_array_equal(merged.ranks, whole.ranks)
    _same_lists(merged.lists, whole.lists)


def test_merging_parts_of_different_scans_is_refused() -> None:
    img, txt, c2i = _problem(3)
    one = itr_scan_part(img, txt, c2i, part=0, parts=2)
    with pytest.raises(ValueError, match="not the parts of one scan"):
        merge_itr_parts([one, one], c2i, img.shape[0])


def test_part_ranges_cover_the_units_in_order() -> None:
    ranges = part_ranges([5, 1, 1, 1, 5, 1], 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == 6
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert sum(b - a for a, b in part_ranges([1, 1], 4)) == 2  # more parts than units: some parts are empty
