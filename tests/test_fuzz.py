"""No traceback reaches the user: property-based inputs (``hypothesis``) to the real loaders and CLI entry points.

Every generated config, annotation file, image file and ``bench score`` input must end in success or in one clean
error (a :class:`BenchError`, printed as one ``bench: error:`` line with exit code 1 or 2), never in another
exception. CI runs a bounded number of examples per target; ``-m slow`` runs many more.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli.main import main
from bench.data import load_split
from bench.data.base import load_image
from bench.errors import BenchError

FAST, SLOW = 30, 600
_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "database": None}

# ---------------------------------------------------------------------------------------------------------------
# values and TOML

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "cuda", "synthetic", "towers", "vse_infty", "zeroshot", "contrastive", "..", "/"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))

KEYS = {
    "paths": ["results_dir", "work_dir", "junk"],
    "grid": ["models", "datasets", "methods", "seeds", "junk"],
    "train": ["epochs", "batch_size", "lr", "grad_accum", "device", "freeze_backbone", "loss", "val_fraction", "junk"],
    "eval": ["batch_size", "memory_mb", "precision", "rerank_k", "rerank_fusion", "split", "junk"],
    "teachers": ["image_model", "image_mode", "text_max_length", "junk"],
    "launcher": ["name", "gpus_per_node", "mem_gb", "sbatch", "junk"],
}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else json.dumps(k, ensure_ascii=False)


TABLE_KEYS = {
    "models.vse_infty": ["adapter", "embed_dim", "image_backbone", "max_length", "methods", "train", "junk"],
    "models.towers": ["adapter", "methods", "projection_dim", "junk"],
    "datasets.synthetic": ["format", "seed", "n_train", "n_test", "image_size", "root", "junk"],
}


def dump_toml(data: dict[str, Any]) -> str:
    """A TOML text of ``data`` (top-level tables of scalars, lists and tables)."""
    out = []
    for name, table in data.items():
        subtables = {
            k: v for k, v in table.items() if isinstance(v, dict) and name in ("models", "datasets", "methods")
        }
        plain = {k: v for k, v in table.items() if k not in subtables}
        if plain or not subtables:
            out.append(f"[{toml_key(name)}]")
            out += [f"{toml_key(k)} = {toml_inline(v)}" for k, v in plain.items()]
        for sub, body in subtables.items():
            out.append(f"[{toml_key(name)}.{toml_key(sub)}]")
            out += [f"{toml_key(k)} = {toml_inline(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


def toml_inline(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_inline(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(toml_inline(x) for x in v) + "]"
    return toml_value(v)


def _base_config(tmp: str) -> dict[str, Any]:
    import tomllib

    from tiny_grid import write_config

    path = write_config(Path(tmp) / "base.toml", results=Path(tmp) / "results", work=Path(tmp) / "work")
    return tomllib.loads(path.read_text())


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """Edits of a valid tiny grid config: (table, key, value), the table dotted for model and dataset tables."""
    tables = st.sampled_from([*KEYS, *TABLE_KEYS, "bogus", "models.m 1", "models.m_1", "datasets.a/b", "methods.."])
    out = []
    for table in draw(st.lists(tables, min_size=1, max_size=4)):
        key = draw(st.sampled_from(KEYS.get(table) or TABLE_KEYS.get(table) or ["adapter", "format", "x"]))
        out.append((table, key, draw(values)))
    return out


def apply(data: dict[str, Any], edits: list[tuple[str, str, Any]]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for table, key, value in edits:
        top, _, sub = table.partition(".")
        node = data.setdefault(top, {})
        if sub:
            node = node.setdefault(sub, {})
        if isinstance(node, dict):
            node[key] = value
    return data


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def check_config(edits: list[tuple[str, str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(dump_toml(apply(_base_config(tmp), edits)))
        for argv in (["list", "--config", str(path)], ["status", "--config", str(path)],
                     ["table", "--config", str(path)]):  # fmt: skip
            rc, err = _cli(argv)  # any exception other than a clean exit fails the test
            assert rc in (0, 1, 2), (rc, err)
            assert "Traceback" not in err
            if rc == 2:
                assert err.strip().splitlines()[-1].startswith("bench: error: ")


@settings(max_examples=FAST, **_SETTINGS)
@given(mutations())
def test_configs_never_raise(edits: list[tuple[str, str, Any]]) -> None:
    check_config(edits)


@pytest.mark.slow
@settings(max_examples=SLOW, **_SETTINGS)
@given(mutations())
def test_configs_never_raise_long(edits: list[tuple[str, str, Any]]) -> None:
    check_config(edits)


# ---------------------------------------------------------------------------------------------------------------
# annotation files

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
row_keys = st.sampled_from(["image_path", "caption", "image_id", "image", "filepath", "filename", "cocoid", "split",
                            "sentences", "raw"])  # fmt: skip
rows = st.lists(st.dictionaries(row_keys, st.one_of(json_values, st.sampled_from(["a.jpg", "images/a.jpg", "test"])),
                                max_size=5), max_size=4)  # fmt: skip
FORMATS = {
    "flat_json": "test.json",
    "albef": "coco_karpathy_test.json",
    "karpathy": "dataset_coco.json",
    "csv": "test.csv",
}


def check_annotations(fmt: str, content: Any, raw: bytes | None) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        Image.new("RGB", (4, 4)).save(root / "images" / "a.jpg")
        Image.new("RGB", (4, 4)).save(root / "a.jpg")
        name = FORMATS[fmt]
        if raw is not None:
            (root / name).write_bytes(raw)
        elif fmt == "csv":
            (root / name).write_text("filepath,caption\n" + "\n".join(",".join(map(str, r.values())) for r in content))
        elif fmt == "karpathy":
            (root / name).write_text(json.dumps({"images": content}))
        else:
            (root / name).write_text(json.dumps(content))
        try:
            split = load_split("d", {"format": fmt, "root": str(root)}, "test", work_dir=root)
        except BenchError:
            return
        assert split.n_images >= 1 and split.n_captions == len(split.caption_to_image)


@settings(max_examples=FAST, **_SETTINGS)
@given(st.sampled_from(sorted(FORMATS)), rows, st.one_of(st.none(), st.binary(max_size=40)))
def test_annotation_files_never_raise(fmt: str, content: Any, raw: bytes | None) -> None:
    check_annotations(fmt, content, raw)


@pytest.mark.slow
@settings(max_examples=SLOW, **_SETTINGS)
@given(st.sampled_from(sorted(FORMATS)), rows, st.one_of(st.none(), st.binary(max_size=40)))
def test_annotation_files_never_raise_long(fmt: str, content: Any, raw: bytes | None) -> None:
    check_annotations(fmt, content, raw)


# ---------------------------------------------------------------------------------------------------------------
# image files


def _png_bytes(mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


images = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda m, w, h, cut: _png_bytes(m, (w, h))[:cut],
        st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
        st.integers(1, 20),
        st.integers(1, 20),
        st.integers(0, 400),
    ),  # fmt: skip
)


def check_image(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        try:
            im = load_image(path)
        except BenchError as e:
            assert str(path) in str(e)
            return
        assert im.mode == "RGB"


@settings(max_examples=FAST, **_SETTINGS)
@given(images)
def test_image_files_never_raise(data: bytes) -> None:
    check_image(data)


@pytest.mark.slow
@settings(max_examples=SLOW, **_SETTINGS)
@given(images)
def test_image_files_never_raise_long(data: bytes) -> None:
    check_image(data)


# ---------------------------------------------------------------------------------------------------------------
# bench score inputs

dtypes = st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<f2", "<i8", ">i4", "|u1", "|b1", "<c8"])
shapes = st.one_of(st.tuples(st.integers(0, 6)), st.tuples(st.integers(0, 6), st.integers(0, 4)),
                   st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2)))  # fmt: skip
specials = st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf, 1e300, 1e-300, 3.0])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    shape, dtype = draw(shapes), np.dtype(draw(dtypes))
    n = int(np.prod(shape))
    vals = draw(st.lists(specials, min_size=n, max_size=n))
    with np.errstate(all="ignore"):
        return np.asarray(vals, dtype=np.float64).astype(dtype).reshape(shape)


def check_score(img: np.ndarray, txt: np.ndarray, c2i: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, arr in (("I", img), ("T", txt), ("M", c2i)):
            np.save(Path(tmp) / f"{name}.npy", arr)
            paths.append(str(Path(tmp) / f"{name}.npy"))
        rc, err = _cli(["score", "--image-emb", paths[0], "--text-emb", paths[1], "--text-to-image", paths[2]])
        assert rc in (0, 2) and "Traceback" not in err, err
        if rc == 2:
            assert err.strip().splitlines()[-1].startswith("bench: error: ")


@settings(max_examples=FAST, **_SETTINGS)
@given(arrays(), arrays(), arrays())
def test_score_inputs_never_raise(img: np.ndarray, txt: np.ndarray, c2i: np.ndarray) -> None:
    check_score(img, txt, c2i)


@pytest.mark.slow
@settings(max_examples=SLOW, **_SETTINGS)
@given(arrays(), arrays(), arrays())
def test_score_inputs_never_raise_long(img: np.ndarray, txt: np.ndarray, c2i: np.ndarray) -> None:
    check_score(img, txt, c2i)


# ---------------------------------------------------------------------------------------------------------------
# whole runs: whatever the settings, every record written is complete


@st.composite
def run_edits(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    small = st.one_of(st.integers(-2, 40), st.floats(-1, 1e4), st.sampled_from(["auto", "x", True, math.nan]))
    keys = {"eval": ["batch_size", "memory_mb", "precision", "split"],
            "datasets.synthetic": ["n_test", "n_val", "image_size", "seed"]}  # fmt: skip
    table = draw(st.sampled_from(sorted(keys)))
    return [(table, draw(st.sampled_from(keys[table])), draw(small)) for _ in range(draw(st.integers(1, 2)))]


def check_run(edits: list[tuple[str, str, Any]]) -> None:
    from bench.grid.records import record_problem

    with tempfile.TemporaryDirectory() as tmp:
        data = _base_config(tmp)
        data["grid"] = {**data["grid"], "models": ["towers"], "methods": ["zeroshot"]}
        path = Path(tmp) / "bench.toml"
        path.write_text(dump_toml(apply(data, edits)))
        rc, err = _cli(["run", "--config", str(path), "-q", "--no-table"])
        assert rc in (0, 1, 2) and "Traceback" not in err, err[-2000:]
        for record in (Path(tmp) / "results").rglob("*.json"):
            assert record_problem(json.loads(record.read_text())) is None, record
        assert not list(Path(tmp).rglob("*.tmp"))


@settings(max_examples=6, **_SETTINGS)
@given(run_edits())
def test_runs_write_only_complete_records(edits: list[tuple[str, str, Any]]) -> None:
    check_run(edits)


@pytest.mark.slow
@settings(max_examples=60, **_SETTINGS)
@given(run_edits())
def test_runs_write_only_complete_records_long(edits: list[tuple[str, str, Any]]) -> None:
    check_run(edits)
