"""The adapter registry and ``bench.toml``: lookups, registration, option checks, config errors and overrides."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import bench.adapters.registry as registry
import pytest
from bench.adapters.registry import adapter_options, create_adapter, get_adapter_class, list_adapters, register_adapter

from bench.config import BenchConfig, EvalConfig, PathsConfig, TrainConfig, apply_overrides, load_config
from bench.data import format_options, list_formats
from bench.errors import BenchError, ConfigError, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
BENCH_TOML = REPO / "bench.toml"
# The fixed sections are BenchConfig's dataclass-typed fields; the free tables are its dict fields.
_HINTS = typing.get_type_hints(BenchConfig)
SECTIONS = {f.name: _HINTS[f.name] for f in dataclasses.fields(BenchConfig) if dataclasses.is_dataclass(_HINTS[f.name])}
TOP_LEVEL = [f.name for f in dataclasses.fields(BenchConfig) if f.name != "source"]


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _all_named(message: str, names: list[str]) -> None:
    missing = [n for n in names if n not in message]
    assert not missing, f"{missing} not listed in: {message}"


# ---------------------------------------------------------------------------------------------------------------
# Registry


def test_sections_under_test() -> None:
    assert {"paths", "grid", "train", "eval"} <= set(SECTIONS)
    assert {"models", "datasets", "methods"} <= set(TOP_LEVEL) - set(SECTIONS)


def test_builtin_families() -> None:
    names = list_adapters()
    assert names == sorted(names) and {"clip", "towers", "vse_infty"} <= set(names)
    for name in names:
        cls = get_adapter_class(name)
        assert cls.name == name
        assert cls.default_loss in {"infonce", "triplet"}
    assert get_adapter_class("vse_infty").default_loss == "triplet"


def test_unknown_adapter_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_adapter_class("vse_infinity")
    assert isinstance(info.value, KeyError) and isinstance(info.value, BenchError)
    assert "vse_infinity" in str(info.value)
    _all_named(str(info.value), list_adapters())
    with pytest.raises(UnknownNameError, match="vse_infinity"):
        create_adapter("vse_infinity", {})


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """A copy of the registry that the test may add to; the real one is restored afterwards."""
    table = dict(registry.ADAPTERS.load_all())  # built-ins imported and registered first
    monkeypatch.setattr(registry.ADAPTERS, "_items", table)
    return table


def test_duplicate_registration_raises(scratch_registry: dict[str, type]) -> None:
    class Impostor:
        @classmethod
        def build(cls) -> Impostor:
            return cls()

    original = scratch_registry["towers"]
    with pytest.raises(ValueError, match="towers") as info:
        register_adapter("towers")(Impostor)
    assert original.__qualname__ in str(info.value)
    assert scratch_registry["towers"] is original and not hasattr(Impostor, "name")
    # Registering the same class again under its own name is a no-op, not an error (module re-imports).
    assert register_adapter("towers")(original) is original


def test_registration_needs_build(scratch_registry: dict[str, type]) -> None:
    class NoBuild:
        pass

    with pytest.raises(TypeError, match="build"):
        register_adapter("no_build")(NoBuild)
    assert "no_build" not in scratch_registry


def test_register_and_create_new_family(scratch_registry: dict[str, type]) -> None:
    @register_adapter("toy")
    class Toy:
        def __init__(self, width: int, depth: int) -> None:
            self.width, self.depth = width, depth

        @classmethod
        def build(cls, *, width: int, depth: int = 2) -> Toy:
            return cls(width, depth)

    assert "toy" in list_adapters() and Toy.name == "toy"
    assert adapter_options("toy") == {"width": inspect.Parameter.empty, "depth": 2}
    toy = create_adapter("toy", {"width": 7})
    assert (toy.width, toy.depth) == (7, 2)
    with pytest.raises(ConfigError, match="missing required key.*width"):
        create_adapter("toy", {"depth": 3})


def test_create_adapter_unknown_option_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        create_adapter("towers", {"image_modle": "resnet50"}, where="bench.toml: [models.towers]")
    msg = str(info.value)
    assert msg.startswith("bench.toml: [models.towers]") and "image_modle" in msg
    _all_named(msg, list(adapter_options("towers")))
    with pytest.raises(ConfigError, match="adapter 'clip'.*missing required key.*checkpoint"):
        create_adapter("clip", {})


def test_adapter_options_follow_build_signatures() -> None:
    for name in list_adapters():
        params = inspect.signature(get_adapter_class(name).build).parameters
        expected = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert adapter_options(name) == expected and expected, name
    assert adapter_options("clip")["checkpoint"] is inspect.Parameter.empty
    assert adapter_options("vse_infty")["embed_dim"] is None  # 1024, or an official checkpoint's embed_size
    assert adapter_options("vse_infty")["checkpoint"] is None


# ---------------------------------------------------------------------------------------------------------------
# The repository's bench.toml


@pytest.fixture(scope="module")
def repo_config() -> BenchConfig:
    return load_config(BENCH_TOML)


def test_repo_config_loads(repo_config: BenchConfig) -> None:
    from bench.methods import list_methods

    assert repo_config.source == str(BENCH_TOML)
    assert set(repo_config.grid.models) <= set(repo_config.models)
    assert set(repo_config.grid.datasets) <= set(repo_config.datasets)
    assert set(repo_config.grid.methods) <= set(list_methods())
    assert repo_config.models and repo_config.datasets


def test_repo_model_tables_are_valid_build_options(repo_config: BenchConfig) -> None:
    from bench.grid.cell import MODEL_GRID_KEYS

    for mid, spec in repo_config.models.items():
        valid = adapter_options(spec["adapter"])
        options = {k: v for k, v in spec.items() if k != "adapter" and k not in MODEL_GRID_KEYS}
        unknown = sorted(set(options) - set(valid))
        assert not unknown, f"[models.{mid}] keys {unknown} are not build options of {spec['adapter']!r}"
        for key, value in options.items():  # and of the default's type, where the default has one
            default = valid[key]
            if default is not None and default is not inspect.Parameter.empty:
                assert type(value) is type(default), f"[models.{mid}] {key} = {value!r}"
    assert repo_config.models["towers"].get("methods") == ["zeroshot"]


def test_repo_dataset_tables_are_valid_format_options(repo_config: BenchConfig) -> None:
    for did, spec in repo_config.datasets.items():
        assert spec["format"] in list_formats(), did
        unknown = sorted(set(spec) - {"format"} - set(format_options(spec["format"])))
        assert not unknown, f"[datasets.{did}] keys {unknown} are not options of format {spec['format']!r}"


# ---------------------------------------------------------------------------------------------------------------
# Config errors: each names the file and the key


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and "'trian'" in msg
    _all_named(msg, TOP_LEVEL)


@pytest.mark.parametrize("section", list(SECTIONS))
def test_unknown_section_key_lists_valid_keys(tmp_path: Path, section: str) -> None:
    path = _write(tmp_path, f"[{section}]\nnope = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and f"[{section}]" in msg and "'nope'" in msg
    _all_named(msg, _fields(SECTIONS[section]))


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('epochs = "five"', "epochs"),
        ("epochs = true", "epochs"),  # a bool is not an int
        ("epochs = 2.5", "epochs"),
        ('lr = "fast"', "lr"),
        ("amp = 1", "amp"),
        ("freeze_backbone = 3", "freeze_backbone"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    path = _write(tmp_path, f"[train]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and "[train]" in msg and key in msg
    assert line.split(" = ")[1].strip('"') in msg.lower()  # the offending value


def test_accepted_values_and_coercion(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[train]\nlr = 1\nfreeze_backbone = true\nepochs = 3\n[grid]\nseeds = [0, 1]\nmodels = ["m"]\n'
        '[models.m]\nadapter = "towers"\nprojection_dim = 64\n[datasets.d]\nformat = "synthetic"\n',
    )
    cfg = load_config(path)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int where a float goes
    assert cfg.train.freeze_backbone is True and cfg.train.epochs == 3
    assert cfg.grid.seeds == [0, 1] and cfg.grid.models == ["m"]
    assert cfg.models == {"m": {"adapter": "towers", "projection_dim": 64}}
    assert cfg.eval == EvalConfig() and cfg.paths == PathsConfig()  # untouched sections keep their defaults
    assert apply_overrides(cfg, ["eval.precision=bf16"]).eval.precision == "bf16"
    with pytest.raises(ConfigError, match=r"\[grid\]\.seeds"):
        load_config(_write(tmp_path, "[grid]\nseeds = [0, 'one']\n", "seeds.toml"))
    with pytest.raises(ConfigError, match="expected a list"):
        load_config(_write(tmp_path, '[grid]\nmodels = "towers"\n', "models.toml"))


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    path = _write(tmp_path, "[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="malformed TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_free_tables_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[models.m\] has no 'adapter'"):
        load_config(_write(tmp_path, '[models.m]\ncheckpoint = "x"\n', "a.toml"))
    with pytest.raises(ConfigError, match=r"\[datasets.d\] has no 'format'"):
        load_config(_write(tmp_path, '[datasets.d]\nroot = "x"\n', "b.toml"))
    with pytest.raises(ConfigError, match=r"\[models\] must hold one table per id"):
        load_config(_write(tmp_path, "[models]\nm = 3\n", "c.toml"))
    with pytest.raises(ConfigError, match="methods must be a list"):
        load_config(_write(tmp_path, '[models.m]\nadapter = "towers"\nmethods = "zeroshot"\n', "d.toml"))


# ---------------------------------------------------------------------------------------------------------------
# --set overrides


def test_overrides_apply_with_types(repo_config: BenchConfig) -> None:
    cfg = apply_overrides(
        repo_config,
        ["train.lr=1e-3", "grid.models=['towers']", "train.device=cpu", "models.towers.projection_dim=64"],
    )
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.grid.models == ["towers"]
    assert cfg.train.device == "cpu"  # a bare word is a string
    assert cfg.models["towers"]["projection_dim"] == 64
    assert cfg.train.epochs == repo_config.train.epochs and cfg.datasets == repo_config.datasets
    assert repo_config.train.lr == 5e-4 and "projection_dim" not in repo_config.models["towers"]  # not mutated
    assert str(BENCH_TOML) in cfg.source


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.nope=1", "'nope'"),
        ("train.epochs=five", "epochs"),
        ("trian.epochs=3", "unknown section 'trian'"),
        ("train.epochs", "expected section.key=value"),
        ("epochs=3", "expected section.key=value"),
        ("eval.precision=fp16", r"\[eval\]\.precision: expected one of 'auto', 'fp32', 'bf16', got 'fp16'"),
    ],
)
def test_bad_overrides_raise(repo_config: BenchConfig, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        apply_overrides(repo_config, [override])
    if override == "train.nope=1":
        _all_named(str(info.value), _fields(TrainConfig))


# ---------------------------------------------------------------------------------------------------------------
# `bench list` stays light


def test_listing_adapters_imports_no_heavy_library() -> None:
    code = (
        "import bench.cli.main, bench.adapters.registry; bench.adapters.registry.list_adapters(); import sys; "
        "print([m for m in ('timm','open_clip','transformers','sentence_transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
