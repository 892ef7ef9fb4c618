"""Shared fixtures: tiny random models for every adapter family, built offline in about a second each.

Nothing here downloads: ``HF_HUB_OFFLINE`` is set before any hub client is imported.

* ``tiny_text_folder`` (session): a folder holding a 2-layer random BERT (hidden 32) and a WordPiece tokenizer, as
  ``save_pretrained`` writes them; ``bench.adapters.backbones.build_text_tower(folder)`` loads it like any local model.
  The vocabulary has every lowercase letter and ``##`` continuation, so any caption tokenises without ``[UNK]``.
* ``TINY_TIMM``: a timm test model name (``weights="random"``) used as the tiny image backbone.
* ``TINY_CLIP_CONFIG`` / ``TINY_CLIP_ARCH``: the open_clip config ``tests/fixtures/tiny_clip.json``; its file name
  (``tiny_clip``) becomes the architecture name once ``model_config`` registers it.
* ``tiny_blip_folder`` (session): a tiny random ``BlipForImageTextRetrieval`` and its ``BlipProcessor``, saved.
* ``tiny_hf_clip_folder`` / ``tiny_siglip_folder`` (session): a tiny random transformers ``CLIPModel`` /
  ``SiglipModel`` and its processor, saved.
* ``tiny_embeddings_split`` (session): ``.npy`` rows and the split they belong to, for the ``embeddings`` family;
  ``build_tiny("embeddings")`` binds the adapter to that split's content.
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

import json
import os
import shutil
import string
import subprocess
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
def tiny_blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with a tiny random ``BlipForImageTextRetrieval`` (hidden 32, 2 layers, 32 px images in 8 px
    patches, 16-d ITC space) and its ``BlipProcessor`` (the WordPiece vocabulary above), as ``save_pretrained``
    writes them."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("tiny_blip")
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    # As BLIP builds its tokenizer: BERT's vocabulary, then [DEC] (the decoder's bos) and [ENC] (ITM's first token).
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    special = {"pad_token_id": 0, "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
               "sep_token_id": vocab.index("[SEP]")}  # fmt: skip
    config = BlipConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "eos_token_id": special["sep_token_id"],
                     **special},
        # The vision default initializer_range (1e-10) leaves every CLS token alike; 0.02 gives distinct images.
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "initializer_range": 0.02},
        image_text_hidden_size=16,
    )  # fmt: skip
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).save_pretrained(str(folder))
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(str(folder))
    return folder


def _tiny_dual_encoder(folder: Path, family: str) -> Path:
    """Save a tiny random transformers CLIP or SigLIP (hidden 32, 2 layers, 32 px images in 8 px patches) with a
    processor around the WordPiece tokenizer above into ``folder``."""
    import transformers as tf

    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = tf.BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    ids = {"pad_token_id": 0, "bos_token_id": vocab.index("[CLS]"), "eos_token_id": vocab.index("[SEP]")}
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 24, **ids}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    if family == "clip":
        tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
            str(folder)
        )
        image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        tf.CLIPProcessor(image_processor, tokenizer).save_pretrained(str(folder))
    else:
        tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(str(folder))
        tf.SiglipProcessor(tf.SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(
            str(folder)
        )
    return folder


@pytest.fixture(scope="session")
def tiny_hf_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with a tiny random transformers ``CLIPModel`` (16-d joint space) and its ``CLIPProcessor``."""
    return _tiny_dual_encoder(tmp_path_factory.mktemp("tiny_hf_clip"), "clip")


@pytest.fixture(scope="session")
def tiny_siglip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with a tiny random transformers ``SiglipModel`` and its ``SiglipProcessor``."""
    return _tiny_dual_encoder(tmp_path_factory.mktemp("tiny_siglip"), "siglip")


def _registry_test_images() -> list[Image.Image]:
    """The images of the ``rgb_images`` fixture (same seed and sizes), for adapters that must know them up front."""
    rng = np.random.default_rng(0)
    sizes = [(64, 48), (40, 90), (120, 120)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="session")
def tiny_embeddings_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    """Options of a tiny ``embeddings`` adapter and the split its rows belong to.

    Stored rows can only encode content they were computed on, so the split holds exactly what the registry-wide
    tests in test_adapters.py encode: the ``rgb_images`` images and ``texts.CAPTIONS`` plus ``LONG_CAPTION``.
    """
    from texts import CAPTIONS, LONG_CAPTION

    from bench.data.base import RetrievalSplit

    folder = tmp_path_factory.mktemp("tiny_embeddings")
    paths = []
    for i, im in enumerate(_registry_test_images()):
        paths.append(folder / f"img{i}.png")  # PNG is lossless: the decoded pixels (and content keys) are the same
        im.save(paths[-1])
    captions = [*CAPTIONS, LONG_CAPTION]
    split = RetrievalSplit(dataset="tiny", split="test", image_paths=paths, image_ids=[p.stem for p in paths],
                           captions=captions, caption_to_image=np.array([0, 1, 2, 0]))  # fmt: skip
    rng = np.random.default_rng(0)
    np.save(folder / "image_emb.npy", rng.normal(size=(len(paths), 10)).astype(np.float32))
    np.save(folder / "text_emb.npy", rng.normal(size=(len(captions), 6)).astype(np.float32))
    options = {
        "image_emb": str(folder / "image_emb.npy"),
        "text_emb": str(folder / "text_emb.npy"),
        "projection_dim": 12,
    }
    return options, split


@pytest.fixture(scope="session")
def tiny_region_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vocabulary in SGRAF's ``*_precomp_vocab.json`` layout (the special words and a few colours and shapes)."""
    words = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "blue", "small", "square", "circles", "two"]
    path = tmp_path_factory.mktemp("region_vocab") / "tiny_precomp_vocab.json"
    path.write_text(json.dumps({"word2idx": {w: i for i, w in enumerate(words)}, "idx": len(words)}))
    return path


@pytest.fixture(scope="session")
def tiny_options(
    tiny_text_folder: Path,
    tiny_blip_folder: Path,
    tiny_embeddings_split: tuple[dict[str, Any], Any],
    tiny_hf_clip_folder: Path,
    tiny_region_vocab: Path,
) -> dict[str, dict[str, Any]]:
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
        "blip": {"checkpoint": str(tiny_blip_folder)},
        "embeddings": tiny_embeddings_split[0],
        "hf_clip": {"checkpoint": str(tiny_hf_clip_folder)},
        "sgraf": {"vocab": str(tiny_region_vocab), "img_dim": 16, "word_dim": 8, "embed_size": 16, "sim_dim": 8},
        "scan": {"vocab": str(tiny_region_vocab), "img_dim": 16, "word_dim": 8, "embed_size": 16, "bi_gru": True},
    }


@pytest.fixture(scope="session")
def build_tiny(
    tiny_options: dict[str, dict[str, Any]], tiny_embeddings_split: tuple[dict[str, Any], Any]
) -> Callable[..., Any]:
    """``build_tiny(family, **overrides)``: a fresh tiny adapter through the registry, seeded and in eval mode."""
    from bench.adapters.registry import create_adapter

    def build(family: str, seed: int = 0, **overrides: Any) -> Any:
        if family not in tiny_options:
            pytest.fail(f"adapter family {family!r} has no tiny builder: add it to tiny_options in tests/conftest.py")
        torch.manual_seed(seed)
        adapter = create_adapter(family, {**tiny_options[family], **overrides}).eval()
        if family == "embeddings":
            adapter.bind(tiny_embeddings_split[1])  # stored rows encode only the content they were computed on
        return adapter

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


def slurm_cluster_up() -> bool:
    """Whether a SLURM cluster answers ``sinfo`` here."""
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slurm`` skip, saying why, where no cluster answers; ``BENCH_REQUIRE_SLURM=1`` (as ``.ci/run``
    sets after starting one) makes them run, and fail if the cluster is gone."""
    marked = [item for item in items if item.get_closest_marker("slurm")]
    if not marked or os.environ.get("BENCH_REQUIRE_SLURM") == "1" or slurm_cluster_up():
        return
    skip = pytest.mark.skip(reason="needs a SLURM cluster: none answers `sinfo` (.ci/run starts one; "
                                   "BENCH_REQUIRE_SLURM=1 makes these fail instead)")  # fmt: skip
    for item in marked:
        item.add_marker(skip)
