"""The choice task kind: item outcomes (ties fail), accuracies and their averages, the SugarCrepe / Winoground /
caption-swap layouts and their broken files, and the grid end to end (run, table, compare, report) on the tiny
synthetic set's swapped-colour captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_grid import MODEL_TABLES, SYNTHETIC_TABLE, run_main

from bench.data import load_split
from bench.data.choice import ChoiceSplit
from bench.data.swaps import swapped
from bench.errors import BenchError
from bench.grid.records import read_record
from bench.scoring.choice import ChoiceOutcomes, accuracies, item_outcomes, load_items
from bench.stats.bootstrap import BootstrapConfig
from bench.stats.choice import choice_intervals, compare_choice


# --- Winoground's own scoring, quoted from the dataset card's example (facebook/winoground, "Evaluating"): ---------
def text_correct(result: dict[str, float]) -> bool:
    return result["c0_i0"] > result["c1_i0"] and result["c1_i1"] > result["c0_i1"]


def image_correct(result: dict[str, float]) -> bool:
    return result["c0_i0"] > result["c0_i1"] and result["c1_i1"] > result["c1_i0"]


def group_correct(result: dict[str, float]) -> bool:
    return image_correct(result) and text_correct(result)


# -------------------------------------------------------------------------------------------------------------------


def _outcomes(matrix: list[list[float]], truth: tuple[int, ...]) -> dict[str, float]:
    s = np.asarray(matrix, dtype=np.float64)
    out = item_outcomes(s.ravel(), np.array([0, s.size]), [s.shape], [truth])
    return {k: float(v[0]) for k, v in out.items()}


def test_one_image_two_captions_by_hand() -> None:
    assert _outcomes([[0.3, 0.2]], (0,))["text"] == 1.0
    assert _outcomes([[0.2, 0.3]], (0,))["text"] == 0.0
    tie = _outcomes([[0.25, 0.25]], (0,))
    assert tie["text"] == 0.0  # a tie is not a correct choice
    assert np.isnan(tie["image"]) and np.isnan(tie["group"])  # no image test with one image
    assert _outcomes([[0.1, 0.5, 0.4]], (1,))["text"] == 1.0  # the correct caption need not come first
    assert _outcomes([[0.1, 0.5, 0.5]], (1,))["text"] == 0.0


def test_two_by_two_by_hand() -> None:
    # rows: images, columns: captions; image a's caption is a
    assert _outcomes([[0.9, 0.1], [0.2, 0.8]], (0, 1)) == {"text": 1.0, "image": 1.0, "group": 1.0}
    # text right (each row's diagonal wins), image wrong (caption 0 scores image 1 higher: 0.95 > 0.9)
    assert _outcomes([[0.9, 0.1], [0.95, 0.99]], (0, 1)) == {"text": 1.0, "image": 0.0, "group": 0.0}
    # image right, text wrong: image 0 prefers caption 1 (0.5 > 0.4), but each column's diagonal wins
    assert _outcomes([[0.4, 0.5], [0.1, 0.6]], (0, 1)) == {"text": 0.0, "image": 1.0, "group": 0.0}
    # a tie on the diagonal's rival fails both tests it takes part in
    assert _outcomes([[0.5, 0.5], [0.1, 0.6]], (0, 1)) == {"text": 0.0, "image": 1.0, "group": 0.0}
    # a permuted truth: image 0's caption is caption 1
    assert _outcomes([[0.1, 0.9], [0.8, 0.2]], (1, 0)) == {"text": 1.0, "image": 1.0, "group": 1.0}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_two_by_two_equals_winogrounds_own_scoring(values: list[int]) -> None:
    """Small integers make ties common; Winoground's functions use strict ``>`` as the harness does."""
    c0_i0, c1_i0, c0_i1, c1_i1 = values
    result = {"c0_i0": c0_i0, "c1_i0": c1_i0, "c0_i1": c0_i1, "c1_i1": c1_i1}
    ours = _outcomes([[c0_i0, c1_i0], [c0_i1, c1_i1]], (0, 1))
    assert ours == {"text": float(text_correct(result)), "image": float(image_correct(result)),
                    "group": float(group_correct(result))}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_without_ties_equals_clip_benchmarks_argmax_rule(k: int, m: int, seed: int) -> None:
    """CLIP_benchmark's ``image_caption_selection``: image a's argmax caption must be a (first min(k, m) images and
    captions are the diagonal); without ties it is the strict rule."""
    k = min(k, m)
    s = np.random.default_rng(seed).normal(size=(k, m))
    gt = np.arange(k)
    theirs_text = bool((s.argmax(axis=1)[:k] == gt).all())
    theirs_image = bool((s.argmax(axis=0)[:k] == gt).all())
    ours = _outcomes(s.tolist(), tuple(range(k)))
    assert ours["text"] == theirs_text
    if k > 1:
        # their "image" test takes each caption's argmax over the item's images; with k < m only the first k
        # captions count, exactly the captions that are some image's truth
        assert ours["image"] == theirs_image


def test_accuracies_averages_and_weights() -> None:
    outcomes = {"text": np.array([1, 0, 1, 1, 0, 1.0]), "image": np.full(6, np.nan), "group": np.full(6, np.nan)}
    subsets = np.array(["a", "a", "b", "b", "b", "c"])
    acc = accuracies(outcomes, subsets, {"ab": ("a", "b")})
    assert set(acc) == {"text"}  # a test that applies to no item is left out
    text = {k: float(v[0]) for k, v in acc["text"].items()}
    assert text["a"] == 50.0 and text["b"] == pytest.approx(200 / 3) and text["c"] == 100.0
    assert text["ab"] == pytest.approx((50 + 200 / 3) / 2)  # the mean of the subsets' accuracies, not of items
    assert text["mean"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    # weights act as item multiplicities: drawing item 1 twice equals listing it twice
    w = np.array([[1, 2, 1, 1, 1, 1.0]])
    dup = accuracies({k: np.insert(v, 1, v[1]) for k, v in outcomes.items()}, np.insert(subsets, 1, "a"), {})
    assert float(accuracies(outcomes, subsets, {}, w)["text"]["a"][0]) == pytest.approx(float(dup["text"]["a"][0]))


def test_intervals_and_paired_test_over_items() -> None:
    rng = np.random.default_rng(0)
    n = 400
    ids, subsets = np.array([str(i) for i in range(n)]), np.array(["x"] * n)
    a = ChoiceOutcomes(ids, subsets, {"text": (rng.random(n) < 0.8).astype(float)}, {})
    b = ChoiceOutcomes(ids, subsets, {"text": (rng.random(n) < 0.6).astype(float)}, {})
    cfg = BootstrapConfig(resamples=500, seed=0)
    lo, hi = choice_intervals(a, cfg)["text"]["mean"]
    acc = 100 * a.outcomes["text"].mean()
    assert lo < acc < hi and hi - lo < 12
    out = compare_choice([a], [b], cfg)
    m = out["metrics"]["text/mean"]
    assert m["delta"] == pytest.approx(m["a"] - m["b"]) and m["ci"][0] > 0 and m["p"] < 0.01
    hits_a, hits_b = a.outcomes["text"] > 0, b.outcomes["text"] > 0
    assert out["mcnemar"]["text"]["a_only"] == int(np.sum(hits_a & ~hits_b))
    assert compare_choice([a], [a], cfg)["metrics"]["text/mean"]["p"] == 1.0
    other = ChoiceOutcomes(ids[::-1].copy(), subsets, b.outcomes, {})
    with pytest.raises(ValueError, match="different items"):
        compare_choice([a], [other], cfg)


def test_swaps() -> None:
    rng = np.random.default_rng(0)
    assert swapped("A dog chasing a cat.", "swap_obj", rng) == "A cat chasing a dog."
    assert swapped("Man riding a horse", "swap_obj", rng) == "Horse riding a man"  # each position keeps its case
    assert swapped("a red bus beside a white car", "swap_att", rng) == "a white bus beside a red car"
    assert swapped("a black and white cat", "swap_att", rng) is None  # means the same both ways
    assert swapped("two dogs and a cat", "swap_obj", rng) is None  # a plural and a singular: ungrammatical swap
    assert swapped("a dog next to a dog", "swap_obj", rng) is None
    draws = {swapped("a man, a dog and a horse on a beach", "swap_obj", np.random.default_rng(s)) for s in range(20)}
    assert len(draws) > 1  # the seed picks among the candidate pairs


# --- layouts ------------------------------------------------------------------------------------------------------


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


def write_sugarcrepe(root: Path, subsets: tuple[str, ...] = ("swap_obj", "swap_att")) -> None:
    """SugarCrepe's layout: ``<subset>.json`` keyed by (non-contiguous) index strings, COCO val2017 beside it."""
    for i in range(3):
        _png(root / "val2017" / f"00000000000{i}.jpg", (40 * i, 80, 120))
    for s, subset in enumerate(subsets):
        rows = {str(2 * k + s): {"filename": f"00000000000{k}.jpg", "caption": f"a dog chasing a cat {k}",
                                 "negative_caption": f"a cat chasing a dog {k}"} for k in range(3)}  # fmt: skip
        (root / f"{subset}.json").write_text(json.dumps(rows))


def write_winoground(root: Path, n: int = 3) -> None:
    """The release's layout: ``data/examples.jsonl`` and ``data/images/<image_k>.png``."""
    lines = []
    for i in range(n):
        for k in (0, 1):
            _png(root / "data" / "images" / f"ex_{i}_img_{k}.png", (60 * k, 30 * i, 90))
        lines.append(json.dumps({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1",
                                 "caption_0": f"a mug in some grass {i}", "caption_1": f"some grass in a mug {i}",
                                 "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
                                 "collapsed_tag": "Object"}))  # fmt: skip
    (root / "data" / "examples.jsonl").write_text("\n".join(lines) + "\n")


def test_sugarcrepe_layout(tmp_path: Path) -> None:
    write_sugarcrepe(tmp_path)
    spec = {"format": "sugarcrepe", "root": str(tmp_path), "subsets": ["swap_obj", "swap_att"]}
    split = load_split("sc", spec, "test", work_dir=tmp_path)
    assert isinstance(split, ChoiceSplit)
    assert len(split.items) == 6 and len(split.image_paths) == 3 and len(split.captions) == 6  # shared texts once
    assert split.subsets() == ["swap_obj", "swap_att"] and dict(split.groups) == {"swap": ("swap_obj", "swap_att")}
    first = split.items[0]
    assert first.id == "swap_obj/0" and first.truth == (0,)
    assert split.captions[first.captions[0]] == "a dog chasing a cat 0"
    img, cap, offsets = split.pairs()
    assert offsets.tolist() == list(range(0, 13, 2)) and img.tolist()[:2] == [0, 0]


def test_winoground_layout(tmp_path: Path) -> None:
    write_winoground(tmp_path)
    split = load_split("wg", {"format": "winoground", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert isinstance(split, ChoiceSplit) and len(split.items) == 3
    item = split.items[1]
    assert item.id == "1" and len(item.images) == 2 and item.truth == (0, 1)
    assert Path(split.image_paths[item.images[1]]).name == "ex_1_img_1.png"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_field", r"swap_obj\.json: item '0': field 'negative_caption' is missing or empty"),
        ("missing_image", r"swap_obj\.json: item 'swap_obj/0': image .*000000000000\.jpg not found"),
        ("missing_subset", r"SugarCrepe file swap_att\.json not found"),
        ("not_object", r"swap_obj\.json: expected a JSON object of items, got list"),
        ("bad_json", r"swap_obj\.json: malformed JSON at line 1"),
        ("same_texts", r"item 'swap_obj/0': two of its captions are the same text"),
    ],
)
def test_broken_sugarcrepe_is_one_line_naming_file_and_field(tmp_path: Path, breakage: str, message: str) -> None:
    write_sugarcrepe(tmp_path)
    path = tmp_path / "swap_obj.json"
    rows = json.loads(path.read_text())
    if breakage == "missing_field":
        del rows["0"]["negative_caption"]
    elif breakage == "missing_image":
        (tmp_path / "val2017" / "000000000000.jpg").unlink()
    elif breakage == "missing_subset":
        (tmp_path / "swap_att.json").unlink()
    elif breakage == "same_texts":
        rows["0"]["negative_caption"] = rows["0"]["caption"]
    path.write_text("[]" if breakage == "not_object" else "{" if breakage == "bad_json" else json.dumps(rows))
    config = tmp_path / "bench.toml"
    config.write_text(f"""[datasets.sc]
format = "sugarcrepe"
root = {json.dumps(str(tmp_path))}
subsets = ["swap_obj", "swap_att"]
""")
    rc, out, err = run_main(["data", "sc", "--config", str(config)])
    assert rc == 2, (out, err)
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and "Traceback" not in err
    assert __import__("re").search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 0, "image_0": "ex_0_img_0", "caption_0": "a", "caption_1": "b"}', r"item '0': field 'image_1'"),
        ("{not json", r"examples\.jsonl line 1: malformed JSON"),
    ],
)
def test_broken_winoground_is_one_line(tmp_path: Path, line: str, message: str) -> None:
    write_winoground(tmp_path, n=1)
    (tmp_path / "data" / "examples.jsonl").write_text(line + "\n")
    with pytest.raises(BenchError, match=message):
        load_split("wg", {"format": "winoground", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_choice_options_are_checked(tmp_path: Path) -> None:
    write_sugarcrepe(tmp_path)
    with pytest.raises(BenchError, match="option 'subsets' must be a non-empty list"):
        load_split("sc", {"format": "sugarcrepe", "root": str(tmp_path), "subsets": ["swap"]}, "test",
                   work_dir=tmp_path)  # fmt: skip
    with pytest.raises(BenchError, match="has only the split 'test'"):
        load_split("sc", {"format": "sugarcrepe", "root": str(tmp_path)}, "val", work_dir=tmp_path)


# --- the grid ------------------------------------------------------------------------------------------------------


def write_grid(tmp_path: Path, scorer: str = "embedding") -> Path:
    """The tiny synthetic grid plus a choice set of its test captions with two colour words swapped (real scenes:
    "a purple wedge at the top and a green star" against "a green wedge at the top and a purple star")."""
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[grid]
models = ["vse_infty", "towers"]
datasets = ["synthetic", "swaps"]
methods = ["zeroshot", "contrastive"]
seeds = [0]

[train]
epochs = 2
batch_size = 16
device = "cpu"

[eval]
batch_size = 32
bootstrap = 200

{MODEL_TABLES}
{SYNTHETIC_TABLE}
[datasets.swaps]
format = "caption_swaps"
base = "synthetic"
base_options = {{ seed = 0, n_train = 48, n_val = 12, n_test = 24, image_size = 64 }}
kinds = ["swap_att"]
train_on = "synthetic"
scorer = "{scorer}"
""")
    return config


def test_grid_runs_tables_and_compares_a_choice_set(tmp_path: Path) -> None:
    config = write_grid(tmp_path)
    rc, out, err = run_main(["run", "--config", str(config), "-q"])
    assert rc == 0, err
    runs = tmp_path / "results" / "runs"
    rec = read_record(runs / "vse_infty/swaps/test/contrastive-seed0.json")
    assert rec["task"] == "choice" and rec["train_dataset"] == "synthetic" and rec["status"] == "ok"
    assert rec["scored_by"] == "cosine of the joint embeddings" and rec["bootstrap"]["unit"] == "item"
    block = rec["metrics"]["choice"]
    assert block["subsets"] == ["swap_att"] and block["n_items"] > 20
    # the record's accuracy is the per-item file's outcomes, and those follow from its stored pair scores
    items = load_items(runs / "vse_infty/swaps/test" / rec["per_query"]["file"])
    assert block["text"]["mean"] == pytest.approx(100 * items.outcomes["text"].mean())
    with np.load(runs / "vse_infty/swaps/test" / rec["per_query"]["file"]) as z:
        pairs = z["scores"].reshape(-1, 2)  # one image, (true caption, swapped) per item
    assert np.array_equal(items.outcomes["text"], (pairs[:, 0] > pairs[:, 1]).astype(float))
    lo, hi = rec["ci95"]["choice"]["text"]["mean"]
    assert lo <= block["text"]["mean"] <= hi
    # the zero-shot towers have no joint space: no accuracy, and the record says so
    towers = read_record(runs / "towers/swaps/test/zeroshot-seed0.json")
    assert towers["metrics"]["choice"] is None
    # the table joins the choice columns onto the image-text rows; the CSV carries each subset
    rc, out, err = run_main(["table", "--config", str(config), "--format", "csv"])
    assert rc == 0, err
    header = out.splitlines()[0].split(",")
    assert "swaps_text" in header and "swaps_text_swap_att" in header
    # compare: the paired test over items, and the numbers are the records'
    rc, out, err = run_main(["compare", "vse_infty:contrastive", "vse_infty:zeroshot", "--config", str(config),
                             "--dataset", "swaps", "--json"])  # fmt: skip
    assert rc == 0, err
    result = json.loads(out)
    zs = read_record(runs / "vse_infty/swaps/test/zeroshot-seed0.json")["metrics"]["choice"]
    assert result["metrics"]["text/mean"]["a"] == pytest.approx(block["text"]["mean"])
    assert result["metrics"]["text/mean"]["b"] == pytest.approx(zs["text"]["mean"])
    assert result["bootstrap"]["unit"] == "item" and "text" in result["mcnemar"]
    rc, out, err = run_main(["compare", "vse_infty:contrastive", "vse_infty:zeroshot", "--config", str(config),
                             "--dataset", "swaps"])  # fmt: skip
    assert rc == 0 and "McNemar text test" in out and "paired bootstrap over items" in out
    # the report: a page of the set with its table and the focus row's failed items, each with its pair scores
    rc, out, err = run_main(["report", "--config", str(config), "--html", str(tmp_path / "report"), "--focus",
                             "vse_infty:contrastive"])  # fmt: skip
    assert rc == 0, err
    page = (tmp_path / "report" / "swaps-test.html").read_text()
    failed = int((1 - items.outcomes["text"]).sum())
    assert "Failed items of vse_infty / contrastive (seed 0)" in page and f"{failed} of {block['n_items']}" in page
    assert page.count('<table class="item">') == min(8, failed)
    assert 'swaps-test.html' in (tmp_path / "report" / "index.html").read_text()
    # the results store: the accuracies and their intervals are metric rows; the per-item files are not queries
    rc, out, err = run_main(["results", "--config", str(config)])
    assert rc == 0 and "left out" not in err + out, err + out
    sql = ("SELECT value, ci_low FROM metrics WHERE dataset = 'swaps' AND model = 'vse_infty' AND method = "
           "'contrastive' AND block = 'metrics' AND direction = 'choice/text' AND metric = 'mean'")
    rc, out, err = run_main(["query", "--config", str(config), "--format", "json", sql])
    assert rc == 0, err
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert row["value"] == pytest.approx(block["text"]["mean"]) and row["ci_low"] == pytest.approx(lo)
    # a re-run skips every cell
    rc, out, err = run_main(["run", "--config", str(config), "-q", "--no-table"])
    assert rc == 0 and "0 ran" in err + out, err + out


def _choice_record(dataset: str, model: str, seed: int, block: dict) -> dict:
    return {"schema": 1, "status": "ok", "task": "choice", "model": model, "method": "zeroshot", "dataset": dataset,
            "split": "test", "seed": seed, "metrics": {"choice": block}}  # fmt: skip


def test_each_set_gets_a_table_in_its_papers_form() -> None:
    from bench.report.tables import render

    subsets = ["replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att"]
    groups = {"replace": ("replace_obj", "replace_att", "replace_rel"), "swap": ("swap_obj", "swap_att"),
              "add": ("add_obj", "add_att")}  # fmt: skip
    outcomes = {"text": np.tile([1.0, 0.0, 1.0, 1.0], 7)}
    acc = accuracies(outcomes, np.repeat(subsets[::-1], 4), groups)  # any order in the file; the table reorders
    block = {"text": {k: float(v[0]) for k, v in acc["text"].items()}, "averages": list(groups), "subsets": subsets,
             "n_items": 28}  # fmt: skip
    wino = {"text": {"all": 30.0, "mean": 30.0}, "image": {"all": 10.0, "mean": 10.0},
            "group": {"all": 7.5, "mean": 7.5}, "averages": [], "subsets": ["all"], "n_items": 400}  # fmt: skip
    records = [_choice_record("sugarcrepe", "m", 0, block), _choice_record("winoground", "m", 0, wino),
               _choice_record("winoground", "m", 1, {**wino, "text": {"all": 40.0, "mean": 40.0}})]  # fmt: skip
    out = render(records, "markdown")
    sugar = out[out.index("### sugarcrepe"):].splitlines()
    header = [c.strip() for c in sugar[2].split("|")[1:-1]]
    assert header == ["Model", "Method", "Seeds", "replace_obj", "replace_att", "replace_rel", "replace avg",
                      "swap_obj", "swap_att", "swap avg", "add_obj", "add_att", "add avg", "mean"]  # fmt: skip
    assert [c.strip() for c in sugar[4].split("|")[1:-1]][3:] == ["75.0"] * 11
    wino_lines = out[out.index("### winoground"):].splitlines()
    assert [c.strip() for c in wino_lines[2].split("|")[1:-1]] == ["Model", "Method", "Seeds", "text", "image", "group"]
    assert [c.strip() for c in wino_lines[4].split("|")[1:-1]][2:] == ["2", "35.0 ± 7.1", "10.0 ± 0.0", "7.5 ± 0.0"]
    latex = render(records, "latex")
    assert r"replace\_obj & replace\_att & replace\_rel & replace avg" in latex and r"35.0 $\pm$ 7.1" in latex


def test_attribute_swaps_stay_within_a_kind() -> None:
    rng = np.random.default_rng(0)
    # a colour is never swapped with a size ("One little large star ... green violet triangles" is nonsense)
    caption = "One little green star at the bottom and a pair of large violet triangles at the top."
    draws = {swapped(caption, "swap_att", np.random.default_rng(s)) for s in range(20)}
    colours = "One little violet star at the bottom and a pair of large green triangles at the top."
    sizes = "One large green star at the bottom and a pair of little violet triangles at the top."
    assert draws == {colours, sizes}
    assert swapped("a small red car", "swap_att", rng) is None  # a size and a colour: nothing of one kind to swap
    # "gray and white" must not become "white and white"
    assert swapped("A gray and white kitten in a white bathroom sink.", "swap_att", rng) is None


# --- ARO: the release's own scoring, quoted from mertyg/vision-language-models-are-bows -------------------------
# VG_Relation.evaluate_scores (dataset_zoo/aro_datasets.py), then the notebook's macro accuracy without the
# symmetric relations ("Replicate ARO! VG-Relation, VG-Attribution.ipynb"); VG_Attribution's keeps pairs of >= 25.
def aro_relation_macro(scores_i2t: np.ndarray, all_relations: list[str], symmetric: frozenset[str]) -> float:
    preds = np.argmax(np.squeeze(scores_i2t, axis=1), axis=-1)
    correct_mask = preds == 1
    all_relations = np.array(all_relations)
    result_records = []
    for relation in np.unique(all_relations):
        relation_mask = all_relations == relation
        if relation_mask.sum() == 0:
            continue
        result_records.append({"Relation": relation, "Accuracy": correct_mask[relation_mask].mean()})
    import pandas as pd

    df = pd.DataFrame(result_records)
    df = df[~df.Relation.isin(symmetric)]
    return float(df.Accuracy.mean())


def aro_attribution_macro(scores_i2t: np.ndarray, all_attributes: list[str]) -> float:
    preds = np.argmax(np.squeeze(scores_i2t, axis=1), axis=-1)
    correct_mask = preds == 1
    result_records = []
    all_attributes = np.array(all_attributes)
    for attr in np.unique(all_attributes):
        attr_mask = all_attributes == attr
        if attr_mask.sum() < 25:
            continue
        result_records.append({"Attributes": attr, "Accuracy": correct_mask[attr_mask].mean()})
    return float(np.mean([r["Accuracy"] for r in result_records]))


def write_vg(root: Path, kind: str, labels: list) -> Path:
    """ARO's layout: the annotation list and ``images/``; each case a box of one of two photos."""
    for i in range(2):
        _png(root / "images" / f"{i}.jpg", (90 * i, 40, 200))
    rows = []
    for k, label in enumerate(labels):
        row = {"image_path": f"{k % 2}.jpg", "bbox_x": 2 + k % 3, "bbox_y": 1, "bbox_w": 20 - k % 5, "bbox_h": 12,
               "true_caption": f"the dog is {label} the cat {k}", "false_caption": f"the cat is {label} the dog {k}"}
        row["relation_name" if kind == "relation" else "attributes"] = label
        rows.append(row)
    path = root / f"visual_genome_{kind}.json"
    path.write_text(json.dumps(rows))
    return path


def test_aro_vg_relation_equals_the_releases_scoring(tmp_path: Path) -> None:
    from bench.data.aro import SYMMETRIC

    labels = ["on", "on", "under", "next to", "under", "holding", "next to", "on"]  # "next to" is left out
    write_vg(tmp_path, "relation", labels)
    split = load_split("vgr", {"format": "aro_vg_relation", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert isinstance(split, ChoiceSplit) and split.groups["mean"] == ("on", "under", "holding")
    first = split.retrieval().load_image(split.items[0].images[0])
    assert first.size == (20, 12)  # the photo cut to its box, as the release crops it
    for seed in range(20):
        rng = np.random.default_rng(seed)
        s = rng.integers(0, 3, size=(len(labels), 2)).astype(float)  # [true, false]; small ints: many ties
        ours = accuracies(item_outcomes(s.ravel(), np.arange(0, 2 * len(labels) + 1, 2), [(1, 2)] * len(labels),
                                        [(0,)] * len(labels)), np.array(labels), split.groups)  # fmt: skip
        theirs = aro_relation_macro(s[:, ::-1][:, None, :], labels, SYMMETRIC)  # theirs: [false, true]
        assert float(ours["text"]["mean"][0]) == pytest.approx(100 * theirs)


def test_aro_vg_attribution_keeps_pairs_of_25(tmp_path: Path) -> None:
    labels = [["red", "blue"]] * 25 + [["big", "small"]] * 3 + [["white", "black"]] * 26
    write_vg(tmp_path, "attribution", labels)
    split = load_split("vga", {"format": "aro_vg_attribution", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert split.groups["mean"] == ("red_blue", "white_black")
    names = [f"{a}_{b}" for a, b in labels]
    s = np.random.default_rng(0).integers(0, 3, size=(len(labels), 2)).astype(float)
    ours = accuracies(item_outcomes(s.ravel(), np.arange(0, 2 * len(labels) + 1, 2), [(1, 2)] * len(labels),
                                    [(0,)] * len(labels)), np.array(names), split.groups)  # fmt: skip
    assert float(ours["text"]["mean"][0]) == pytest.approx(100 * aro_attribution_macro(s[:, ::-1][:, None, :], names))
    rows = json.loads((tmp_path / "visual_genome_attribution.json").read_text())
    rows[3]["attributes"] = "red"
    (tmp_path / "visual_genome_attribution.json").write_text(json.dumps(rows))
    with pytest.raises(BenchError, match=r"item 3: field 'attributes' must be a list of two strings"):
        load_split("vga", {"format": "aro_vg_attribution", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    del rows[3]["bbox_w"]
    rows[3]["attributes"] = ["red", "blue"]
    (tmp_path / "visual_genome_attribution.json").write_text(json.dumps(rows))
    with pytest.raises(BenchError, match=r"item 3: field 'bbox_w' must be a number"):
        load_split("vga", {"format": "aro_vg_attribution", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_valse_keeps_validated_items_and_scores_pairwise_accuracy(tmp_path: Path) -> None:
    """VALSE's layout (its repository's data/ files, images per piece) and its pairwise accuracy: the scripts count
    ``cross_score[0, 1] > cross_score[1, 1]`` (the caption fits better than the foil), over items with
    ``mturk["caption"] >= 2``; quoted from lxmert_valse_eval.py."""
    from bench.data.valse import VALSE_PIECES

    votes = {"existence": [3, 2, 1, 2], "plurals": [2, 3, 0]}
    for piece, per_item in votes.items():
        folder, file = VALSE_PIECES[piece]
        rows = {}
        for k, v in enumerate(per_item):
            _png(tmp_path / folder / f"{piece}_{k}.jpg", (30 * k, 60, 90))
            caption = [f"There are {k} dogs."] if piece == "plurals" else f"There is a dog {k}."  # both releases
            rows[f"{piece}_{k}"] = {"dataset": "x", "image_file": f"{piece}_{k}.jpg", "caption": caption,
                                    "foil": f"There is no dog {k}.", "mturk": {"caption": v, "foil": 0, "other": 0}}
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(json.dumps(rows))
    spec = {"format": "valse", "root": str(tmp_path), "pieces": ["existence", "plurals"]}
    split = load_split("valse", spec, "test", work_dir=tmp_path)
    assert [it.id for it in split.items] == ["existence/existence_0", "existence/existence_1",
                                             "existence/existence_3", "plurals/plurals_0", "plurals/plurals_1"]
    assert split.captions[split.items[3].captions[0]] == "There are 0 dogs."
    everything = load_split("valse", {**spec, "valid_only": False}, "test", work_dir=tmp_path)
    assert len(everything.items) == 7
    # pairwise accuracy per piece, then the mean over pieces, ties included (they are not a fit)
    fits = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.7], [0.6, 0.3], [0.4, 0.4]])  # [caption, foil] per item
    pieces = np.array([it.subset for it in split.items])
    ours = accuracies(item_outcomes(fits.ravel(), np.arange(0, 11, 2), [(1, 2)] * 5, [(0,)] * 5), pieces, {})
    theirs = {}
    for piece in ("existence", "plurals"):
        pairwise_acc = count = 0
        for caption_fit, foil_fit in fits[pieces == piece]:
            if caption_fit > foil_fit:
                pairwise_acc += 1
            count += 1
        theirs[piece] = pairwise_acc / count * 100
    assert {p: float(ours["text"][p][0]) for p in theirs} == pytest.approx(theirs)
    assert float(ours["text"]["mean"][0]) == pytest.approx(np.mean(list(theirs.values())))
    rows = json.loads((tmp_path / VALSE_PIECES["plurals"][1]).read_text())
    del rows["plurals_0"]["mturk"]
    (tmp_path / VALSE_PIECES["plurals"][1]).write_text(json.dumps(rows))
    with pytest.raises(BenchError, match=r"plurals\.json: item 'plurals_0': field 'mturk\.caption' is missing"):
        load_split("valse", spec, "test", work_dir=tmp_path)
