"""A task kind added from outside the package: paraphrase retrieval (text-to-text, over groups of paraphrases),
defined only in this file with one :func:`register_task` and one :func:`register_format`, runs through a grid
(``bench run``, zero-shot and a trained method), a table (``bench table``) and ``bench data``.

Also the contract every registered task kind keeps (built-in and plug-in alike).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from tiny_grid import MODEL_TABLES, SYNTHETIC_TABLE, run_main

from bench.data import register_format
from bench.data.registry import FORMATS, format_task
from bench.encode.features import map_texts
from bench.errors import DataError
from bench.grid.records import read_record
from bench.tasks import TASKS, Column, Split, Task, get_task, list_tasks, register_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Six groups of paraphrases: retrieval is among sentences, a hit is another sentence of the same group.
GROUPS = {
    "dog": ["a dog runs on the beach", "a puppy is running along the sand", "the dog sprints by the sea"],
    "pizza": ["a pizza with cheese on a plate", "a cheesy pizza sits on a dish", "a plate holds a pizza"],
    "bus": ["a red bus on a city street", "a double decker bus drives downtown", "a bus goes down the road"],
    "cat": ["a cat sleeps on a sofa", "a kitten naps on the couch", "the cat is asleep on a sofa"],
    "tennis": ["a man swings a tennis racket", "a tennis player hits the ball", "a man playing tennis"],
    "train": ["a train pulls into the station", "a locomotive arrives at a platform", "a train at a station"],
}


# --- the plug-in: a split type, a task kind and a format, as a user's package would write them ----------------------
@dataclass
class ParaphraseSplit:
    """Sentences and the paraphrase group of each."""

    task: ClassVar[str] = "paraphrase"
    dataset: str
    split: str
    source: Path | None
    sentences: list[str]
    groups: list[str]


class ParaphraseScorer:
    """Text-to-text R@1 over the split's sentences: each one queries the others."""

    def __init__(self, plan: Any, adapter: Any, split: ParaphraseSplit) -> None:
        self.plan, self.adapter, self.split = plan, adapter, split
        self.embedding: str | None = None

    @torch.inference_mode()
    def __call__(self, objective: Any = None, **_: Any) -> dict[str, Any]:
        self.adapter.eval()
        rows = map_texts(self.adapter, self.split.sentences, lambda t: self.adapter.encode_text(t).float().cpu(),
                         device=self.plan.device, batch_size=8)  # fmt: skip
        emb = torch.cat(rows)
        self.embedding = "joint"
        if objective is not None:
            objective.eval()
            emb = objective.views(emb.new_zeros((0, emb.shape[1])), emb)["uni"][1]
            self.embedding = objective.embedding_kind
        emb = F.normalize(emb.float(), dim=-1)
        sim = emb @ emb.T
        sim.fill_diagonal_(-torch.inf)
        top = sim.argmax(dim=1).tolist()
        hits = [self.split.groups[j] == self.split.groups[i] for i, j in enumerate(top)]
        return {"paraphrase": {"r1": 100.0 * sum(hits) / len(hits), "n_queries": len(hits)}}


class ParaphraseTask(Task):
    """Paraphrase retrieval: eval-only, its column joins the image-text rows."""

    name = "paraphrase"
    title = "paraphrase retrieval"
    report_order = 3

    def card(self, split: ParaphraseSplit) -> dict[str, Any]:
        return {"sentences": len(split.sentences), "paraphrase_groups": len(set(split.groups))}

    def fingerprint(self, split: ParaphraseSplit) -> dict[str, str]:
        text = "\n".join(f"{g}\0{s}" for g, s in zip(split.groups, split.sentences, strict=True))
        return {"sentences": hashlib.sha256(text.encode()).hexdigest()[:16]}

    def scorer(self, plan: Any, adapter: Any, split: ParaphraseSplit) -> ParaphraseScorer:
        return ParaphraseScorer(plan, adapter, split)

    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        block = metrics.get("paraphrase") or {}
        return {"r1": float(block["r1"])} if "r1" in block else {}

    def columns(self, keys: Iterable[str]) -> list[Column]:
        return [Column("r1", "para R@1", "R@1", True, "para_r1")]


def load_paraphrases(root: Path, split: str, *, name: str = "paraphrases") -> ParaphraseSplit:
    """``<root>/<split>.json``: ``{"group": ["sentence", ...], ...}``."""
    path = root / f"{split}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the paraphrase groups ({e})") from None
    sentences = [s for group in data.values() for s in group]
    groups = [g for g, group in data.items() for _ in group]
    return ParaphraseSplit(name, split, path, sentences, groups)


@pytest.fixture(scope="module")
def plugin() -> Iterator[None]:
    register_task(ParaphraseTask)
    register_format("paraphrases", task="paraphrase")(load_paraphrases)
    yield
    FORMATS.unregister("paraphrases")
    TASKS.unregister("paraphrase")


def _config(root: Path, data: Path) -> Path:
    path = root / "bench.toml"
    path.write_text(
        f"""
[paths]
results_dir = {json.dumps(str(root / "results"))}
work_dir = {json.dumps(str(root / "work"))}

[grid]
models = ["vse_infty"]
datasets = ["synthetic", "para"]
methods = ["zeroshot", "usa"]
seeds = [0]

[train]
epochs = 1
batch_size = 16
device = "cpu"

[eval]
batch_size = 32

{MODEL_TABLES}
{SYNTHETIC_TABLE}
[datasets.para]
format = "paraphrases"
root = {json.dumps(str(data))}
train_on = "synthetic"
"""
    )
    return path


@pytest.fixture(scope="module")
def grid(plugin: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    root = tmp_path_factory.mktemp("task_plugin")
    data = root / "paraphrases"
    data.mkdir()
    (data / "test.json").write_text(json.dumps(GROUPS))
    rc, out, err = run_main(["run", "--config", str(_config(root, data)), "-q"])
    return root, rc, out, err


def _record(root: Path, dataset: str, method: str) -> dict:
    return read_record(root / "results" / "runs" / "vse_infty" / dataset / "test" / f"{method}-seed0.json")


def test_the_plugin_task_is_registered_beside_the_builtins(plugin: None) -> None:
    assert {"itr", "image_retrieval", "sts", "paraphrase"} <= set(list_tasks())
    assert format_task("paraphrases") == "paraphrase" and get_task("paraphrase").eval_only


def test_grid_runs_the_plugin_task_zero_shot_and_trained(grid: tuple[Path, int, str, str]) -> None:
    root, rc, _, err = grid
    assert rc == 0, err[-3000:]
    assert "4 ran, 0 skipped (done), 0 unavailable, 0 failed" in err
    zs, usa = _record(root, "para", "zeroshot"), _record(root, "para", "usa")
    assert zs["task"] == usa["task"] == "paraphrase"
    assert zs["train_dataset"] is None and usa["train_dataset"] == "synthetic"
    assert zs["embedding"] == "joint" and usa["embedding"] == "uni_heads"
    for rec in (zs, usa):
        block = rec["metrics"]["paraphrase"]
        assert block["n_queries"] == 18 and 0.0 <= block["r1"] <= 100.0
    # the task's fingerprint is the record's content key of the split
    expected = ParaphraseTask().fingerprint(load_paraphrases(root / "paraphrases", "test", name="para"))
    assert zs["fingerprints"]["data"]["para/test"] == expected
    # the trained cell fine-tuned on train_on exactly as the image-text cell of the same method did
    itr = _record(root, "synthetic", "usa")
    assert [e["val"] for e in usa["history"]] == [e["val"] for e in itr["history"]]


def test_table_shows_the_plugin_tasks_column_on_the_image_text_rows(grid: tuple[Path, int, str, str]) -> None:
    root = grid[0]
    rc, md, err = run_main(["table", "--config", str(root / "bench.toml"), "--format", "markdown"])
    assert rc == 0, err
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    assert "para para R@1" in header and "RSUM" in header
    rc, csv_text, _ = run_main(["table", "--config", str(root / "bench.toml"), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert "para_para_r1" in rows[0]
    by_method = {r["method"]: r for r in rows}
    for method in ("zeroshot", "usa"):
        shown = float(by_method[method]["para_para_r1"])
        assert shown == pytest.approx(_record(root, "para", method)["metrics"]["paraphrase"]["r1"], abs=1e-6)


def test_bench_data_prints_the_plugin_tasks_card(grid: tuple[Path, int, str, str]) -> None:
    root = grid[0]
    rc, out, err = run_main(["data", "para", "--config", str(root / "bench.toml"), "--splits", "test", "--json"])
    assert rc == 0, err
    card = json.loads(out.splitlines()[0])
    assert card["sentences"] == 18 and card["paraphrase_groups"] == 6
    assert card["fingerprint"] == _record(root, "para", "zeroshot")["fingerprints"]["data"]["para/test"]


# --- the contract of every task kind ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["itr", "image_retrieval", "sts"])
def test_every_builtin_task_keeps_the_contract(name: str) -> None:
    task = get_task(name)
    cls = type(task)
    assert cls.name == name and cls.title and TASKS.get(name) is cls
    for hook in ("card", "fingerprint", "scorer", "values", "columns"):
        assert getattr(cls, hook) is not getattr(Task, hook), f"{name} does not implement {hook}"
    if task.eval_only:  # its numbers join the image-text rows: it names at least one shown column
        assert any(c.shown for c in task.columns(["mean"]))
        assert "train_on" in task.table_options([])
    else:
        assert task.columns([]) == [] and task.values({"i2t": {"r1": 1.0}}) == {}


def test_loaded_splits_satisfy_the_split_protocol(tmp_path: Path) -> None:
    from bench.data import load_split

    split = load_split("synthetic", {"format": "synthetic", "n_train": 4, "n_val": 4, "n_test": 8, "image_size": 32},
                       "test", work_dir=tmp_path)  # fmt: skip
    assert isinstance(split, Split) and get_task(split.task).name == "itr"
    card = get_task(split.task).card(split)
    assert card["images"] == 8 and card["captions"] == split.n_captions
    assert sum(card["captions_per_image"].values()) == 8  # a histogram over the images


def test_a_task_registered_twice_or_under_another_name_is_refused(plugin: None) -> None:
    class Another(ParaphraseTask):
        pass

    with pytest.raises(ValueError, match="'paraphrase' is already registered"):
        register_task(Another)
    with pytest.raises(ValueError, match="'sts' is already registered"):
        register_task(type("Sts", (ParaphraseTask,), {"name": "sts"}))

    class Misnamed(Task):
        name = "other"

    with pytest.raises(ValueError, match="Misnamed"):
        TASKS.register("not_other", Misnamed)
    with pytest.raises(TypeError, match="expected a subclass of bench.tasks.Task"):
        TASKS.register("plain", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        register_format("nowhere", task="no_such_task")
