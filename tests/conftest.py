"""Shared fixtures: tiny random models for every adapter family, built offline in about a second each.

Nothing here downloads: ``HF_HUB_OFFLINE`` is set before any hub client is imported.

* ``tiny_text_folder`` (session): a folder holding a 2-layer random BERT (hidden 32) and a WordPiece tokenizer, as
  ``save_pretrained`` writes them; ``adapters._towers.build_text_tower(folder)`` loads it like any local model.
  The vocabulary has every lowercase letter and ``##`` continuation, so any caption tokenises without ``[UNK]``.
* ``TINY_TIMM``: a timm test model name (``weights="random"``) used as the tiny image backbone.
* ``TINY_CLIP_CONFIG`` / ``TINY_CLIP_ARCH``: the open_clip config ``tests/fixtures/tiny_clip.json``; its file name
  (``tiny_clip``) becomes the architecture name once ``model_config`` registers it.
* ``tiny_options`` (session): per adapter family, the ``create_adapter`` options of a tiny instance.
* ``build_tiny`` (session): ``build_tiny(family, **overrides)`` builds a fresh tiny adapter (seeded, eval mode).
* ``tiny_adapter`` (session): ``tiny_adapter(family)`` returns one cached instance per family; do not mutate it.
* ``rgb_images``: a few random PIL images of different sizes, to feed through an adapter's ``image_transform``.
* ``single_thread`` (module): torch on one intra-op thread while a module runs. Tiny models are as fast on one
  thread when the machine is idle and 10-50x faster when other jobs share its cores (OpenMP threads spin against
  each other). Opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.

A new adapter family needs an entry in :func:`tiny_options`; the registry-wide tests fail until it has one.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

# Before any test module imports huggingface_hub (it reads these at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_TIMM = "test_byobnet"  # ~0.2 M parameters, 160x160 input, the fastest timm test model on CPU
TINY_CLIP_CONFIG = FIXTURES / "tiny_clip.json"
TINY_CLIP_ARCH = TINY_CLIP_CONFIG.stem  # open_clip.add_model_config registers a JSON file under its stem

# Whole words for the captions the tests write; anything else falls back to letters (a-z, ##a-##z).
_WORDS = (
    "a an the one two three some of on in at with and is are near next to by under over left right top bottom "
    "centre center dog dogs cat cats man woman people person horse horses bike car street grass window red blue "
    "green yellow black white circle circles square squares triangle triangles star stars box boxes sits sit runs "
    "rides ride down up photo picture image there"
).split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    letters = list(string.ascii_lowercase)
    pieces = letters + [f"##{c}" for c in letters] + list(string.digits) + [f"##{d}" for d in string.digits]
    punct = list(".,;:!?'\"-()/&")
    words = [w for w in dict.fromkeys(_WORDS) if w not in pieces]
    return _SPECIAL + pieces + punct + words


@pytest.fixture(scope="session")
def tiny_text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with a tiny random BERT and its tokenizer (``config.json``, weights, ``vocab.txt``, ...)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # from_pretrained on the folder reads vocab.txt in every transformers version (v5 dropped vocab_file=).
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids("dog") == vocab.index("dog"), "tiny tokenizer did not read vocab.txt"
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(vocab),
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_options(tiny_text_folder: Path) -> dict[str, dict[str, Any]]:
    """``create_adapter`` options of a tiny instance of every built-in family (keys: family names)."""
    text = str(tiny_text_folder)
    return {
        "vse_infty": {
            "image_backbone": TINY_TIMM,
            "image_weights": "random",
            "text_backbone": text,
            "embed_dim": 24,
            "image_mlp": True,
        },
        "towers": {"image_model": TINY_TIMM, "image_weights": "random", "text_model": text},
        "clip": {"checkpoint": TINY_CLIP_ARCH, "pretrained": "random", "model_config": str(TINY_CLIP_CONFIG)},
    }


@pytest.fixture(scope="session")
def build_tiny(tiny_options: dict[str, dict[str, Any]]) -> Callable[..., Any]:
    """``build_tiny(family, **overrides)``: a fresh tiny adapter through the registry, seeded and in eval mode."""
    from bench.registry import create_adapter

    def build(family: str, seed: int = 0, **overrides: Any) -> Any:
        if family not in tiny_options:
            pytest.fail(f"adapter family {family!r} has no tiny builder: add it to tiny_options in tests/conftest.py")
        torch.manual_seed(seed)
        return create_adapter(family, {**tiny_options[family], **overrides}).eval()

    return build


@pytest.fixture(scope="session")
def tiny_adapter(build_tiny: Callable[..., Any]) -> Callable[[str], Any]:
    """``tiny_adapter(family)``: one shared tiny adapter per family, built on first use. Read-only for tests."""
    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            cache[family] = build_tiny(family)
        return cache[family]

    return get


@pytest.fixture
def rgb_images() -> list[Image.Image]:
    """Three random RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    sizes = [(64, 48), (40, 90), (120, 120)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def single_thread() -> Any:
    """Run a module's tests with one torch intra-op thread (``ITR_BENCH_TEST_THREADS`` overrides), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ITR_BENCH_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
