"""No import cycle between the package's files: every module-level import of ``bench`` and ``bench.adapters`` is
walked (imports inside functions are lazy by design and not counted), and the graph must have no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    out = {}
    for base, package in ((REPO / "bench", "bench"), (REPO / "adapters", "bench.adapters")):
        for path in base.rglob("*.py"):
            parts = [p for p in path.relative_to(base).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {m for m in found if m in known}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert len(graph) > 100 and graph["bench.grid.pipeline"], "the walk sees the package"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_config_imports_nothing_above_it() -> None:
    """``bench.config`` is read by every room; it may lean only on the base modules (errors, names), or a change
    anywhere would reach it back through the grid."""
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    reached, todo = set(), ["bench.config"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    above = {m for m in reached if not m.startswith("bench.config.")} - {"bench.errors", "bench.names"}
    assert not above, sorted(above)
    assert "bench.config.sections" in reached  # the walk follows the package's own modules


def test_import_bench_exposes_the_extenders_types_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bench\n"
        "assert 'torch' not in sys.modules\n"
        "from bench.adapters.protocol import AdapterBase\n"
        "from bench.data.base import RetrievalSplit\n"
        "from bench.grid.records import ResultRecord\n"
        "from bench.methods.base import Method, Objective\n"
        "assert (bench.AdapterBase, bench.RetrievalSplit, bench.Method, bench.Objective, bench.ResultRecord) == "
        "(AdapterBase, RetrievalSplit, Method, Objective, ResultRecord)\n"
        "assert {'AdapterBase', 'ResultRecord', 'run'} <= set(dir(bench))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
