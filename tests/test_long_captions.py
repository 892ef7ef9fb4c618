"""Long-caption retrieval: the Urban1K, DOCCI, ShareGPT4V and JSON-lines layouts and their broken files, the count of
captions longer than the model's context (against open_clip's own tokenizer), and the ``sentences`` rule end to end
(each caption scored as the mean of its normalised sentence embeddings), with the table's note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from PIL import Image
from tiny_grid import run_main

from bench.data import load_split
from bench.data.base import RetrievalSplit
from bench.encode.long_text import pool_sentences, sentence_split, sentences
from bench.errors import BenchError
from bench.grid.records import read_record

WORDS = "a dog cat man woman horse bike car street grass window red blue green sits runs rides near under".split()


def _jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


def _description(rng: np.random.Generator, n_sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS, size=12)).capitalize() + "." for _ in range(n_sentences))


def write_urban1k(root: Path, n: int = 8) -> list[str]:
    rng = np.random.default_rng(0)
    texts = []
    for i in range(n):
        _jpg(root / "image" / f"{i:03d}.jpg", i)
        texts.append(_description(rng, 2 + 6 * (i % 2)))  # every other one runs past 77 tokens
        (root / "caption").mkdir(exist_ok=True)
        (root / "caption" / f"{i:03d}.txt").write_text(texts[-1] + "\nA second line is not read.\n")
    return texts


def test_urban1k_layout(tmp_path: Path) -> None:
    texts = write_urban1k(tmp_path)
    split = load_split("u", {"format": "urban1k", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert isinstance(split, RetrievalSplit) and split.n_images == 8 and list(split.captions) == texts
    assert [Path(p).name for p in split.image_paths] == [f"{i:03d}.jpg" for i in range(8)]
    (tmp_path / "image" / "003.jpg").unlink()
    with pytest.raises(BenchError, match=r"003\.txt references image .*003\.jpg, which does not exist"):
        load_split("u", {"format": "urban1k", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    (tmp_path / "caption" / "003.txt").write_text("\n\n")
    with pytest.raises(BenchError, match=r"003\.txt: caption file is empty"):
        load_split("u", {"format": "urban1k", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_docci_layout(tmp_path: Path) -> None:
    rows = []
    for i, split in enumerate(["train", "test", "test", "qual_dev"]):
        _jpg(tmp_path / "images" / f"{split}_{i}.jpg", i)
        rows.append({"example_id": f"{split}_{i}", "split": split, "image_file": f"{split}_{i}.jpg",
                     "description": f"A long description {i}."})  # fmt: skip
    path = tmp_path / "docci_descriptions.jsonlines"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = load_split("d", {"format": "docci", "root": str(tmp_path)}, "test", work_dir=tmp_path)
    assert list(split.image_ids) == ["test_1", "test_2"] and list(split.captions)[0] == "A long description 1."
    with pytest.raises(BenchError, match="no rows of split 'val'; splits there: qual_dev, test, train"):
        load_split("d", {"format": "docci", "root": str(tmp_path)}, "val", work_dir=tmp_path)
    rows[2]["description"] = ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BenchError, match=r"jsonlines line 3: field 'description' is missing or empty"):
        load_split("d", {"format": "docci", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_sharegpt4v_layout(tmp_path: Path) -> None:
    entries = []
    for i in range(6):
        image = f"sam/images/sa_{i}.jpg" if i % 2 else f"coco/train2017/{i}.jpg"
        _jpg(tmp_path / image, i)
        entries.append({"id": str(i), "image": image, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in detail."},
            {"from": "gpt", "value": f"Line one of {i}.\nLine two."}]})  # fmt: skip
    (tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(entries))
    spec = {"format": "sharegpt4v", "root": str(tmp_path), "count": 2}
    split = load_split("s", spec, "test", work_dir=tmp_path)
    assert list(split.image_ids) == ["sam/images/sa_1.jpg", "sam/images/sa_3.jpg"]
    assert list(split.captions)[0] == "Line one of 1. Line two."  # newlines made spaces, as Long-CLIP
    split = load_split("s", {**spec, "sam_only": False}, "test", work_dir=tmp_path)
    assert list(split.image_ids) == ["coco/train2017/0.jpg", "sam/images/sa_1.jpg"]
    with pytest.raises(BenchError, match="3 SA-1B entries, fewer than count = 4"):
        load_split("s", {**spec, "count": 4}, "test", work_dir=tmp_path)
    entries[1]["conversations"] = entries[1]["conversations"][:1]
    (tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(entries))
    with pytest.raises(BenchError, match=r"entry 1: field 'conversations\[gpt\]\.value' is missing or empty"):
        load_split("s", spec, "test", work_dir=tmp_path)


def test_jsonl_layout_with_dotted_fields(tmp_path: Path) -> None:
    lines = []
    for i in range(3):
        _jpg(tmp_path / "img" / f"{i}.jpg", i)
        lines.append(json.dumps({"image": {"key": f"{i}.jpg"}, "IIW": [f"Description {i}."]}))
    (tmp_path / "test.jsonl").write_text("\n".join(lines))
    spec = {"format": "jsonl", "root": str(tmp_path), "image_dir": "img", "image_field": "image.key",
            "caption_field": "IIW.0"}  # fmt: skip
    split = load_split("j", spec, "test", work_dir=tmp_path)
    assert list(split.captions) == ["Description 0.", "Description 1.", "Description 2."]
    with pytest.raises(BenchError, match=r"test\.jsonl line 1: field 'IIW\.1' is missing"):
        load_split("j", {**spec, "caption_field": "IIW.1"}, "test", work_dir=tmp_path)


def test_sentences() -> None:
    assert sentences("One two. Three four! Five? six") == ["One two.", "Three four!", "Five?", "six"]
    assert sentences("No full stop") == ["No full stop"]
    assert sentences("Version 2.5 is out. Yes.") == ["Version 2.5 is out.", "Yes."]  # no break inside a number
    emb = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    pooled = pool_sentences(emb, np.array([0, 0, 1]), 2)
    torch.testing.assert_close(pooled, torch.tensor([[0.3, 0.9], [1.0, 0.0]]))


def test_clip_token_counts_equal_open_clips_own_tokenizer() -> None:
    """A caption is cut when open_clip's tokenizer, given room, emits more than the 77 tokens of the context."""
    import open_clip
    from bench.adapters.registry import create_adapter

    adapter = create_adapter("clip", {"checkpoint": TINY_CLIP_ARCH, "pretrained": "random",
                                      "model_config": str(TINY_CLIP_CONFIG)})  # fmt: skip
    rng = np.random.default_rng(0)
    texts = [_description(rng, n) for n in (1, 3, 5, 6, 7, 12)] + ["a dog", "hello, world! " * 20]
    lengths, context = adapter.text_lengths(texts)
    roomy = open_clip.get_tokenizer(TINY_CLIP_ARCH)(texts, context_length=1000)
    assert context == 77 and lengths == (roomy != 0).sum(dim=1).tolist()
    assert 0 < sum(n > 77 for n in lengths) < len(texts)


def _config(tmp_path: Path, rule: str) -> Path:
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results" / rule))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[eval]
bootstrap = 0

[models.tiny_clip]
adapter = "clip"
checkpoint = "{TINY_CLIP_ARCH}"
pretrained = "random"
model_config = {json.dumps(str(TINY_CLIP_CONFIG))}

[datasets.urban1k]
format = "urban1k"
root = {json.dumps(str(tmp_path / "urban1k"))}
long_text = "{rule}"
""")
    return config


@pytest.mark.parametrize("rule", ["truncate", "sentences"])
def test_long_text_rule_end_to_end(tmp_path: Path, rule: str) -> None:
    texts = write_urban1k(tmp_path / "urban1k")
    config = _config(tmp_path, rule)
    rc, out, err = run_main(["run", "--config", str(config), "--models", "tiny_clip", "--datasets", "urban1k",
                             "--methods", "zeroshot", "-q"])  # fmt: skip
    assert rc == 0, err
    rec = read_record(tmp_path / "results" / rule / "runs/tiny_clip/urban1k/test/zeroshot-seed0.json")
    lt = rec["long_text"]
    assert lt["rule"] == rule and lt["context"] == 77
    from bench.adapters.registry import create_adapter

    adapter = create_adapter("clip", {"checkpoint": TINY_CLIP_ARCH, "pretrained": "random",
                                      "model_config": str(TINY_CLIP_CONFIG)}).eval()  # fmt: skip
    split = load_split("urban1k", {"format": "urban1k", "root": str(tmp_path / "urban1k")}, "test",
                       work_dir=tmp_path)  # fmt: skip
    if rule == "truncate":
        lengths, _ = adapter.text_lengths(texts)
        assert lt["captions"] == 8 and lt["truncated"] == sum(n > 77 for n in lengths) == 4
        assert "long captions: 4 of 8 captions (50.0%) cut at 77 tokens" in out
        return
    # sentences: each caption is the mean of its sentences' unit embeddings; its i2t/t2i follow from those
    parts, owner = sentence_split(split)
    assert lt["sentences"] == len(parts.captions) == sum(len(sentences(t)) for t in texts) and lt["truncated"] == 0
    tf = adapter.image_transform()
    with torch.no_grad():
        img = F.normalize(adapter.encode_image(torch.stack([tf(split.load_image(i)) for i in range(8)])), dim=-1)
        per_sentence = adapter.encode_text(adapter.tokenize(list(parts.captions)))
    txt = F.normalize(torch.stack([F.normalize(per_sentence[owner == j], dim=-1).mean(0) for j in range(8)]), dim=-1)
    sims = (img @ txt.T).numpy()
    want_i2t = 100 * np.mean([np.sum(sims[i] > sims[i, i]) == 0 for i in range(8)])
    want_t2i = 100 * np.mean([np.sum(sims[:, j] > sims[j, j]) == 0 for j in range(8)])
    assert rec["metrics"]["i2t"]["r1"] == pytest.approx(want_i2t) and rec["metrics"]["t2i"]["r1"] == pytest.approx(
        want_t2i
    )
    assert "long captions: sentence means" in out
    # sharded evaluation refuses the rule in one line
    rc, _, err = run_main(["run", "--config", str(config), "--models", "tiny_clip", "--datasets", "urban1k",
                           "--methods", "zeroshot", "--shards", "2", "--force", "-q"])  # fmt: skip
    assert rc == 2 and 'long_text = "sentences" is scored in one process' in err
