"""CLiF-VQA losses against hand-computed values and gradients."""

from __future__ import annotations

import pytest
import torch
from vqa_pipe.pipeline.losses import (
    LossConfig,
    LossError,
    linearity_loss,
    make_loss,
    monotonicity_loss,
    pairwise_hinge_loss,
)


def _t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_eq14_hand_computed_value_and_gradient():
    """CLiF-VQA eq. 14 on p = (0.5, 0.2, 0.9), q = (1, 2, 3), m = 3.

    Every ordered pair (i, j) gives max(0, |q_i - q_j| - f (p_i - p_j)), f = 1 if q_i >= q_j
    else -1. The diagonal gives 0; (i, j) and (j, i) give the same term when q_i != q_j:

    * (0, 1): f(0, 1) = -1: 1 - (-1)(0.5 - 0.2) = 1.3;  (1, 0): 1 - (0.2 - 0.5) = 1.3
    * (0, 2): 2 + (0.5 - 0.9) = 1.6 twice
    * (1, 2): 1 + (0.2 - 0.9) = 0.3 twice

    L = (2.6 + 3.2 + 0.6) / 9 = 6.4 / 9. All six terms are active, each adds -f to dL/dp_i
    and +f to dL/dp_j: p_0 gets +1 from each of its four pairs (4/9), p_2 gets -1 from each of
    its four (-4/9), p_1 gets -1, -1 (pairs with 0) and +1, +1 (pairs with 2): 0.
    """
    pred = _t([0.5, 0.2, 0.9], grad=True)
    target = _t([1.0, 2.0, 3.0])
    loss = monotonicity_loss(pred, target)
    assert loss.item() == pytest.approx(6.4 / 9)
    loss.backward()
    assert pred.grad.tolist() == pytest.approx([4 / 9, 0.0, -4 / 9])


def test_eq14_counts_ties_and_shrunk_predictions():
    """Ties: p = (0, 0.1, 0.5), q = (1, 2, 2). Pairs with q_0: (0, 1) 1 + (0 - 0.1) = 0.9 and
    (0, 2) 1 + (0 - 0.5) = 0.5, twice each: 2.8. The tied pair has f = 1 both ways:
    (1, 2): 0 - (0.1 - 0.5) = 0.4, (2, 1): max(0, 0 - 0.4) = 0. L = 3.2 / 9.

    Shrunk but right-ordered: p = 0.1 q, q = (1, 2, 3). Each pair costs 0.9 |q_i - q_j|:
    2 * (0.9 + 1.8 + 0.9) / 9 = 0.8, where the margin-0 hinge costs nothing.
    """
    assert monotonicity_loss(_t([0.0, 0.1, 0.5]), _t([1.0, 2.0, 2.0])).item() == pytest.approx(
        3.2 / 9)
    q = _t([1.0, 2.0, 3.0])
    assert monotonicity_loss(0.1 * q, q).item() == pytest.approx(0.8)
    assert pairwise_hinge_loss(0.1 * q, q).item() == 0.0
    # predictions equal to the targets (or shifted by a constant) cost nothing
    assert monotonicity_loss(q + 7.0, q).item() == pytest.approx(0.0, abs=1e-12)
    # one video: only the diagonal, 0
    assert monotonicity_loss(_t([0.3]), _t([2.0])).item() == 0.0


def test_eq14_matches_the_formula_term_by_term():
    torch.manual_seed(1)
    pred = torch.randn(9, dtype=torch.float64)
    target = torch.randint(0, 4, (9,)).double()  # many ties
    total = 0.0
    for i in range(9):
        for j in range(9):
            f = 1.0 if target[i] >= target[j] else -1.0
            total += max(0.0, abs(target[i] - target[j]) - f * (pred[i] - pred[j]))
    assert monotonicity_loss(pred, target).item() == pytest.approx(float(total) / 81)


def test_hinge_hand_computed_value_and_gradient():
    pred = _t([0.5, 0.2, 0.9], grad=True)
    target = _t([1.0, 2.0, 3.0])
    # pairs (0,1): target says p0 < p1 but p0 - p1 = 0.3  -> hinge 0.3
    #       (0,2): p0 - p2 = -0.4, right order            -> 0
    #       (1,2): p1 - p2 = -0.7, right order            -> 0
    loss = pairwise_hinge_loss(pred, target)
    assert loss.item() == pytest.approx(0.1)
    loss.backward()
    assert pred.grad.tolist() == pytest.approx([1 / 3, -1 / 3, 0.0])


def test_hinge_margin_and_ties():
    pred = _t([0.0, 0.1, 0.5])
    target = _t([1.0, 2.0, 2.0])  # the tied pair (1,2) is left out
    # (0,1): max(0, 0.2 - 0.1) = 0.1; (0,2): max(0, 0.2 - 0.5) = 0
    assert pairwise_hinge_loss(pred, target, margin=0.2).item() == pytest.approx(0.05)
    flat = pairwise_hinge_loss(_t([1.0, 2.0], grad=True), _t([3.0, 3.0]))
    assert flat.item() == 0.0
    flat.backward()  # no pairs: zero loss that still back-propagates


def test_linearity_hand_computed():
    # PLCC([1,2,3], [1,3,2]) = 0.5 -> (1 - 0.5) / 2
    assert linearity_loss(_t([1.0, 2.0, 3.0]), _t([1.0, 3.0, 2.0])).item() == pytest.approx(
        0.25, abs=1e-6
    )
    assert linearity_loss(_t([1.0, 2.0, 3.0]), _t([2.0, 4.0, 6.0])).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert linearity_loss(_t([1.0, 2.0, 3.0]), _t([3.0, 2.0, 1.0])).item() == pytest.approx(
        1.0, abs=1e-6
    )
    with pytest.raises(LossError, match="at least 2"):
        linearity_loss(_t([1.0]), _t([1.0]))


def test_linearity_gradient_matches_analytic_derivative():
    # d/dp of -r/2 with r = <p0, g0> / (|p0| |g0|): -(g0/|g0| - r p0/|p0|) / (2 |p0|)
    pred = _t([0.3, -1.2, 2.0, 0.7], grad=True)
    target = _t([1.0, 0.0, 3.0, 1.5])
    linearity_loss(pred, target, eps=0.0).backward()
    p0 = pred.detach() - pred.detach().mean()
    g0 = target - target.mean()
    r = (p0 @ g0) / (p0.norm() * g0.norm())
    expected = -(g0 / g0.norm() - r * p0 / p0.norm()) / (2 * p0.norm())
    assert torch.allclose(pred.grad, expected, atol=1e-10)


def test_gradcheck_of_both_losses():
    torch.manual_seed(0)
    pred = torch.randn(7, dtype=torch.float64, requires_grad=True)
    target = torch.randn(7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: linearity_loss(p, target), (pred,))
    assert torch.autograd.gradcheck(lambda p: monotonicity_loss(p, target), (pred,))
    assert torch.autograd.gradcheck(lambda p: pairwise_hinge_loss(p, target, 0.1), (pred,))


def test_combined_loss_weights_and_options():
    pred = _t([0.5, 0.2, 0.9, 0.1])
    target = _t([1.0, 2.0, 3.0, 0.5])
    mono = monotonicity_loss(pred, target).item()
    lin = linearity_loss(pred, target).item()
    combined = make_loss(LossConfig("mono+lin", alpha=2.0, beta=0.5))
    assert combined(pred, target).item() == pytest.approx(2.0 * mono + 0.5 * lin)
    hinge = pairwise_hinge_loss(pred, target, 0.1).item()
    assert hinge != pytest.approx(mono)
    assert make_loss(LossConfig("hinge+lin", alpha=2.0, beta=0.5, margin=0.1))(
        pred, target).item() == pytest.approx(2.0 * hinge + 0.5 * lin)
    assert make_loss("hinge", margin=0.1)(pred, target).item() == pytest.approx(hinge)
    assert make_loss("mono")(pred, target).item() == pytest.approx(mono)
    assert make_loss("l1")(pred, target).item() == pytest.approx(
        (pred - target).abs().mean().item()
    )
    assert make_loss("mse")(pred, target).item() == pytest.approx(
        ((pred - target) ** 2).mean().item()
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "huber"}, "unknown loss 'huber'"),
        ({"alpha": -1.0}, "must be >= 0"),
        ({"alpha": 0.0, "beta": 0.0}, "constant"),
        ({"name": "hinge+lin", "alpha": 0.0, "beta": 0.0}, "constant"),
        ({"name": "hinge", "margin": -0.1}, "margin must be >= 0"),
    ],
)
def test_bad_loss_configs(kwargs, message):
    with pytest.raises(LossError, match=message):
        LossConfig(**kwargs)
