"""The results store (``bench results``) and SQL over it (``bench query``): every record survives the store, its
numbers are ``bench table``'s, and the queries table recomputes the records' recalls from the per-query ranks."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from tiny_grid import MODEL_TABLES, SYNTHETIC_TABLE, run_main

from bench.grid.records import iter_records
from bench.store import build_store, read_table, record_from_row

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = f"""
[paths]
results_dir = "results"
work_dir = "work"

[grid]
models = ["vse_infty", "towers"]
datasets = ["synthetic"]
methods = ["zeroshot", "contrastive"]
seeds = [0, 1]

[train]
epochs = 1
batch_size = 16
device = "cpu"

[eval]
batch_size = 32
bootstrap = 100

{MODEL_TABLES}
{SYNTHETIC_TABLE}"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    (root / "bench.toml").write_text(CONFIG.replace('"results"', json.dumps(str(root / "results")))
                                     .replace('"work"', json.dumps(str(root / "work"))))  # fmt: skip
    rc, _, err = run_main(["run", "--config", str(root / "bench.toml"), "--no-table", "-q"])
    assert rc == 0, err[-3000:]
    # a failed cell's record beside the ok ones: the store keeps every status
    ok = root / "results/runs/vse_infty/synthetic/test/zeroshot-seed0.json"
    failed = json.loads(ok.read_text())
    failed.update(status="failed", reason="DataError: pics/x.jpg: cannot identify image file", seed=7)
    for key in ("metrics", "per_query", "ci95"):
        failed.pop(key)
    (ok.parent / "zeroshot-seed7.json").write_text(json.dumps(failed))
    return root


def _query(root: Path, sql: str, *args: str) -> tuple[int, str, str]:
    return run_main(["query", sql, "--config", str(root / "bench.toml"), *args])


def test_every_record_survives_the_store(grid: Path, tmp_path: Path) -> None:
    summary = build_store(grid / "results", tmp_path / "store")
    stored = {row["path"]: record_from_row(row) for row in read_table(tmp_path / "store", "records").to_pylist()}
    on_disk = {os.path.relpath(r.pop("_path"), grid / "results"): dict(r) for r in iter_records(grid / "results")}
    assert len(on_disk) == 5 and stored == on_disk
    assert summary.rows["records"] == 5 and not summary.skipped
    rows = {r["path"]: r for r in read_table(tmp_path / "store", "records").to_pylist()}
    failed = rows["runs/vse_infty/synthetic/test/zeroshot-seed7.json"]
    assert failed["status"] == "failed" and failed["reason"].startswith("DataError")
    ok = rows["runs/vse_infty/synthetic/test/contrastive-seed1.json"]
    assert json.loads(ok["fingerprints"]) == on_disk[ok["path"]]["fingerprints"] and ok["git_sha"]
    assert ok["store_version"] == 1 and ok["schema"] == 1 and ok["itr_bench"]


def test_the_stores_numbers_are_bench_tables(grid: Path) -> None:
    rc, out, err = run_main(["results", "--config", str(grid / "bench.toml")])
    assert rc == 0, err
    rc, table, err = run_main(["table", "--config", str(grid / "bench.toml"), "--format", "csv"])
    assert rc == 0, err
    for row in csv.DictReader(io.StringIO(table)):
        for column in ("rsum", "i2t_r1", "t2i_r5", "t2t_r1", "i2i_r10"):
            if row[column] in ("", "n/a"):
                continue
            direction, _, metric = column.rpartition("_") if column != "rsum" else ("", "", "rsum")
            sql = (f"SELECT avg(value) AS v, count(*) AS n FROM metrics WHERE model = '{row['model']}' "
                   f"AND method = '{row['method']}' AND block = 'metrics' AND direction = '{direction}' "
                   f"AND metric = '{metric}'")  # fmt: skip
            rc, out, err = _query(grid, sql, "--format", "json")
            assert rc == 0, err
            got = json.loads(out)
            assert got["n"] == int(row["seeds"])
            assert got["v"] == pytest.approx(float(row[column]), abs=1e-5), (row["model"], column)


def test_the_queries_table_gives_back_each_records_recalls(grid: Path) -> None:
    """R@K of every direction, recomputed by SQL from the per-query ranks, is the record's."""
    rc, out, err = _query(grid, "SELECT model, method, seed, direction, avg(CASE WHEN rank < 5 THEN 100.0 ELSE 0 END) "
                                "AS r5, count(*) AS n FROM queries GROUP BY ALL", "--format", "json")  # fmt: skip
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    records = {(r["model"], r["method"], r["seed"]): r for r in iter_records(grid / "results") if r["status"] == "ok"}
    assert {(r["model"], r["method"], r["seed"]) for r in rows} == set(records)
    for r in rows:
        block = records[(r["model"], r["method"], r["seed"])]["metrics"][r["direction"]]
        assert r["r5"] == pytest.approx(block["r5"]) and r["n"] == block["n_queries"]


def test_query_rewrites_a_stale_store_and_refuses_bad_sql_in_one_line(grid: Path, tmp_path: Path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(grid / "results", copy, ignore=shutil.ignore_patterns("store"))
    cfg = tmp_path / "bench.toml"
    cfg.write_text((grid / "bench.toml").read_text().replace(json.dumps(str(grid / "results")), json.dumps(str(copy))))
    count = "SELECT count(*) AS n FROM records"
    assert json.loads(run_main(["query", count, "--config", str(cfg), "--format", "json"])[1])["n"] == 5
    (copy / "runs/vse_infty/synthetic/test/zeroshot-seed7.json").unlink()  # the store is now stale
    assert json.loads(run_main(["query", count, "--config", str(cfg), "--format", "json"])[1])["n"] == 4
    rc, _, err = run_main(["query", "SELEC 1", "--config", str(cfg)])
    assert rc == 2 and err.count("\n") == 1 and "query failed" in err and "Traceback" not in err


def test_a_per_query_file_of_another_run_is_left_out_with_its_name(grid: Path, tmp_path: Path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(grid / "results", copy, ignore=shutil.ignore_patterns("store"))
    pq = copy / "runs/vse_infty/synthetic/test/contrastive-seed1.queries.npz"
    shutil.copy(copy / "runs/vse_infty/synthetic/test/contrastive-seed0.queries.npz", pq)
    summary = build_store(copy, tmp_path / "store")
    assert len(summary.skipped) == 1 and str(pq) in summary.skipped[0]
    queries = read_table(tmp_path / "store", "queries").to_pandas()
    assert not ((queries["method"] == "contrastive") & (queries["seed"] == 1)).any()
    assert summary.rows["records"] == 5  # its record is still there


def test_csv_store_and_an_unwritable_folder(grid: Path, tmp_path: Path) -> None:
    rc, out, err = run_main(["results", "--config", str(grid / "bench.toml"), "--format", "csv",
                             "--out", str(tmp_path / "csv")])  # fmt: skip
    assert rc == 0, err
    parquet = build_store(grid / "results", tmp_path / "parquet")
    for table in ("records", "metrics", "queries"):
        with open(tmp_path / "csv" / f"{table}.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == parquet.rows[table] > 0
    assert {r["direction"] for r in rows} == {"i2t", "t2i", "t2t", "i2i"}
    (tmp_path / "file").write_text("")
    rc, _, err = run_main(["results", "--config", str(grid / "bench.toml"), "--out", str(tmp_path / "file" / "x")])
    assert rc == 2 and err.count("\n") == 1 and str(tmp_path / "file" / "x") in err


# --- the leaderboard -------------------------------------------------------------------------------------------
def _board(root: Path, *args: str) -> tuple[int, str, str]:
    return run_main(["leaderboard", "--config", str(root / "bench.toml"), "--dataset", "synthetic", *args])


def test_leaderboard_ranks_the_rows_with_intervals_and_names_what_it_left_out(grid: Path) -> None:
    rc, out, err = _board(grid, "--json")
    assert rc == 0, err
    board = json.loads(out)
    rows = [(r["model"], r["method"]) for r in board["rows"]]
    assert rows == [("vse_infty", "contrastive"), ("vse_infty", "zeroshot")]
    assert board["rows"][0]["seeds"] == [0, 1] and board["left_out"] == {"towers:zeroshot": "no rsum"}
    records = {(r["model"], r["method"], r["seed"]): r for r in iter_records(grid / "results") if r["status"] == "ok"}
    contrastive = [records[("vse_infty", "contrastive", s)]["metrics"]["rsum"] for s in (0, 1)]
    assert board["rows"][0]["value"] == pytest.approx(sum(contrastive) / 2)  # the mean over its seeds
    rc, out, err = _board(grid, "--metric", "t2t_r1")
    assert rc == 0, err
    assert out.count("| ") >= 5 and "towers" in out and "Left out" not in out  # every row has t2t
    rc, tex, err = _board(grid, "--metric", "t2t_r1", "--format", "latex")
    assert rc == 0 and r"\toprule" in tex and "$\\alpha$" in tex and "α" not in tex


def test_leaderboard_leaves_out_a_row_scored_on_other_queries(grid: Path, tmp_path: Path) -> None:
    import numpy as np

    from bench.scoring.perquery import sha256_of

    copy = tmp_path / "results"
    shutil.copytree(grid / "results", copy, ignore=shutil.ignore_patterns("store"))
    src = copy / "runs/vse_infty/synthetic/test"
    dst = copy / "runs/relabelled/synthetic/test"
    dst.mkdir(parents=True)
    arrays = dict(np.load(src / "zeroshot-seed0.queries.npz"))
    arrays["image_id"] = arrays["image_id"][::-1].copy()  # the same ranks, said of other images
    np.savez_compressed(dst / "zeroshot-seed0.queries.npz", **arrays)
    rec = json.loads((src / "zeroshot-seed0.json").read_text())
    rec["model"] = "relabelled"
    rec["per_query"]["sha256"] = sha256_of(dst / "zeroshot-seed0.queries.npz")
    (dst / "zeroshot-seed0.json").write_text(json.dumps(rec))
    rc, out, err = _board(grid, "--results-dir", str(copy), "--json")
    assert rc == 0, err
    board = json.loads(out)
    assert "relabelled" not in {r["model"] for r in board["rows"]}
    assert board["left_out"]["relabelled:zeroshot"] == "scored on other queries than the ranked rows"


def test_leaderboard_bad_input_is_one_line(grid: Path) -> None:
    for args, needle in ((["--dataset", "nosuch"], "no ok record"), (["--metric", "t2t_r99"], "known: "),
                         (["--alpha", "2"], "--alpha")):  # fmt: skip
        rc, _, err = run_main(["leaderboard", "--config", str(grid / "bench.toml"), "--dataset", "synthetic", *args])
        assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


# --- exports: MTEB result files and model-card model-index blocks ----------------------------------------------
def test_the_exported_metrics_are_mtebs_own_on_the_same_rankings() -> None:
    """What the MTEB export maps (hit_rate_at_K = R@K, ndcg_at_10 = nDCG@10, t2i recall_at_K = R@K) agrees with
    MTEB's own retrieval evaluator (pytrec_eval) on continuous scores (no ties)."""
    import numpy as np
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    import bench

    rng = np.random.default_rng(0)
    images = rng.normal(size=(80, 32))
    caption_image = np.repeat(np.arange(80), 5)
    texts = images[caption_image] + 3.0 * rng.normal(size=(400, 32))
    ours = bench.score(images, texts, caption_image)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    scores = unit(images) @ unit(texts).T
    for direction, sim in (("i2t", scores), ("t2i", scores.T)):
        results = {f"q{i}": {f"d{j}": float(sim[i, j]) for j in np.argsort(-sim[i])[:10]} for i in range(len(sim))}
        if direction == "i2t":
            qrels = {f"q{i}": {f"d{j}": 1 for j in np.flatnonzero(caption_image == i)} for i in range(80)}
        else:
            qrels = {f"q{i}": {f"d{caption_image[i]}": 1} for i in range(400)}
        theirs = calculate_retrieval_scores(results, qrels, [1, 5, 10])
        assert 5 < ours[direction]["r1"] < 95  # a problem where the metrics can disagree
        for k in (1, 5, 10):
            assert theirs.hit_rate[f"HitRate@{k}"] == pytest.approx(ours[direction][f"r{k}"] / 100, abs=1e-5)
            if direction == "t2i":
                assert theirs.recall[f"Recall@{k}"] == pytest.approx(ours[direction][f"r{k}"] / 100, abs=1e-5)
        assert theirs.ndcg["NDCG@10"] == pytest.approx(ours[direction]["ndcg10"] / 100, abs=1e-5)


def test_mteb_result_files_load_in_mteb_with_their_provenance(grid: Path, tmp_path: Path) -> None:
    from mteb.results import TaskResult

    rc, out, err = run_main(["export-results", "--config", str(grid / "bench.toml"), "--mteb", str(tmp_path)])
    assert rc == 0, err
    files = sorted(tmp_path.rglob("*.json"))
    records = {r["config_hash"]: r for r in iter_records(grid / "results") if r["status"] == "ok"}
    assert len(files) == 6  # i2t and t2i of the three vse_infty cells; towers has no image-text metrics
    for path in files:
        result = TaskResult.from_disk(path)
        rec = records[path.parent.name]
        subset = result.scores["test"][0]
        direction = subset["itr_bench"]["direction"]
        assert result.task_name == f"ItrBenchSynthetic{direction.upper()}Retrieval"
        assert path.parent.parent.name == f"itr-bench__vse_infty-{rec['method']}"
        assert result.get_score() == pytest.approx(rec["metrics"][direction]["ndcg10"] / 100)
        assert subset["hit_rate_at_1"] == pytest.approx(rec["metrics"][direction]["r1"] / 100)
        assert ("recall_at_1" in subset) == (direction == "t2i")
        assert subset["itr_bench"]["fingerprints"] == rec["fingerprints"]
        low, high = subset["itr_bench"]["intervals"]["hit_rate_at_1"]
        assert [low * 100, high * 100] == pytest.approx(rec["ci95"][direction]["r1"])
        assert "pessimistically" in subset["itr_bench"]["protocol"]


def test_model_index_blocks_parse_with_huggingface_hub(grid: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    rc, out, err = run_main(["export-results", "--config", str(grid / "bench.toml"), "--model-index", str(tmp_path)])
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["towers-zeroshot.yaml", "vse_infty-contrastive.yaml",
                                                          "vse_infty-zeroshot.yaml"]  # fmt: skip
    card = ModelCard("---\n" + (tmp_path / "vse_infty-contrastive.yaml").read_text() + "---\n")
    results = {(e.dataset_name, e.metric_name): e for e in card.data.eval_results}
    seeds = [r for r in iter_records(grid / "results") if r["method"] == "contrastive"]
    r1 = results[("synthetic", "R@1 t2i")]
    assert r1.metric_value == pytest.approx(sum(r["metrics"]["t2i"]["r1"] for r in seeds) / 2, abs=0.01)
    assert r1.metric_args["seeds"] == 2 and "seed_std" in r1.metric_args and r1.task_type == "image-text-retrieval"
    single = ModelCard("---\n" + (tmp_path / "vse_infty-zeroshot.yaml").read_text() + "---\n")
    one = {(e.dataset_name, e.metric_name): e for e in single.data.eval_results}[("synthetic", "R@1 i2t")]
    assert one.metric_args["ci_level"] == 0.95 and len(one.metric_args["ci"]) == 2 and one.dataset_revision


def test_the_html_report_carries_the_leaderboard(grid: Path, tmp_path: Path) -> None:
    rc, _, err = run_main(["report", "--config", str(grid / "bench.toml"), "--html", str(tmp_path)])
    assert rc == 0, err
    page = (tmp_path / "synthetic-test.html").read_text()
    section = page[page.index("<h2>Leaderboard</h2>"):]
    table = section[: section.index("</table>")]
    assert table.index("contrastive") < table.index("zeroshot")  # ranked as bench leaderboard ranks them
    assert "Holm" in section and "towers:zeroshot (no rsum)" in section
