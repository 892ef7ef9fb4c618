"""CUSA: the loss against an independent implementation, gradients, the teacher cache, and the objective's heads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import TrainConfig
from bench.data.base import RetrievalSplit
from bench.errors import ConfigError
from bench.methods import get_method
from bench.methods.cusa import TAU_CON, TAU_CSA, CusaObjective, sigmoid_init
from bench.methods.losses import SIGLIP_INIT, SigmoidLoss, cusa_loss
from bench.methods.teachers import TeacherCacheError, load_or_build


def _reference(img, txt, img_uni, txt_uni, t_img, t_txt, idx, *, tau_con, tau_csa, tau_ui, tau_ut, tau_t, alpha, beta,
               reduction):  # fmt: skip
    """The definitions of the issue, written with plain loops in float64."""
    n = len(idx)

    def cos(a, b):
        a = [np.asarray(r, dtype=np.float64) / np.linalg.norm(r) for r in a]
        b = [np.asarray(r, dtype=np.float64) / np.linalg.norm(r) for r in b]
        return np.array([[float(x @ y) for y in b] for x in a])

    def softmax_row(row):
        e = np.exp(row - row.max())
        return e / e.sum()

    def kl(s, a, tau):
        total = 0.0
        for i in range(n):
            p, q = softmax_row(s[i] / tau), softmax_row(a[i] / tau_t)
            total += sum(q[j] * (math.log(q[j]) - math.log(p[j])) for j in range(n))
        return total / n

    s_it = cos(img, txt)
    s_ti = s_it.T
    counts = [sum(1 for k in range(n) if idx[k] == idx[i]) for i in range(n)]
    y = np.array([[(idx[i] == idx[j]) / counts[i] for j in range(n)] for i in range(n)])

    def con(s):
        total = 0.0
        for i in range(n):
            logp = np.log(softmax_row(s[i] / tau_con))
            terms = [y[i, j] * logp[j] for j in range(n)]
            total += sum(terms) if reduction == "sum" else sum(terms) / n
        return -total / n

    a_i, a_t = cos(t_img, t_img), cos(t_txt, t_txt)
    out = {"contrastive": (con(s_it) + con(s_ti)) / 2}
    out["csa"] = alpha * 0.5 * (kl(s_it, a_i, tau_csa) + kl(s_ti, a_t, tau_csa))
    out["usa"] = beta * 0.5 * (kl(cos(img_uni, img_uni), a_i, tau_ui) + kl(cos(txt_uni, txt_uni), a_t, tau_ut))
    out["total"] = out["contrastive"] + out["csa"] + out["usa"]
    return out


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cusa_loss_matches_independent_reference(reduction: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d = 12, 8
    idx = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7])  # repeated images in the batch
    img_base = torch.randn(8, d, generator=g)
    img, img_uni = img_base[idx] + 0.0, torch.randn(8, d, generator=g)[idx]
    txt, txt_uni = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    t_img, t_txt = torch.randn(8, 16, generator=g)[idx], torch.randn(n, 24, generator=g)
    kw = dict(tau_con=0.05, tau_csa=0.45, tau_usa_img=0.3, tau_usa_txt=0.6, tau_teacher=1.0, alpha=0.1, beta=0.5)
    got = cusa_loss(img, txt, img_uni, txt_uni, t_img, t_txt, idx, con_reduction=reduction, **kw)
    ref = _reference(img.numpy(), txt.numpy(), img_uni.numpy(), txt_uni.numpy(), t_img.numpy(), t_txt.numpy(),
                     idx.tolist(), tau_con=0.05, tau_csa=0.45, tau_ui=0.3, tau_ut=0.6, tau_t=1.0, alpha=0.1, beta=0.5,
                     reduction=reduction)  # fmt: skip
    for key in ("contrastive", "csa", "usa", "total"):
        assert float(got[key]) == pytest.approx(ref[key], abs=1e-5, rel=1e-5), key


def test_mean_reduction_divides_the_contrastive_term_by_n() -> None:
    g = torch.Generator().manual_seed(3)
    idx = torch.arange(10)
    x, t = torch.randn(10, 8, generator=g), torch.randn(10, 8, generator=g)
    kw = dict(tau_con=0.05, tau_csa=0.45, tau_usa_img=0.45, tau_usa_txt=0.45, tau_teacher=1.0, alpha=0.0, beta=0.0)
    s = cusa_loss(x, t, None, None, x, t, idx, con_reduction="sum", **kw)["contrastive"]
    m = cusa_loss(x, t, None, None, x, t, idx, con_reduction="mean", **kw)["contrastive"]
    assert float(m) == pytest.approx(float(s) / 10, rel=1e-6)


def test_teachers_get_no_gradient_and_students_do() -> None:
    g = torch.Generator().manual_seed(4)
    idx = torch.tensor([0, 1, 1, 2])
    img, txt = torch.randn(4, 8, generator=g, requires_grad=True), torch.randn(4, 8, generator=g, requires_grad=True)
    img_uni, txt_uni = (torch.randn(4, 8, generator=g, requires_grad=True) for _ in range(2))
    t_img, t_txt = torch.randn(4, 5, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    out = cusa_loss(img, txt, img_uni, txt_uni, t_img, t_txt, idx, tau_con=0.05, tau_csa=0.45, tau_usa_img=0.45,
                    tau_usa_txt=0.45, tau_teacher=1.0, alpha=0.1, beta=0.5)  # fmt: skip
    out["total"].backward()
    assert t_img.grad is None and t_txt.grad is None
    for x in (img, txt, img_uni, txt_uni):
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_objective_heads_temperatures_and_gradients() -> None:
    obj = CusaObjective(16, alpha=0.1, beta=0.5)
    obj._teacher_img = np.random.default_rng(0).normal(size=(20, 7)).astype(np.float16)
    obj._teacher_txt = np.random.default_rng(1).normal(size=(40, 9)).astype(np.float16)
    with torch.no_grad():
        obj.tau_con.fill_(5.0)  # out of range: clamped on the next forward
        obj.tau_csa.fill_(-1.0)
    emb_i = torch.randn(8, 16, requires_grad=True)
    emb_t = torch.randn(8, 16, requires_grad=True)
    batch = {"image_emb": emb_i, "text_emb": emb_t, "image_index": torch.tensor([0, 1, 1, 3, 4, 5, 6, 7]),
             "caption_index": torch.arange(8)}  # fmt: skip
    terms = obj(batch)
    assert obj.tau_con.item() == pytest.approx(TAU_CON[2]) and obj.tau_csa.item() == pytest.approx(TAU_CSA[1])
    assert set(terms) >= {"contrastive_loss", "csa_loss", "usa_loss"}
    sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
    for name, p in obj.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
    before = obj.views(emb_i.detach(), emb_t.detach())
    with torch.no_grad():
        obj.uni["image"].proj.weight.mul_(2.0)
    after = obj.views(emb_i.detach(), emb_t.detach())
    assert torch.equal(before["cross"][0], after["cross"][0])  # i2t/t2i read the cross heads only
    assert not torch.equal(before["uni"][0], after["uni"][0])  # i2i/t2t read the uni heads


def test_contrastive_method_has_no_uni_heads_and_reads_no_teacher() -> None:
    obj = CusaObjective(16, alpha=0.0, beta=0.0)
    assert obj.uni is None and not obj.needs_teachers
    batch = {"image_emb": torch.randn(4, 16), "text_emb": torch.randn(4, 16), "image_index": torch.arange(4),
             "caption_index": torch.arange(4)}  # fmt: skip
    assert set(k for k in obj(batch) if k.endswith("_loss")) == {"contrastive_loss"}


def _split(tmp_path: Path) -> RetrievalSplit:
    return RetrievalSplit(dataset="d", split="train", image_paths=[tmp_path / f"{i}.png" for i in range(3)],
                          image_ids=["a", "b", "c"], captions=["x", "y", "z", "w"],
                          caption_to_image=np.array([0, 1, 2, 2]))  # fmt: skip


def test_teacher_cache_reuses_valid_rows_and_never_uses_stale_or_corrupt_ones(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    key = {"model": "m", "data": "fp1"}
    calls = []

    def compute(value: float = 1.0):
        calls.append(value)
        return np.full((3, 4), value, dtype=np.float32) + np.arange(3)[:, None]

    folder = tmp_path / "cache"
    first = load_or_build(folder, key, ids, compute)
    again = load_or_build(folder, key, ids, lambda: compute(2.0))
    assert len(calls) == 1 and np.array_equal(np.asarray(first), np.asarray(again))
    # A changed teacher or dataset key never reuses the rows.
    other = load_or_build(folder, {"model": "m", "data": "fp2"}, ids, lambda: compute(3.0))
    assert calls[-1] == 3.0 and float(other[0, 0]) == 3.0
    # Truncated array file: rebuilt, or rejected when rebuilding is off.
    feat = folder / "features.npy"
    feat.write_bytes(feat.read_bytes()[:40])
    with pytest.raises(TeacherCacheError, match="features.npy"):
        load_or_build(folder, {"model": "m", "data": "fp2"}, ids, lambda: compute(4.0), rebuild=False)
    rebuilt = load_or_build(folder, {"model": "m", "data": "fp2"}, ids, lambda: compute(4.0))
    assert float(rebuilt[0, 0]) == 4.0
    # Wrong shape recorded in the index, different ids, all-zero rows: never used.
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**index, "shape": [3, 5]}))
    with pytest.raises(TeacherCacheError, match="shape"):
        load_or_build(folder, {"model": "m", "data": "fp2"}, ids, compute, rebuild=False)
    with pytest.raises(TeacherCacheError):
        load_or_build(folder, {"model": "m", "data": "fp2"}, ["a", "b", "z"], compute, rebuild=False)
    with pytest.raises(TeacherCacheError, match="all zeros"):
        load_or_build(tmp_path / "z", key, ids, lambda: np.zeros((3, 4), np.float32))


def test_student_temperature_init_is_a_setting_and_recorded() -> None:
    obj = CusaObjective(8, alpha=0.1, beta=0.5, tau_student=0.3, tau_con=0.5)
    assert obj.tau_csa.item() == pytest.approx(0.3) and obj.tau_usa_txt.item() == pytest.approx(0.3)
    assert obj.tau_con.item() == pytest.approx(TAU_CON[2])  # clamped into the reference range at init
    desc = obj.describe()
    assert desc["tau_init"]["student"] == 0.3 and desc["alpha"] == 0.1 and desc["beta"] == 0.5


@pytest.mark.parametrize(
    "alpha,beta", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.5), (0.1, 0.5)], ids=["con", "csa", "usa", "cusa"]
)
def test_sigmoid_base_loss_composes_with_soft_labels(alpha: float, beta: float) -> None:
    """With the sigmoid base loss the contrastive term is SigLIP's on the cross views; CSA and USA are unchanged."""
    rng = np.random.default_rng(5)
    teacher_img, teacher_txt = rng.normal(size=(10, 7)).astype(np.float32), rng.normal(size=(12, 9)).astype(np.float32)
    objectives = {}
    for base in ("infonce", "sigmoid"):
        torch.manual_seed(0)  # the same head weights for both
        sigmoid = SigmoidLoss(1.5, -2.0) if base == "sigmoid" else None
        obj = CusaObjective(16, alpha=alpha, beta=beta, head_init="normal", sigmoid=sigmoid)
        obj._teacher_img, obj._teacher_txt = teacher_img, teacher_txt
        objectives[base] = obj
    g = torch.Generator().manual_seed(6)
    batch = {"image_emb": torch.randn(8, 16, generator=g), "text_emb": torch.randn(8, 16, generator=g),
             "image_index": torch.tensor([0, 1, 1, 3, 4, 4, 4, 7]), "caption_index": torch.arange(8)}  # fmt: skip
    ref, got = objectives["infonce"](batch), objectives["sigmoid"](batch)
    assert set(ref) == set(got) - {"logit_scale", "logit_bias"}
    for key in ("csa_loss", "usa_loss"):
        if key in ref:
            torch.testing.assert_close(got[key], ref[key])
    img, txt = objectives["sigmoid"].views(batch["image_emb"], batch["text_emb"])["cross"]
    want = SigmoidLoss(1.5, -2.0)(img, txt, batch["image_index"])["sigmoid_loss"]
    torch.testing.assert_close(got["contrastive_loss"], want)
    assert not torch.allclose(got["contrastive_loss"], ref["contrastive_loss"])
    sum(v for k, v in got.items() if k.endswith("_loss")).backward()
    sig = objectives["sigmoid"].sigmoid
    assert sig is not None and sig.logit_scale.grad is not None and sig.logit_bias.grad is not None
    names = {n for n, _ in objectives["sigmoid"].named_parameters()}
    assert {"sigmoid.logit_scale", "sigmoid.logit_bias"} <= names  # optimised with the objective
    desc = objectives["sigmoid"].describe()
    assert desc["contrastive_term"] == "sigmoid" and desc["sigmoid"]["init"] == {"logit_scale": 1.5, "logit_bias": -2.0}
    plain = objectives["infonce"].describe()
    assert plain["contrastive_term"] == "infonce" and "sigmoid" not in plain


class _Stub:
    """The attributes a method reads from an adapter."""

    def __init__(self, default_loss: str, **attrs: float) -> None:
        self.default_loss, self.embed_dim = default_loss, 8
        self.init_temperature = self.init_logit_bias = None  # the protocol's defaults (AdapterBase's)
        self.__dict__.update(attrs)


@pytest.mark.parametrize("method", ["contrastive", "csa", "usa", "cusa"])
def test_loss_auto_follows_the_adapter_and_sigmoid_starts_from_its_calibration(method: str) -> None:
    m = get_method(method)
    siglip = _Stub("sigmoid", init_temperature=0.05, init_logit_bias=-12.5)
    obj = m.objective(siglip, TrainConfig(loss="auto"))
    assert obj.base_loss == "sigmoid" and obj.sigmoid is not None
    assert obj.sigmoid.logit_scale.item() == pytest.approx(math.log(20.0))
    assert obj.sigmoid.logit_bias.item() == pytest.approx(-12.5)
    assert m.objective(_Stub("triplet"), TrainConfig(loss="auto")).base_loss == "triplet"
    assert m.objective(_Stub("infonce"), TrainConfig(loss="auto")).base_loss == "infonce"
    assert m.objective(siglip, TrainConfig(loss="infonce")).base_loss == "infonce"  # an explicit loss wins
    # A model without a logit bias (CLIP) asked for the sigmoid loss starts from SigLIP's (log 10, -10).
    clip_like = m.objective(_Stub("infonce", init_temperature=0.01), TrainConfig(loss="sigmoid"))
    assert (clip_like.sigmoid.logit_scale.item(), clip_like.sigmoid.logit_bias.item()) == pytest.approx(SIGLIP_INIT)
    with pytest.raises(ConfigError, match="valid: auto, infonce, triplet, sigmoid"):
        m.objective(siglip, TrainConfig(loss="hinge"))


def test_sigmoid_init_reads_only_a_full_calibration() -> None:
    assert sigmoid_init(_Stub("sigmoid", init_temperature=0.1, init_logit_bias=-3.0)) == pytest.approx(
        (math.log(10.0), -3.0)
    )
    assert sigmoid_init(_Stub("infonce", init_temperature=0.1)) == SIGLIP_INIT
    assert sigmoid_init(_Stub("infonce")) == SIGLIP_INIT


@pytest.mark.parametrize("method", ["contrastive", "csa", "usa", "cusa"])
def test_contrastive_temperature_is_the_configs_unless_it_asks_for_the_models(method: str) -> None:
    # Issue #13, deviation 1: an OpenAI-CLIP-like adapter (its own temperature 0.01) trained with the defaults
    # starts from the paper's 0.05 (the reference's cusa.yaml), as every other model does.
    m = get_method(method)
    clip_like = _Stub("infonce", init_temperature=0.01, name="clip")
    default = m.objective(clip_like, TrainConfig())
    assert float(default.tau_con.detach()) == pytest.approx(0.05)
    assert default.describe()["tau_init"]["con"] == pytest.approx(0.05)
    assert default.describe()["tau_init"]["con_from"] == "config"
    explicit = m.objective(clip_like, TrainConfig(temperature=0.07))  # an explicit setting always wins
    assert float(explicit.tau_con.detach()) == pytest.approx(0.07)
    own = m.objective(clip_like, TrainConfig(temperature="model"))  # the checkpoint's own, when asked for
    assert float(own.tau_con.detach()) == pytest.approx(0.01) and own.describe()["tau_init"]["con_from"] == "model"
    none = m.objective(_Stub("infonce", name="vse_infty"), TrainConfig(temperature="model"))
    assert float(none.tau_con.detach()) == pytest.approx(0.05)
    assert none.describe()["tau_init"]["con_from"].startswith("default")


def test_temperature_setting_is_checked() -> None:
    from bench.config import config_from_dict

    assert config_from_dict({"train": {"temperature": "model"}}).train.temperature == "model"
    with pytest.raises(ConfigError, match=r'temperature: a number > 0 or "model"'):
        config_from_dict({"train": {"temperature": "clip"}})
    with pytest.raises(ConfigError, match="temperature"):
        config_from_dict({"train": {"temperature": 0}})


def test_uni_embedding_backbone_scores_the_adapters_own_rows() -> None:
    # Issue #13: the reference scores i2i/t2t of rows without uni heads on the backbone features, not after the
    # cross heads; `uni_embedding = "backbone"` offers that, and the record says so.
    from bench.evaluation.unimodal import _embedding_kind

    torch.manual_seed(0)
    img, txt = torch.randn(4, 8), torch.randn(6, 8)
    for method in ("contrastive", "csa"):
        obj = get_method(method).objective(_Stub("infonce"), TrainConfig(), head_init="normal",
                                           uni_embedding="backbone")  # fmt: skip
        views = obj.views(img, txt)
        assert views["uni"][0] is img and views["uni"][1] is txt
        assert not torch.allclose(views["cross"][0], img)  # the cross heads change the i2t/t2i rows only
        assert obj.describe()["uni_embedding"] == "backbone"
        assert _embedding_kind(_Stub("infonce"), views, obj) == "backbone"
        default = get_method(method).objective(_Stub("infonce"), TrainConfig())
        dv = default.views(img, txt)
        assert dv["uni"] is dv["cross"]
        assert default.describe()["uni_embedding"] == "joint"
    usa = get_method("usa").objective(_Stub("infonce"), TrainConfig(), uni_embedding="backbone")
    assert usa.describe()["uni_embedding"] == "uni_heads"  # uni heads, when a method has them, are what is scored
    with pytest.raises(ConfigError, match="uni_embedding 'raw'"):
        get_method("cusa").objective(_Stub("infonce"), TrainConfig(), uni_embedding="raw")
