"""Per-query files, intervals and paired comparisons of real grid cells, end to end through the CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_metrics import brute_force_ranks, caption_lists, tie_heavy_problem
from tiny_grid import result_path, run_main, write_config

from bench.scoring.itr import summarize
from bench.scoring.perquery import load_per_query, sha256_of

RUN = ["run", "--models", "vse_infty", "--methods", "zeroshot,contrastive", "--seeds", "0,1", "--no-table", "-q"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("uncertainty")
    cfg = write_config(root / "bench.toml", results=root / "results", work=root / "work")
    rc, _, err = run_main([RUN[0], "--config", str(cfg), *RUN[1:]])
    assert rc == 0, err
    return cfg, root / "results"


def test_records_point_to_per_query_files_that_reproduce_their_metrics(grid: tuple[Path, Path]) -> None:
    _, results = grid
    for method, seed in (("zeroshot", 0), ("contrastive", 1)):  # zero-shot cells run once: seeds change nothing
        path = result_path(results, "vse_infty", method, seed)
        rec = json.loads(path.read_text())
        pq_path = path.parent / rec["per_query"]["file"]
        assert pq_path.name == f"{method}-seed{seed}.queries.npz"
        assert sha256_of(pq_path) == rec["per_query"]["sha256"]
        pq = load_per_query(pq_path)
        assert pq.meta["method"] == method and pq.caption_text is not None and len(pq.image_path) == pq.n_images
        again = summarize({d: pq.queries.get(d) for d in ("i2t", "t2i", "t2t", "i2i")})
        for d in ("i2t", "t2i", "t2t"):
            for key in ("r1", "r5", "r10", "mrr", "meanr"):
                assert again[d][key] == pytest.approx(rec["metrics"][d][key], abs=1e-9), (method, d, key)
        assert again["rsum"] == pytest.approx(rec["metrics"]["rsum"])
        assert "map_at_r" in rec["metrics"]["i2t"] and "ndcg10" in rec["metrics"]["t2i"]
        ci = rec["ci95"]
        assert rec["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "image"}
        lo, hi = ci["rsum"]
        assert lo < hi and set(ci) >= {"i2t", "t2i", "t2t", "rsum"}
        assert all(ci["i2t"][k][0] <= ci["i2t"][k][1] for k in ("r1", "r5", "r10"))
        assert pq_path.stat().st_size < 200_000


def test_a_missing_or_changed_per_query_file_reruns_its_cell(grid, tmp_path, caplog) -> None:
    cfg, results = grid
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    text = cfg.read_text().replace(str(results), str(copy))
    cfg2 = tmp_path / "bench.toml"
    cfg2.write_text(text)
    target = result_path(copy, "vse_infty", "zeroshot", 0).with_suffix(".queries.npz")
    target.write_bytes(target.read_bytes()[:-10])  # truncated: its digest no longer matches
    caplog.set_level(logging.INFO)
    rc, _, err = run_main([RUN[0], "--config", str(cfg2), *RUN[1:]])
    assert rc == 0, err
    assert "zeroshot-seed0.queries.npz is missing or changed" in caplog.text
    assert "1 ran, 2 skipped" in caplog.text + err
    rec = json.loads(result_path(copy, "vse_infty", "zeroshot", 0).read_text())
    assert sha256_of(target) == rec["per_query"]["sha256"]


def test_compare_two_methods_across_seeds(grid: tuple[Path, Path]) -> None:
    cfg, results = grid
    rc, out, err = run_main(["compare", "--config", str(cfg), "vse_infty:contrastive", "vse_infty:zeroshot",
                             "--dataset", "synthetic", "--json", "--resamples", "300"])  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    assert res["n_seeds"] == 2 and res["a"]["seeds"] == [0, 1]
    trained = [json.loads(result_path(results, "vse_infty", "contrastive", s).read_text()) for s in (0, 1)]
    zeroshot = json.loads(result_path(results, "vse_infty", "zeroshot", 0).read_text())
    want = np.mean([r["metrics"]["rsum"] for r in trained]) - zeroshot["metrics"]["rsum"]
    m = res["metrics"]["rsum"]
    assert m["delta"] == pytest.approx(want) and m["ci"][0] <= m["delta"] <= m["ci"][1] and 0 < m["p"] <= 1
    assert len(res["mcnemar_r1"]["t2i"]["p"]) == 2
    # A side against itself: no difference, p = 1.
    rc, out, _ = run_main(["compare", "--config", str(cfg), "vse_infty:contrastive:0", str(result_path(
        results, "vse_infty", "contrastive", 0)), "--json", "--resamples", "200"])  # fmt: skip
    same = json.loads(out)
    assert rc == 0 and same["metrics"]["rsum"]["delta"] == 0 and same["metrics"]["rsum"]["p"] == 1.0
    rc, out, _ = run_main(["compare", "--config", str(cfg), "vse_infty:contrastive", "vse_infty:zeroshot",
                           "--resamples", "100"])  # fmt: skip
    assert rc == 0 and "McNemar R@1 t2i" in out and "two-level" in out


def test_compare_refuses_bad_sides_in_one_line(grid, tmp_path) -> None:
    cfg, results = grid
    rc, _, err = run_main(["compare", "--config", str(cfg), "vse_infty", "vse_infty:zeroshot"])
    assert rc == 2 and "expected MODEL:METHOD" in err and "Traceback" not in err
    rc, _, err = run_main(["compare", "--config", str(cfg), "vse_infty:cusa", "vse_infty:zeroshot"])
    assert rc == 2 and "vse_infty:cusa" in err
    rec = result_path(results, "vse_infty", "contrastive", 0)
    copy = tmp_path / rec.name
    shutil.copy(rec, copy)
    shutil.copy(rec.with_suffix(".queries.npz"), tmp_path / "contrastive-seed0.queries.npz")
    data = np.load(tmp_path / "contrastive-seed0.queries.npz")
    np.savez_compressed(tmp_path / "contrastive-seed0.queries.npz", **{k: data[k] for k in data.files if k != "meta"})
    rc, _, err = run_main(["compare", "--config", str(cfg), str(copy), str(rec)])
    assert rc == 2 and "contrastive-seed0.queries.npz: its sha256 differs" in err and "Traceback" not in err


def test_table_bolds_only_significant_leads_and_shows_intervals(grid: tuple[Path, Path]) -> None:
    cfg, _ = grid
    rc, out, err = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--ci"])
    assert rc == 0, err
    assert "only where it is ahead of the runner-up at p < 0.05" in out and "95% percentile interval" in out
    rows = {line.split("|")[2].strip(): line for line in out.splitlines() if line.startswith("| vse_infty")}
    assert "[" in rows["contrastive"] and "]" in rows["zeroshot"]
    rc, plain, _ = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--largest"])
    assert rc == 0 and "runner-up" not in plain and plain.count("**") >= out.count("**")
    rc, tex, _ = run_main(["table", "--config", str(cfg), "--models", "vse_infty", "--format", "latex", "--ci"])
    assert rc == 0 and r"p \textless{} 0.05" in tex and r"{\scriptsize[" in tex


def test_score_per_query_matches_brute_force(tmp_path: Path) -> None:
    image, text, c2i = tie_heavy_problem(3)
    for name, arr in (("I", image), ("T", text), ("M", c2i)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = tmp_path / "ranks.npz"
    rc, stdout, err = run_main(["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy"),
                                "--text-to-image", str(tmp_path / "M.npy"), "--no-normalize", "--per-query", str(out),
                                "--bootstrap", "200", "--seed", "3", "--json"])  # fmt: skip
    assert rc == 0, err
    z = np.load(out)
    caps = caption_lists(c2i, len(image))
    with_caps = np.array([i for i in range(len(image)) if len(caps[i])])
    want_i2t = brute_force_ranks(image[with_caps], text, [caps[i] for i in with_caps])
    np.testing.assert_array_equal(z["i2t_rank"][with_caps], want_i2t)
    assert (z["i2t_rank"][np.setdiff1d(np.arange(len(image)), with_caps)] == -1).all()
    np.testing.assert_array_equal(z["t2i_rank"], brute_force_ranks(text, image, [np.array([m]) for m in c2i]))
    assert z["t2t_rank"].shape == (len(c2i),)
    res = json.loads(stdout)
    assert res["bootstrap"]["seed"] == 3 and len(res["ci95"]["rsum"]) == 2
    assert res["ci95"]["i2t"]["r1"][0] <= res["i2t"]["r1"] <= res["ci95"]["i2t"]["r1"][1]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_report_loads_in_a_headless_browser(grid: tuple[Path, Path], tmp_path: Path) -> None:
    import os
    import re
    import subprocess

    cfg, _ = grid
    out = tmp_path / "report"
    rc, _, err = run_main(["report", "--config", str(cfg), "--html", str(out), "--models", "vse_infty"])
    assert rc == 0, err
    page = out / "synthetic-test.html"
    source = page.read_text()
    assert 'href="synthetic-test.html"' in (out / "index.html").read_text()
    assert "http://" not in source and "https://" not in source  # everything is read from disk
    assert "Failing queries of vse_infty / contrastive" in source and "right, zeroshot wrong" in source
    assert len(list((out / "thumbs").rglob("*.jpg"))) > 10
    browser = _chromium()
    if browser is None:
        if os.environ.get("BENCH_REQUIRE_CHROMIUM") == "1":
            pytest.fail("BENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no headless Chromium on PATH (Debian: apt-get install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r'<body data-images="(\d+)" data-images-ok="(\d+)"', dom)
    assert body is not None, dom[:500]
    n_images, n_ok = int(body.group(1)), int(body.group(2))
    assert n_images > 10 and n_ok == n_images  # every thumbnail and the plot decoded
    assert 'id="results"' in dom and "contrastive" in dom
    shot = Path(os.environ.get("BENCH_SCREENSHOT_DIR", tmp_path)) / "report.png"
    subprocess.run([*flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_closed_pipe_ends_quietly(grid: tuple[Path, Path]) -> None:
    import os
    import subprocess
    import sys

    cfg, _ = grid
    cmd = [sys.executable, "-c", "import sys; from bench.cli.main import main; sys.exit(main())",
           "table", "--config", str(cfg), "--format", "csv", "--ci"]  # fmt: skip
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before a byte is written, as `| head -c 0` would
    proc = subprocess.Popen(cmd, stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
