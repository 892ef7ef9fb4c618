"""The skip rule reads what a cell read: a changed caption or weight file re-runs exactly the cells that used it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import make_flat_json, write_config
from tiny_grid import run_main

from bench.grid.fingerprint import DigestCache


def ran_and_skipped(err: str, log: str) -> tuple[int, int]:
    line = next(ln for ln in (err + log).splitlines() if " ran, " in ln and "skipped" in ln)
    words = line.split("bench: ")[-1].split()
    return int(words[0]), int(words[2])


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, Path]:
    a, b = make_flat_json(tmp_path / "a"), make_flat_json(tmp_path / "b")
    rng = np.random.default_rng(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    np.save(weights / "image_emb.npy", rng.normal(size=(4, 8)).astype(np.float32))
    np.save(weights / "text_emb.npy", rng.normal(size=(8, 8)).astype(np.float32))
    extra = (f'[models.emb]\nadapter = "embeddings"\nimage_emb = {json.dumps(str(weights / "image_emb.npy"))}\n'
             f'text_emb = {json.dumps(str(weights / "text_emb.npy"))}\n')  # fmt: skip
    cfg = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work",
                       datasets={"a": a, "b": b}, grid_models=["emb", "towers"], extra=extra)  # fmt: skip
    return {"cfg": cfg, "a": a, "weights": weights, "results": tmp_path / "results", "work": tmp_path / "work"}


def run(env: dict[str, Path], caplog: pytest.LogCaptureFixture) -> tuple[int, int, str]:
    caplog.clear()
    rc, _, err = run_main(["run", "--config", str(env["cfg"]), "-q", "--no-table"])
    assert rc == 0, err
    ran, skipped = ran_and_skipped(err, caplog.text)
    return ran, skipped, caplog.text


def test_changed_inputs_rerun_exactly_their_cells(env: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert run(env, caplog)[:2] == (4, 0)
    rec = json.loads((env["results"] / "runs" / "emb" / "a" / "test" / "zeroshot-seed0.json").read_text())
    assert set(rec["fingerprints"]["data"]) == {"a/test"}
    assert rec["fingerprints"]["weights"] == {
        str(env["weights"] / n): DigestCache(env["work"] / "x.json").digest(env["weights"] / n)
        for n in ("image_emb.npy", "text_emb.npy")
    }
    assert run(env, caplog)[:2] == (0, 4)  # unchanged: everything skips

    # One caption of dataset a changes: a's two cells run again, b's stay.
    ann = env["a"] / "test.json"
    rows = json.loads(ann.read_text())
    rows[3]["caption"] = "a green square, reworded"
    ann.write_text(json.dumps(rows, indent=1))
    ran, skipped, log = run(env, caplog)
    assert (ran, skipped) == (2, 2)
    assert log.count("the captions of a/test changed since the record") == 2

    # One byte of a weight file changes: the model that names it runs again on both datasets.
    path = env["weights"] / "image_emb.npy"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    ran, skipped, log = run(env, caplog)
    assert (ran, skipped) == (2, 2)
    assert log.count(f"the weights file {path} changed since the record") == 2

    # A touched file with the same bytes is the same input: its digest is recomputed once and matches.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert run(env, caplog)[:2] == (0, 4)
    # And an image replaced at the same path (another size) re-runs the cells of its dataset.
    image = next((env["a"] / "images").glob("test_*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0" * 16)
    ran, skipped, log = run(env, caplog)
    assert (ran, skipped) == (2, 2) and "the images of a/test changed" in log


def test_digest_cache_reads_a_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    cache = DigestCache(tmp_path / "digests.json")
    first = cache.digest(f)
    cache.save()
    opened = []
    real_open = open

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    again = DigestCache(tmp_path / "digests.json")
    assert again.digest(f) == first and str(f) not in opened  # size and mtime unchanged: not read
    monkeypatch.undo()
    (tmp_path / "digests.json").write_text("{broken")
    assert DigestCache(tmp_path / "digests.json").digest(f) == first  # a broken cache is recomputed


def test_digest_cache_sees_a_file_rewritten_with_its_size_and_mtime_restored(tmp_path: Path) -> None:
    """``cp -p`` and ``rsync -t`` keep the size and mtime of a file they replace; the ctime they cannot keep."""
    import os

    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    cache = DigestCache(tmp_path / "digests.json")
    first = cache.digest(f)
    st = f.stat()
    f.write_bytes(b"y" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.digest(f) != first


def test_dataset_card_shows_the_fingerprint_records_store(env: dict[str, Path], caplog) -> None:
    caplog.set_level(logging.INFO)
    run(env, caplog)
    rc, out, err = run_main(["data", "--config", str(env["cfg"]), "a", "--json"])
    assert rc == 0, err
    cards = {c["split"]: c for c in map(json.loads, out.splitlines())}
    assert set(cards) == {"train", "test"}  # no val split in this dataset
    test = cards["test"]
    assert test["images"] == 4 and test["captions"] == 8 and test["captions_per_image"] == {"2": 4}
    rec = json.loads((env["results"] / "runs" / "towers" / "a" / "test" / "zeroshot-seed0.json").read_text())
    assert test["fingerprint"] == rec["fingerprints"]["data"]["a/test"]
    rc, text, _ = run_main(["data", "--config", str(env["cfg"]), "a", "--splits", "test"])
    assert rc == 0 and "captions per image: 2 captions: 4" in text and test["fingerprint"]["captions"] in text
    rc, _, err = run_main(["data", "--config", str(env["cfg"]), "nope"])
    assert rc == 2 and "no [datasets.nope]" in err
