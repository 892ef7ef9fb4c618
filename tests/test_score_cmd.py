"""``bench score`` on .npy files, against a brute-force reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli.score import add_score_parser, run_score
from bench.errors import BenchError, DataError


def brute_force_ranks(
    queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray], exclude: np.ndarray | None = None
) -> np.ndarray:
    """Full float64 sort per query, non-positives first among ties; rank = position of the first positive."""
    scores = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    ranks = np.empty(len(queries), dtype=np.int64)
    for i in range(len(queries)):
        keep = np.arange(len(gallery))
        if exclude is not None:
            keep = keep[keep != exclude[i]]
        is_pos = np.isin(keep, positives[i])
        ranks[i] = np.flatnonzero(is_pos[np.lexsort((is_pos, -scores[i, keep]))])[0]
    return ranks


def recalls(ranks: np.ndarray) -> dict[str, float]:
    return {f"r{k}": 100.0 * np.count_nonzero(ranks < k) / len(ranks) for k in (1, 5, 10)}


def reference(image: np.ndarray, text: np.ndarray, c2i: np.ndarray, *, normalize: bool) -> dict[str, dict[str, float]]:
    if normalize:
        image = image / np.linalg.norm(image.astype(np.float64), axis=1, keepdims=True)
        text = text / np.linalg.norm(text.astype(np.float64), axis=1, keepdims=True)
    caps = [np.flatnonzero(c2i == i) for i in range(len(image))]
    with_caps = [i for i in range(len(image)) if len(caps[i])]
    t2t_q = np.array([j for j in range(len(c2i)) if len(caps[c2i[j]]) >= 2])
    return {
        "i2t": recalls(brute_force_ranks(image[with_caps], text, [caps[i] for i in with_caps])),
        "t2i": recalls(brute_force_ranks(text, image, [np.array([m]) for m in c2i])),
        "t2t": recalls(brute_force_ranks(text[t2t_q], text, [caps[c2i[j]][caps[c2i[j]] != j] for j in t2t_q], t2t_q)),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_score_parser(sub)
    return parser.parse_args(["score", *argv])


def write_problem(tmp_path: Path, seed: int = 0, n_img: int = 120, d: int = 12) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n_img, d)).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), rng.integers(1, 6, size=n_img))
    rng.shuffle(c2i)
    text = image[c2i] + 1.2 * rng.standard_normal((len(c2i), d)).astype(np.float32)
    paths = tmp_path / "I.npy", tmp_path / "T.npy", tmp_path / "M.npy"
    for p, a in zip(paths, (image, text, c2i), strict=True):
        np.save(p, a)
    return paths


def args_for(paths: tuple[Path, Path, Path], *extra: str) -> list[str]:
    i, t, m = paths
    return ["--image-emb", str(i), "--text-emb", str(t), "--text-to-image", str(m), *extra]


@pytest.mark.parametrize("normalize", [True, False])
def test_json_matches_brute_force(tmp_path: Path, capsys: pytest.CaptureFixture[str], normalize: bool) -> None:
    paths = write_problem(tmp_path)
    extra = ["--json", "--memory-mb", "0.002"] + ([] if normalize else ["--no-normalize"])
    args = parse(args_for(paths, *extra))
    assert args.func is run_score
    assert run_score(args) == 0
    out = capsys.readouterr().out
    got = json.loads(out)  # exactly one JSON object and nothing else on stdout
    assert out.count("\n") == 1
    want = reference(*(np.load(p) for p in paths), normalize=normalize)
    for proto in ("i2t", "t2i", "t2t"):
        for k in ("r1", "r5", "r10"):
            assert got[proto][k] == pytest.approx(want[proto][k], abs=1e-9), (proto, k)
        assert 0.0 < got[proto]["r10"] and got[proto]["r1"] < 100.0
    want_rsum = sum(want[p][k] for p in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
    assert got["rsum"] == pytest.approx(want_rsum)
    assert got["i2i"] is None


def test_labels_add_i2i_and_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_problem(tmp_path, seed=1, n_img=40)
    labels = np.arange(40) % 6
    np.save(tmp_path / "L.npy", labels)
    assert run_score(parse(args_for(paths, "--json", "--labels", str(tmp_path / "L.npy")))) == 0
    got = json.loads(capsys.readouterr().out)
    image = np.load(paths[0]).astype(np.float64)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    pos = [np.array([k for k in range(40) if labels[k] == labels[i] and k != i]) for i in range(40)]
    want = recalls(brute_force_ranks(image, image, pos, np.arange(40)))
    for k in ("r1", "r5", "r10"):
        assert got["i2i"][k] == pytest.approx(want[k])

    assert run_score(parse(args_for(paths))) == 0
    table = capsys.readouterr().out
    for word in ("i2t", "t2i", "t2t", "rsum", "R@1", "n/a"):
        assert word in table
    assert f"{got['i2t']['r1']:.2f}" in table


def test_t2t_null_without_siblings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "I.npy", rng.standard_normal((20, 4)))
    np.save(tmp_path / "T.npy", rng.standard_normal((20, 4)))
    np.save(tmp_path / "M.npy", rng.permutation(20))
    paths = (tmp_path / "I.npy", tmp_path / "T.npy", tmp_path / "M.npy")
    assert run_score(parse(args_for(paths, "--json"))) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["t2t"] is None and got["i2t"] is not None


def _expect_data_error(paths: tuple[Path, Path, Path], *extra: str) -> str:
    with pytest.raises(DataError) as info:
        run_score(parse(args_for(paths, "--json", *extra)))
    assert isinstance(info.value, BenchError)
    return str(info.value)


def test_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    i, t, m = write_problem(tmp_path, n_img=50)
    image, text, c2i = np.load(i), np.load(t), np.load(m)
    missing = tmp_path / "nope.npy"
    assert str(missing) in _expect_data_error((missing, t, m))
    assert "no such file" in _expect_data_error((missing, t, m))

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not an npy file")
    assert str(garbage) in _expect_data_error((i, garbage, m))

    flat = tmp_path / "flat.npy"
    np.save(flat, image.reshape(-1))
    assert _expect_data_error((flat, t, m)).startswith(f"{flat}: expected a 2-D")

    narrow = tmp_path / "narrow.npy"
    np.save(narrow, text[:, :5])
    msg = _expect_data_error((i, narrow, m))
    assert str(narrow) in msg and str(i) in msg and "dimension" in msg

    short = tmp_path / "short.npy"
    np.save(short, c2i[:-3])
    msg = _expect_data_error((i, t, short))
    assert msg.startswith(f"{short}: has {len(c2i) - 3} entries") and str(t) in msg

    bad = c2i.copy()
    bad[17] = 5001
    bad[20] = 5002
    bad_path = tmp_path / "M_bad.npy"
    np.save(bad_path, bad)
    assert _expect_data_error((i, t, bad_path)) == f"{bad_path}: row 17 has image id 5001, out of range [0, 50)"
    bad[3] = -1
    np.save(bad_path, bad)
    assert _expect_data_error((i, t, bad_path)) == f"{bad_path}: row 3 has image id -1, out of range [0, 50)"

    as_float = tmp_path / "M_float.npy"
    np.save(as_float, c2i.astype(np.float32))
    assert _expect_data_error((i, t, as_float)).startswith(f"{as_float}: expected integer")

    nan_text = text.copy()
    nan_text[9, 0] = np.nan
    nan_path = tmp_path / "T_nan.npy"
    np.save(nan_path, nan_text)
    assert _expect_data_error((i, nan_path, m)) == f"{nan_path}: row 9 has a non-finite value (nan or inf)"

    labels = tmp_path / "L.npy"
    np.save(labels, np.zeros(49, dtype=np.int64))
    msg = _expect_data_error((i, t, m), "--labels", str(labels))
    assert msg.startswith(f"{labels}: has 49 entries") and str(i) in msg

    archive = tmp_path / "I.npz"
    np.savez(archive, image=image)
    assert str(archive) in _expect_data_error((archive, t, m))

    assert capsys.readouterr().out == ""  # nothing half-printed before an error


def test_memory_mb_must_be_positive(tmp_path: Path) -> None:
    paths = write_problem(tmp_path, n_img=5)
    with pytest.raises(SystemExit):
        parse(args_for(paths, "--memory-mb", "0"))
