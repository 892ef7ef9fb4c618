"""The ``bench`` command: ``list``, ``run``, ``status``, ``table``, ``report``, ``rm``, ``score``, ``compare``,
``export``, ``data``, ``verify``, ``results``, ``query`` and ``leaderboard``.

``main(argv)`` is a plain function, so tests call it as ``main(["run", ...])``. Errors from user input print one line
(``bench: error: ...``) and exit 2; a grid with failed cells exits 1 after writing every cell that finished; Ctrl-C
exits 130 and SIGTERM 143, each with one line. Nothing heavy (torch, numpy) is imported before a command needs it,
so ``bench --help`` and ``bench list`` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from bench.cli.common import add_config_args, add_grid_args, int_at_least
from bench.cli.grid import cmd_list, cmd_run, cmd_status
from bench.cli.results import cmd_report, cmd_rm, cmd_table
from bench.errors import BenchError

__all__ = ["build_parser", "main"]


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and atomic writes unwind as for Ctrl-C."""


_EXAMPLES = {
    "list": """examples:
  bench list
  bench list --config configs/coco-sample.toml""",
    "run": """examples:
  bench run                                            # the default grid of bench.toml
  bench run --models all --methods zeroshot
  bench run --models vse_infty --methods contrastive,cusa --seeds 0,1,2
  bench run --models clip:ViT-B-32/laion2b_s34b_b79k --datasets coco --methods zeroshot
  bench run --set train.epochs=20 --set train.lr=1e-4
  bench run --methods cusa --seeds 0,1,2 --sweep methods.cusa.alpha=0.05,0.1,0.2 --sweep train.lr=1e-4,5e-4
  bench run --launcher slurm --wait
  bench run --models clip --datasets laion-10m --methods zeroshot --shards 64 --launcher slurm""",
    "status": """examples:
  bench status
  bench status --models vse_infty --methods cusa""",
    "table": """examples:
  bench table
  bench table --format latex --standalone --out results/table.tex --plot results/recall.png
  bench table --models vse_infty --methods contrastive,cusa --format csv
  bench table --all                                    # every stored record, not only the configured grid
  bench table --ci                                     # with 95% bootstrap intervals
  bench table --select val --ci                        # sweeps: the variant best on validation, per method
  bench table --all-variants --plot results/sweep.png  # sweeps: every variant; the plot's -sweep.png beside it""",
    "report": """examples:
  bench report --html results/report
  bench report --html results/report --focus vse_infty:cusa --against contrastive""",
    "rm": """examples:
  bench rm --status unavailable                        # forget every 'weights unavailable' row
  bench rm --models clip:ViT-B-32/openai --status any --dry-run""",
}


def _sub(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _version() -> str:
    from bench import __version__

    return f"itr-bench {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bench`` (builds without importing torch or numpy)."""
    from bench.cli.compare import add_compare_parser
    from bench.cli.data import add_data_parser
    from bench.cli.export import add_export_parser
    from bench.cli.leaderboard import add_leaderboard_parser
    from bench.cli.precomp import add_precomp_parser
    from bench.cli.score import add_score_parser
    from bench.cli.store import add_store_parsers
    from bench.cli.verify import add_verify_parser

    parser = argparse.ArgumentParser(
        prog="bench",
        description="itr-bench: image-text retrieval benchmarks (models x datasets x methods x seeds).",
        epilog="`bench <command> --help` describes each command, with examples.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also third-party messages)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = _sub(sub, "list", "list adapters, models, datasets, methods", "Print the adapter families, the models and "
             "datasets of the config, the methods, the dataset formats and the task kinds (plug-ins "
             "included).")  # fmt: skip
    add_config_args(p)
    p.set_defaults(func=cmd_list)

    p = _sub(sub, "run", "run a grid of models × datasets × methods × seeds", "Run every cell of the grid that has "
             "no valid result yet (one JSON record per cell under results/runs) and print its table. A cell whose "
             "stored record has the same config hash is skipped; --force re-runs it.")  # fmt: skip
    add_config_args(p)
    add_grid_args(p)
    p.add_argument("--force", action="store_true", help="re-run cells that already have a result")
    p.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (ours or the libraries')")
    p.add_argument("--launcher", choices=["local", "debug", "slurm"], help="where cells run (default: [launcher] name)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, with a progress bar over cells")
    p.add_argument("--shards", type=int_at_least(1), metavar="N",
                   help="evaluate each (zero-shot, image-text) cell sharded: N encode tasks, then N score tasks, then "
                        "a merge into the same record (slurm: three chained job arrays)")  # fmt: skip
    p.set_defaults(func=cmd_run)

    p = _sub(sub, "status", "state of every cell of a grid", "Show every cell of the grid: done, queued, "
             "running, resumable (a training checkpoint exists), failed (log, last error), cancelled, "
             "missing.")  # fmt: skip
    add_config_args(p)
    add_grid_args(p)
    p.set_defaults(func=cmd_status)

    p = _sub(sub, "table", "render stored results as a table", "Render the stored results of the configured grid "
             "(filtered by --models/--methods/--datasets) in grid order: one Markdown, CSV or LaTeX (booktabs) table "
             "per dataset and split, seeds aggregated as mean ± std.")  # fmt: skip
    add_config_args(p)
    add_grid_args(p)
    p.add_argument("--all", action="store_true", help="every stored record, not only the configured grid's cells")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--standalone", action="store_true", help="LaTeX: a complete document that compiles")
    p.add_argument("--baseline", default=None, help="method the ΔRSUM column compares with (default: contrastive)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--plot", help="also write a PNG of R@K against K to this path")
    p.add_argument("--ci", action="store_true", help="show each value's bootstrap interval (from per-query files)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="bold a best value only when ahead of the runner-up at p < ALPHA (default 0.05)")  # fmt: skip
    p.add_argument("--largest", action="store_true", help="bold the largest value of each column, untested")
    p.add_argument("--select", choices=["val"], default=None,
                   help="sweeps: per model and method only the variant best on validation (mean over seeds), with "
                   "its test numbers; the table says how many variants it chose from")  # fmt: skip
    p.add_argument("--all-variants", action="store_true",
                   help="sweeps: every variant, its swept values as columns, with its validation and test numbers")
    p.add_argument("--languages", nargs="?", const="rsum", default=None, metavar="METRIC",
                   help="only the multilingual tables: a column per language and their mean, of METRIC "
                   "(default rsum; e.g. t2i_r1)")  # fmt: skip
    p.set_defaults(func=cmd_table)

    p = _sub(sub, "rm", "remove stored records", "Remove stored result records, chosen by --models, --methods, "
             "--datasets and --status (default: unavailable and failed), from the configured grid or not.")  # fmt: skip
    add_config_args(p)
    p.add_argument("--models", help="comma-separated model ids (as stored)")
    p.add_argument("--datasets", help="comma-separated dataset ids")
    p.add_argument("--methods", help="comma-separated methods")
    p.add_argument("--status", default="unavailable,failed", help="statuses to remove, or 'any'")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    p.set_defaults(func=cmd_rm)

    p = _sub(sub, "report", "static HTML error-analysis pages", "Write a static page per dataset (no server, "
             "no network): the table with intervals, the R@K plot, failing queries with thumbnails of their top 5, "
             "queries one method gets right and another wrong, and likely false negatives.")  # fmt: skip
    add_config_args(p)
    add_grid_args(p)
    p.add_argument("--html", required=True, metavar="DIR", help="folder to write index.html and the pages to")
    p.add_argument("--all", action="store_true", help="every stored record, not only the configured grid's cells")
    p.add_argument("--focus", metavar="MODEL:METHOD", help="the row whose queries are shown (default: best RSUM)")
    p.add_argument("--against", metavar="METHOD",
                   help="the method it is compared with (default: contrastive, else zeroshot)")  # fmt: skip
    p.add_argument("--examples", type=int, default=8, help="queries shown per section (default 8)")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.set_defaults(func=cmd_report)

    add_score_parser(sub)
    add_compare_parser(sub)
    add_export_parser(sub)
    add_data_parser(sub)
    add_precomp_parser(sub)
    add_verify_parser(sub)
    add_store_parsers(sub)
    add_leaderboard_parser(sub)
    return parser


class _QuietThirdParty(logging.Filter):
    """Drops what libraries log on the root logger (open_clip's "Failed to download weights", said before our own
    one-line error) and their INFO chatter; ``-v`` lets everything through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("bench"):
            return True
        return record.name != "root" and record.levelno >= logging.WARNING


def _setup_logging(verbose: bool, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietThirdParty())
    if quiet:  # the libraries' own progress bars (tqdm >= 4.66 and huggingface_hub read these)
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, getattr(args, "quiet", False))
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = _is_main_thread()  # signal handlers can only be set there (a notebook thread cannot)
    if in_main_thread:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (Ctrl-C); every finished result is kept, `bench run` resumes", file=sys.stderr)
        return 130
    except Terminated:
        print("bench: terminated (SIGTERM); every finished result is kept, `bench run` resumes", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `bench table | head`: the reader left; say nothing more, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
