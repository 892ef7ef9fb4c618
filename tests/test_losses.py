"""Base retrieval losses against independent, loop-by-loop implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.methods.losses import SIGLIP_INIT, InfoNCELoss, SigmoidLoss, TripletLoss, multi_positive_targets

pytestmark = pytest.mark.usefixtures("single_thread")

# Caption-sampled batches: several captions of one image land in the same batch (repeated image indices).
REPEATED = [3, 7, 3, 1, 7, 7, 0, 5]
DISTINCT = [4, 0, 2, 9, 1, 6]


def _batch(index: list[int], dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image rows (near each other for equal indices: augmentation and dropout make repeats differ) and caption rows
    near their image. Exact repeats would hide wrong targets: with identical rows, one-hot and multi-positive
    targets give the same InfoNCE value."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor(index)
    per_image = torch.randn(int(idx.max()) + 1, dim, generator=g, dtype=torch.float64)
    img = per_image[idx] + 0.3 * torch.randn(len(index), dim, generator=g, dtype=torch.float64)
    txt = img + 1.5 * torch.randn(len(index), dim, generator=g, dtype=torch.float64)
    return img, txt, idx


def _cos(img: torch.Tensor, txt: torch.Tensor) -> list[list[float]]:
    return [[float(F.cosine_similarity(a, b, dim=0)) for b in txt] for a in img]


def _infonce_loops(img: torch.Tensor, txt: torch.Tensor, index: list[int], temperature: float) -> float:
    """Symmetric InfoNCE, row by row: each query spreads its target over every row of the same image."""
    s = _cos(img, txt)
    n = len(index)

    def direction(score: list[list[float]]) -> float:
        total = 0.0
        for q in range(n):
            logits = [score[q][k] / temperature for k in range(n)]
            log_z = math.log(sum(math.exp(v) for v in logits))
            positives = [k for k in range(n) if index[k] == index[q]]
            total += -sum(logits[k] - log_z for k in positives) / len(positives)
        return total / n

    transposed = [[s[k][q] for k in range(n)] for q in range(n)]
    return (direction(s) + direction(transposed)) / 2


def _triplet_loops(img: torch.Tensor, txt: torch.Tensor, index: list[int], margin: float, max_violation: bool) -> float:
    """VSE++: hinge over negatives of other images, image->caption and caption->image, summed over the batch."""
    s = _cos(img, txt)
    n = len(index)
    total = 0.0
    for q in range(n):
        neg_captions = [max(0.0, margin + s[q][j] - s[q][q]) for j in range(n) if index[j] != index[q]]
        neg_images = [max(0.0, margin + s[i][q] - s[q][q]) for i in range(n) if index[i] != index[q]]
        for costs in (neg_captions, neg_images):
            if costs:
                total += max(costs) if max_violation else sum(costs)
    return total


def _sigmoid_loops(img: torch.Tensor, txt: torch.Tensor, index: list[int], scale: float, bias: float) -> float:
    """SigLIP, pair by pair: -log σ(±(t·cos + b)), + for every pair of the same image, summed, over N image rows."""
    s = _cos(img, txt)
    n = len(index)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = (1.0 if index[i] == index[j] else -1.0) * (scale * s[i][j] + bias)
            total += math.log1p(math.exp(-z))  # -log σ(z)
    return total / n


def test_multi_positive_targets() -> None:
    y = multi_positive_targets(torch.tensor(REPEATED))
    for i, a in enumerate(REPEATED):
        for j, b in enumerate(REPEATED):
            expected = (a == b) / REPEATED.count(a)
            assert y[i, j].item() == pytest.approx(expected)
    torch.testing.assert_close(y.sum(1), torch.ones(len(REPEATED)))
    torch.testing.assert_close(multi_positive_targets(torch.tensor(DISTINCT)), torch.eye(len(DISTINCT)))


@pytest.mark.parametrize("index", [REPEATED, DISTINCT], ids=["repeated", "distinct"])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_infonce_equals_loop_implementation(index: list[int], temperature: float) -> None:
    img, txt, idx = _batch(index)
    loss = InfoNCELoss(temperature)(img, txt, idx)
    assert set(loss) == {"contrastive_loss"}
    expected = _infonce_loops(img, txt, index, temperature)
    assert loss["contrastive_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_infonce_with_distinct_images_is_cross_entropy() -> None:
    img, txt, idx = _batch(DISTINCT, seed=1)
    temperature = 0.07
    logits = F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).t() / temperature
    target = torch.arange(len(DISTINCT))
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    got = InfoNCELoss(temperature)(img, txt, idx)["contrastive_loss"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_infonce_temperature_is_learned_and_capped() -> None:
    loss = InfoNCELoss(0.05)
    assert loss.logit_scale.requires_grad
    assert loss.logit_scale.exp().item() == pytest.approx(20.0)
    img, txt, idx = _batch(REPEATED)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))  # beyond CLIP's cap of 100
    capped = loss(img, txt, idx)["contrastive_loss"].item()
    assert capped == pytest.approx(_infonce_loops(img, txt, REPEATED, 0.01), rel=1e-5)


def test_infonce_is_invariant_to_scale_of_embeddings() -> None:
    img, txt, idx = _batch(REPEATED)
    loss = InfoNCELoss(0.1)
    torch.testing.assert_close(
        loss(img, txt, idx)["contrastive_loss"], loss(3 * img, 0.2 * txt, idx)["contrastive_loss"]
    )


@pytest.mark.parametrize("index", [REPEATED, DISTINCT], ids=["repeated", "distinct"])
@pytest.mark.parametrize("max_violation", [True, False], ids=["max", "sum"])
def test_triplet_equals_loop_implementation(index: list[int], max_violation: bool) -> None:
    img, txt, idx = _batch(index, seed=2)
    loss = TripletLoss(margin=0.2, max_violation=max_violation)(img, txt, idx)
    assert set(loss) == {"triplet_loss"}
    expected = _triplet_loops(img, txt, index, 0.2, max_violation)
    assert expected > 0, "degenerate batch: no violated triplet"
    assert loss["triplet_loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("max_violation", [True, False], ids=["max", "sum"])
def test_triplet_never_uses_a_same_image_pair_as_negative(max_violation: bool) -> None:
    """Row 2 is another caption of row 0's image: scoring it far above row 0's own pair must cost nothing."""
    img, txt, idx = _batch(REPEATED, seed=3)
    assert REPEATED[0] == REPEATED[2]
    txt = txt.clone()
    txt[2] = 10 * img[0]  # cosine 1 with image 0: the hardest negative of row 0, if it were one
    loss = TripletLoss(margin=0.2, max_violation=max_violation)
    got = loss(img, txt, idx)["triplet_loss"].item()
    assert got == pytest.approx(_triplet_loops(img, txt, REPEATED, 0.2, max_violation), rel=1e-5)
    # The same batch read as all-distinct images does count those pairs, and costs more.
    naive = loss(img, txt, torch.arange(len(REPEATED)))["triplet_loss"].item()
    assert naive > got + 0.1
    assert naive == pytest.approx(_triplet_loops(img, txt, list(range(len(REPEATED))), 0.2, max_violation), rel=1e-5)


def test_triplet_is_zero_when_all_margins_hold() -> None:
    idx = torch.tensor(REPEATED)
    img = torch.eye(8, dtype=torch.float64)[idx]  # orthogonal images; captions equal to their image
    out = TripletLoss(margin=0.2)(img, img.clone(), idx)["triplet_loss"]
    assert out.item() == 0.0
    out = TripletLoss(margin=1.5, max_violation=False)(img, img.clone(), idx)["triplet_loss"]
    n_pos = sum(REPEATED.count(i) for i in REPEATED)
    assert out.item() == pytest.approx(0.5 * 2 * (len(REPEATED) ** 2 - n_pos))  # cost 1.5 + 0 - 1 per negative pair


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigmoid_equals_open_clip_siglip_loss(seed: int) -> None:
    """One positive per row (distinct images), single process: the same value as open_clip's ``SigLipLoss`` on the
    normalised features with the same scale and bias, and the same gradients."""
    from open_clip.loss import SigLipLoss

    img, txt, idx = _batch(DISTINCT, seed=seed)
    img, txt = img.float().requires_grad_(True), txt.float().requires_grad_(True)
    ours = SigmoidLoss(logit_scale=math.log(7.0) + seed, logit_bias=-3.0 - seed)
    got = ours(img, txt, idx)["sigmoid_loss"]
    scale, bias = ours.logit_scale.detach().clone().requires_grad_(True), ours.logit_bias.detach().clone()
    bias.requires_grad_(True)
    want = SigLipLoss()(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), scale.exp(), bias)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    got.backward()
    g_ours = (img.grad.clone(), txt.grad.clone(), ours.logit_scale.grad.clone(), ours.logit_bias.grad.clone())
    img.grad = txt.grad = None
    want.backward()
    for a, b in zip(g_ours, (img.grad, txt.grad, scale.grad, bias.grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", [REPEATED, DISTINCT], ids=["repeated", "distinct"])
def test_sigmoid_equals_loop_implementation(index: list[int]) -> None:
    """With repeated images every same-image pair is a positive (label +1), not only the diagonal."""
    img, txt, idx = _batch(index, seed=5)
    loss = SigmoidLoss(logit_scale=math.log(12.0), logit_bias=-4.0)(img, txt, idx)
    assert set(loss) == {"sigmoid_loss"}
    expected = _sigmoid_loops(img, txt, index, 12.0, -4.0)
    assert loss["sigmoid_loss"].item() == pytest.approx(expected, rel=1e-5)
    if index is REPEATED:  # the one-positive reading of the same batch is a different number
        naive = _sigmoid_loops(img, txt, list(range(len(index))), 12.0, -4.0)
        assert abs(naive - expected) > 1e-3


def test_sigmoid_defaults_are_siglip_init_and_learned() -> None:
    loss = SigmoidLoss()
    assert loss.logit_scale.exp().item() == pytest.approx(10.0) and loss.logit_bias.item() == pytest.approx(-10.0)
    assert SIGLIP_INIT == (pytest.approx(math.log(10.0)), -10.0)
    assert loss.logit_scale.requires_grad and loss.logit_bias.requires_grad
    img, txt, idx = _batch(REPEATED, seed=6)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(300.0))  # not capped, unlike CLIP's temperature
    assert loss(img, txt, idx)["sigmoid_loss"].item() == pytest.approx(
        _sigmoid_loops(img, txt, REPEATED, 300.0, -10.0), rel=1e-5
    )


@pytest.mark.parametrize(
    "make",
    [lambda: InfoNCELoss(0.05), lambda: TripletLoss(0.2, True), lambda: TripletLoss(0.2, False), SigmoidLoss],
    ids=["infonce", "triplet-max", "triplet-sum", "sigmoid"],
)
def test_gradients_are_finite(make) -> None:
    img, txt, idx = _batch(REPEATED, seed=4)
    img = img.float().requires_grad_(True)
    txt = txt.float().requires_grad_(True)
    module = make()
    sum(module(img, txt, idx).values()).backward()
    for t in (img, txt, *module.parameters()):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
    # bf16 inputs (autocast on GPU) are computed in float32 and stay finite.
    out = make()(img.detach().bfloat16(), txt.detach().bfloat16(), idx)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
