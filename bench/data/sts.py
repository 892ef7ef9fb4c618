"""Semantic textual similarity (STS) sets (eval-only): sentence pairs with gold similarity scores.

Formats (``format = ...`` in a dataset table):

* ``stsb``: STS Benchmark, ``sts-{train,dev,test}.csv`` in root (SentEval's ``STSBenchmark`` folder). Tab separated,
  no header, no quoting: ``genre, file, year, id, score, sentence1, sentence2`` (a few lines carry extra source
  columns after sentence2; they are ignored). Split ``val`` reads ``sts-dev.csv``.
* ``sick``: SICK-R. Either the full ``SICK.txt`` (its ``SemEval_set`` column picks TRAIN / TRIAL / TEST) or SentEval's
  ``SICK_train.txt`` / ``SICK_trial.txt`` / ``SICK_test_annotated.txt``; tab separated with a header holding
  ``sentence_A``, ``sentence_B`` and ``relatedness_score``. Split ``val`` or ``dev`` reads TRIAL.
* ``sts_tsv``: plain TSV files of ``sentence1, sentence2, score`` (an optional header line is skipped). Option
  ``files``: split -> file name or list of file names, relative to root (default ``{split}.tsv``).
* ``senteval_sts``: SemEval STS 2012-2016 in SentEval's layout (``downstream/STS``): option ``year`` (12-16) reads
  ``STS{year}-en-test/STS.input.<subset>.txt`` (``sentence1 <tab> sentence2`` per line) and ``STS.gs.<subset>.txt``
  (one gold score per line, blank where a pair has none: that pair is dropped, as SentEval does). Split ``test``.
  All subsets form one group, ``STS{year}``: the CUSA paper reports SentEval's "all" Spearman, computed over the
  subsets of a year concatenated (``groups = "subsets"`` keeps one group per subset instead).

Each file is a group (named by its stem): the metric is Spearman per group and their mean, as the CUSA paper reports
STS12-16 (subsets of a year concatenated into one file), STS-B and SICK-R. Errors name the file, the line (1-based)
and the field.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.data.base import read_text, text_rows
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["STSSplit", "load_senteval_sts", "load_sick", "load_sts_tsv", "load_stsb"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class STSSplit:
    """Sentence pairs with gold similarity scores, grouped by the file they came from.

    Attributes:
        dataset: Dataset name.
        split: Split name.
        sentence1: First sentence of each pair.
        sentence2: Second sentence of each pair.
        scores: float64 ``[n_pairs]`` gold scores (any scale; only their ranks matter).
        groups: The group (file stem) of each pair; Spearman is computed per group.
        source: The file (or folder, for several files) read, named in errors.
    """

    task: ClassVar[str] = "sts"

    dataset: str
    split: str
    sentence1: Sequence[str]
    sentence2: Sequence[str]
    scores: np.ndarray
    groups: Sequence[str]
    source: Path | None = None

    def __post_init__(self) -> None:
        where = str(self.source or f"{self.dataset}/{self.split}")
        n = len(self.sentence1)
        if n == 0:
            raise DataError(f"{where}: split {self.split!r} has no sentence pairs")
        if len(self.sentence2) != n or np.shape(self.scores) != (n,) or len(self.groups) != n:
            raise DataError(f"{where}: sentence1, sentence2, scores and groups differ in length")
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64))

    def __str__(self) -> str:
        return f"{self.n_pairs} sentence pairs in {len(self.group_names())} file(s)"

    @property
    def n_pairs(self) -> int:
        """Number of sentence pairs."""
        return len(self.sentence1)

    def group_names(self) -> list[str]:
        """Group names in order of first appearance."""
        return list(dict.fromkeys(self.groups))

    def sentences(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Each distinct sentence once, and the rows of ``sentence1`` and ``sentence2`` in that list (int64)."""
        index: dict[str, int] = {}
        a = np.asarray([index.setdefault(s, len(index)) for s in self.sentence1], dtype=np.int64)
        b = np.asarray([index.setdefault(s, len(index)) for s in self.sentence2], dtype=np.int64)
        return list(index), a, b


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _score(value: str, path: Path, line: int, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DataError(f"{path.name} line {line}: field {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise DataError(f"{path.name} line {line}: field {name!r} is {value!r}")
    return score


def _sentence(value: str, path: Path, line: int, name: str) -> str:
    if not value.strip():
        raise DataError(f"{path.name} line {line}: field {name!r} is empty")
    return value.strip()


class _Pairs:
    def __init__(self) -> None:
        self.s1: list[str] = []
        self.s2: list[str] = []
        self.scores: list[float] = []
        self.groups: list[str] = []

    def add(self, s1: str, s2: str, score: float, group: str) -> None:
        self.s1.append(s1)
        self.s2.append(s2)
        self.scores.append(score)
        self.groups.append(group)

    def build(self, name: str, split: str, source: Path) -> STSSplit:
        if not self.s1:
            raise DataError(f"{source}: no sentence pairs for split {split!r}")
        return STSSplit(name, split, self.s1, self.s2, np.asarray(self.scores), self.groups, source=source)


# --------------------------------------------------------------------------------------------------------------------
# STS Benchmark


_STSB_FIELDS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")


@register_format("stsb", task="sts")
def load_stsb(root: Path, split: str, *, name: str = "stsb") -> STSSplit:
    """STS Benchmark (STS-B): 1,379 test / 1,500 dev / 5,749 train pairs scored 0-5.

    Args:
        root: The ``STSBenchmark`` folder holding ``sts-{train,dev,test}.csv``.
        split: ``test``, ``dev`` (or ``val``) or ``train``.
        name: Dataset name stamped on the split.

    Returns:
        The split, one group (the file).
    """
    stem = {"val": "dev"}.get(split, split)
    path = root / f"sts-{stem}.csv"
    if not path.is_file():
        available = [s for s in ("train", "dev", "test") if (root / f"sts-{s}.csv").is_file()]
        hint = f"available splits: {', '.join(available)}" if available else "no sts-*.csv files there"
        raise SplitNotFoundError(f"{path}: sentence-pair file for split {split!r} not found; {hint}")
    pairs = _Pairs()
    for line, parts in text_rows(path, "sentence-pair file", "\t"):
        if len(parts) < len(_STSB_FIELDS):
            raise DataError(
                f"{path.name} line {line}: expected {len(_STSB_FIELDS)} tab-separated fields "
                f"({', '.join(_STSB_FIELDS)}), got {len(parts)}"
            )
        pairs.add(
            _sentence(parts[5], path, line, "sentence1"),
            _sentence(parts[6], path, line, "sentence2"),
            _score(parts[4], path, line, "score"),
            path.stem,
        )
    return pairs.build(name, split, path)


# --------------------------------------------------------------------------------------------------------------------
# SICK-R


_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
_SICK_SETS = {"train": "TRAIN", "dev": "TRIAL", "test": "TEST"}


@register_format("sick", task="sts")
def load_sick(root: Path, split: str, *, name: str = "sick", file: str | None = None) -> STSSplit:
    """SICK-R: relatedness scores (1-5) of 4,927 test / 500 trial / 4,500 train pairs.

    Args:
        root: Folder holding ``SICK.txt`` or SentEval's ``SICK_{train,trial,test_annotated}.txt``.
        split: ``test``, ``dev`` (or ``val``; the TRIAL set) or ``train``.
        name: Dataset name stamped on the split.
        file: Read this file (relative to root) instead; with a ``SemEval_set`` column its rows are filtered.

    Returns:
        The split, one group (the file).
    """
    key = {"val": "dev", "trial": "dev"}.get(split, split)
    if key not in _SICK_FILES:
        raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits: train, dev, test")
    if file is not None:
        path = root / file
    elif (root / _SICK_FILES[key]).is_file():
        path = root / _SICK_FILES[key]
    else:
        path = root / "SICK.txt"
        if not path.is_file():
            raise DataError(f"{root}: neither {_SICK_FILES[key]} nor SICK.txt found")
    pairs = _Pairs()
    header: list[str] | None = None
    col: dict[str, int] = {}
    for line, parts in text_rows(path, "sentence-pair file", "\t"):
        if header is None:
            header = [p.strip() for p in parts]
            missing = [c for c in ("sentence_A", "sentence_B", "relatedness_score") if c not in header]
            if missing:
                raise DataError(f"{path.name} line {line}: header lacks {', '.join(missing)}; got {', '.join(header)}")
            col = {c: header.index(c) for c in header}
            continue
        if len(parts) < len(header):
            raise DataError(f"{path.name} line {line}: expected {len(header)} fields, got {len(parts)}")
        if "SemEval_set" in col and parts[col["SemEval_set"]].strip() != _SICK_SETS[key]:
            continue
        pairs.add(
            _sentence(parts[col["sentence_A"]], path, line, "sentence_A"),
            _sentence(parts[col["sentence_B"]], path, line, "sentence_B"),
            _score(parts[col["relatedness_score"]], path, line, "relatedness_score"),
            path.stem,
        )
    if header is None:
        raise DataError(f"{path}: empty file")
    return pairs.build(name, split, path)


# --------------------------------------------------------------------------------------------------------------------
# plain TSV


def _tsv_files(root: Path, split: str, files: Mapping[str, str | list[str]] | None) -> list[Path]:
    if files is None:
        path = root / f"{split}.tsv"
        if not path.is_file():
            found = sorted(p.name for p in root.glob("*.tsv")) if root.is_dir() else []
            raise SplitNotFoundError(f"{path}: not found; set option 'files' (tsv files in root: {found or 'none'})")
        return [path]
    if not isinstance(files, Mapping):
        raise ConfigError(f"option 'files' must map split names to file names, got {files!r}")
    if split not in files:
        raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits (option 'files'): {sorted(files)}")
    names = files[split]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"option 'files': split {split!r} must name a file or a list of files, got {names!r}")
    return [Path(n) if os.path.isabs(n) else root / n for n in names]


@register_format("sts_tsv", task="sts")
def load_sts_tsv(
    root: Path, split: str, *, name: str = "sts_tsv", files: dict[str, str | list[str]] | None = None
) -> STSSplit:
    """Plain TSV sentence pairs: ``sentence1 <tab> sentence2 <tab> score``, one file per group.

    Args:
        root: Folder holding the files.
        split: Split name (a key of ``files``).
        name: Dataset name stamped on the split.
        files: Split -> file name or list of file names (each its own group); default ``{split}.tsv``.

    Returns:
        The split, one group per file.
    """
    paths = _tsv_files(root, split, files)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"option 'files': two files of split {split!r} share a name ({', '.join(stems)})")
    pairs = _Pairs()
    for path in paths:
        n_before = len(pairs.s1)
        for line, parts in text_rows(path, "sentence-pair file", "\t"):
            if len(parts) < 3:
                raise DataError(f"{path.name} line {line}: expected 3 tab-separated fields (sentence1, sentence2, "
                                f"score), got {len(parts)}")  # fmt: skip
            if line == 1 and _is_header(parts[2]):
                continue
            pairs.add(
                _sentence(parts[0], path, line, "sentence1"),
                _sentence(parts[1], path, line, "sentence2"),
                _score(parts[2], path, line, "score"),
                path.stem,
            )
        if len(pairs.s1) == n_before:
            raise DataError(f"{path}: no sentence pairs")
    return pairs.build(name, split, paths[0] if len(paths) == 1 else root)


def _is_header(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return True
    return False


# --------------------------------------------------------------------------------------------------------------------
# SentEval STS12-16


@register_format("senteval_sts", task="sts")
def load_senteval_sts(root: Path, split: str, *, name: str = "senteval_sts", year: int = 12,
                      groups: str = "all") -> STSSplit:  # fmt: skip
    """SemEval STS 20``year`` in SentEval's layout; see the module docstring.

    Args:
        root: SentEval's ``downstream/STS`` folder (holding ``STS12-en-test`` ... ``STS16-en-test``).
        split: ``test`` (the years are test sets only).
        name: Dataset name stamped on the split.
        year: 12, 13, 14, 15 or 16.
        groups: ``all`` (one group over every subset: the paper's score) or ``subsets`` (one group per subset).
    """
    if year not in (12, 13, 14, 15, 16):
        raise ConfigError(f"option 'year' must be one of 12, 13, 14, 15, 16 (STS12-16), got {year!r}")
    if groups not in ("all", "subsets"):
        raise ConfigError(f"option 'groups' must be 'all' or 'subsets', got {groups!r}")
    if split != "test":
        raise SplitNotFoundError(f"{root}: STS{year} has only a test split, not {split!r}")
    folder = root / f"STS{year}-en-test"
    inputs = sorted(folder.glob("STS.input.*.txt")) if folder.is_dir() else []
    if not inputs:
        raise DataError(f"{folder}: no STS.input.<subset>.txt files (SentEval's downstream/STS layout expected)")
    pairs = _Pairs()
    for path in inputs:
        subset = path.name[len("STS.input.") : -len(".txt")]
        gold_path = folder / f"STS.gs.{subset}.txt"
        if not gold_path.is_file():
            raise DataError(f"{path}: no gold file {gold_path.name} beside it")
        rows = read_text(path, "sentence-pair file").splitlines()
        gold = read_text(gold_path, "gold-score file").splitlines()
        if len(gold) != len(rows):
            raise DataError(f"{gold_path}: {len(gold)} lines, but {path.name} has {len(rows)} sentence pairs")
        for line, (row, score) in enumerate(zip(rows, gold, strict=True), start=1):
            if not score.strip():
                continue  # a pair without a gold score: dropped
            parts = row.split("\t")
            if len(parts) < 2:
                raise DataError(f"{path.name} line {line}: expected 2 tab-separated sentences, got {len(parts)} field")
            # SentEval splits each sentence into whitespace tokens; the model reads them joined by single spaces.
            pairs.add(
                " ".join(_sentence(parts[0], path, line, "sentence1").split()),
                " ".join(_sentence(parts[1], path, line, "sentence2").split()),
                _score(score, gold_path, line, "score"),
                f"STS{year}" if groups == "all" else subset,
            )
    return pairs.build(name, split, folder)
