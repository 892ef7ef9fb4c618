"""What a sweep of a few hundred cells costs before anything runs: expanding and checking the grid (every value
checked, every cell planned), and ``bench status`` over it (every cell's record looked up).

A 5 x 4 x 3 sweep of CUSA's alpha, beta and tau_teacher over 5 seeds on the synthetic set (300 cells). With
``--slurm`` (a cluster answering ``sinfo``, e.g. ``bash .ci/slurm-local.sh up``) it also submits a 200-cell sweep
(towers zero-shot over ``eval.topk``) as one job array, times the submission, ``bench status`` and a second
``bench run`` (which must submit nothing), then cancels the array:

    python benchmarks/sweep_plan.py [--seeds 5] [--repeat 3] [--slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.config import apply_overrides, load_config
from bench.grid.local import expand_grid
from bench.grid.slurm import grid_status

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["methods.cusa.alpha=0.0,0.05,0.1,0.2,0.5", "methods.cusa.beta=0.0,0.25,0.5,1.0",
         "methods.cusa.tau_teacher=0.05,0.2,1.0"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slurm", action="store_true", help="also submit a 200-cell sweep to the SLURM cluster")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # cancelled jobs may still write
        paths = [f"paths.results_dir={Path(tmp) / 'results'}", f"paths.work_dir={Path(tmp) / 'work'}"]
        cfg = apply_overrides(load_config(ROOT / "bench.toml"), paths)
        seeds = list(range(args.seeds))
        plan, status = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cells = expand_grid(cfg, models=["vse_infty"], methods=["cusa"], seeds=seeds, sweep=SWEEP, yes=True)
            plan.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows = grid_status(cfg, cells)
            status.append(time.perf_counter() - t0)
        variants = len({c.method_id for c in cells})
        states = sorted({r.state for r in rows})
        print(f"cells: {len(cells)} ({variants} variants x {len(seeds)} seeds); states {states}")
        print(f"expand + check + plan: first {plan[0]:.2f} s, then median {sorted(plan[1:])[len(plan[1:]) // 2]:.2f} s "
              "(variant configs cached per process)")  # fmt: skip
        print(f"bench status walk:     median {sorted(status)[len(status) // 2]:.2f} s")
        if args.slurm:
            slurm(Path(tmp))


def _bench(argv: list[str]) -> tuple[float, str]:
    from bench.cli.main import main as bench_main

    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = bench_main(argv)
    if rc not in (0, 1):
        raise SystemExit(f"bench {argv[0]} exited {rc}: {err.getvalue()[-500:]}")
    return time.perf_counter() - t0, err.getvalue()


def slurm(tmp: Path) -> None:
    """Submit a 200-cell sweep as one job array; time submission, status and a second run; cancel it."""
    config = tmp / "slurm.toml"
    config.write_text((ROOT / "bench.toml").read_text().replace('results_dir = "results"', f'results_dir = "{tmp}/r"')
                      .replace('work_dir = "work_dir"', f'work_dir = "{tmp}/w"'))  # fmt: skip
    grid = ["--config", str(config), "--models", "towers", "--set", "launcher.cpus_per_task=1", "--set",
            "launcher.mem_gb=2", "--sweep", "eval.topk=" + ",".join(map(str, range(1, 201)))]  # fmt: skip
    seconds, err = _bench(["run", *grid, "-q", "--launcher", "slurm"])
    array = re.search(r"\(job (\d+)\)", err)
    try:
        print(f"slurm: submitted 200 cells as one array in {seconds:.2f} s ({err.strip().splitlines()[-2]})")
        seconds, _ = _bench(["status", *grid])
        print(f"slurm: bench status over the 200 cells {seconds:.2f} s")
        seconds, err = _bench(["run", *grid, "-q", "--launcher", "slurm"])
        print(f"slurm: a second bench run {seconds:.2f} s: {err.strip().splitlines()[-2]}")
    finally:
        if array:
            subprocess.run(["scancel", array.group(1)], check=False)


if __name__ == "__main__":
    main()
