"""losses.BalancedSoftmax: cross-entropy on logits shifted by log(training prior)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losses import BalancedSoftmax, build_loss


def _batch(n: int = 16, c: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * 3, torch.randint(0, c, (n,), generator=g)


def test_readme_snippet():
    from losses import BalancedSoftmax as Imported  # the README's `from losses import BalancedSoftmax`

    num_per_cls = list({0: 5000, 1: 2775, 2: 1540, 3: 854, 4: 474, 5: 263, 6: 146, 7: 81, 8: 45, 9: 25}.values())
    criterion = Imported(num_per_cls=num_per_cls)
    logits, targets = torch.zeros(4, 10), torch.tensor([0, 9, 3, 3])
    loss = criterion(logits, targets)
    # zero logits: the shifted softmax is the prior itself, so the loss is the mean of -log(prior[target])
    total = sum(num_per_cls)
    expected = -sum(math.log(num_per_cls[t] / total) for t in [0, 9, 3, 3]) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("count", [1, 7, 5000])
def test_equal_counts_give_cross_entropy(count):
    logits, targets = _batch()
    loss = BalancedSoftmax([count] * 5)(logits, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_general_counts_by_hand():
    counts = [50, 20, 10, 5, 1]
    logits, targets = _batch()
    total = sum(counts)
    loss = BalancedSoftmax(counts)(logits, targets)
    # -log softmax(z + log p)[y], written out
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        shifted = [z + math.log(n / total) for z, n in zip(row, counts)]
        expected += -(shifted[y] - math.log(sum(math.exp(s) for s in shifted)))
    expected /= len(targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # and it is not plain cross-entropy
    assert abs(loss.item() - F.cross_entropy(logits, targets).item()) > 1e-3


def test_scaling_all_counts_changes_nothing():
    logits, targets = _batch()
    a = BalancedSoftmax([50, 20, 10, 5, 1])(logits, targets)
    b = BalancedSoftmax([5000, 2000, 1000, 500, 100])(logits, targets)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_rare_class_target_costs_more_than_under_cross_entropy():
    # with equal logits, a target of the rare class has a small shifted probability -> larger loss
    counts = [1000, 10]
    criterion = BalancedSoftmax(counts)
    logits = torch.zeros(1, 2)
    rare, common = criterion(logits, torch.tensor([1])), criterion(logits, torch.tensor([0]))
    assert rare.item() == pytest.approx(-math.log(10 / 1010), rel=1e-6)
    assert common.item() == pytest.approx(-math.log(1000 / 1010), rel=1e-6)


def test_gradient_is_shifted_softmax_minus_onehot_over_batch():
    counts = torch.tensor([40.0, 30.0, 20.0, 9.0, 1.0])
    logits, targets = _batch(n=8)
    logits = logits.float().requires_grad_()
    BalancedSoftmax(counts)(logits, targets).backward()
    prior = counts / counts.sum()
    expected = (torch.softmax(logits.detach() + prior.log(), 1) - F.one_hot(targets, 5).float()) / len(targets)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-6)


def test_reductions():
    counts = [50, 20, 10, 5, 1]
    logits, targets = _batch()
    per_sample = BalancedSoftmax(counts, reduction="none")(logits, targets)
    assert per_sample.shape == (len(targets),)
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    shifted = logits + prior.log()
    expected = -(shifted.log_softmax(1).gather(1, targets[:, None]).squeeze(1))
    torch.testing.assert_close(per_sample.double(), expected, rtol=1e-5, atol=1e-6)
    total = BalancedSoftmax(counts, reduction="sum")(logits, targets)
    mean = BalancedSoftmax(counts, reduction="mean")(logits, targets)
    default = BalancedSoftmax(counts)(logits, targets)
    assert total.item() == pytest.approx(expected.sum().item(), rel=1e-5)
    assert mean.item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert default.item() == pytest.approx(mean.item(), rel=1e-7)


def test_prior_is_a_buffer_in_state_dict_and_follows_dtype():
    counts = [30, 20, 10]
    criterion = BalancedSoftmax(counts)
    assert "log_prior" in dict(criterion.named_buffers())
    assert list(criterion.parameters()) == []  # nothing trainable
    state = criterion.state_dict()
    assert list(state) == ["log_prior"]
    torch.testing.assert_close(state["log_prior"], torch.log(torch.tensor(counts, dtype=torch.float32) / 60))
    assert criterion.to(torch.float64).log_prior.dtype == torch.float64
    # loading the state into a module built with other counts restores these counts' prior
    other = BalancedSoftmax([1, 1, 1])
    other.load_state_dict(state)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    assert other(logits, targets).item() == pytest.approx(BalancedSoftmax(counts)(logits, targets).item(), rel=1e-6)


def test_low_precision_logits_are_computed_in_float32():
    counts = [30, 20, 10]
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    half = BalancedSoftmax(counts)(logits.bfloat16(), targets)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(BalancedSoftmax(counts)(logits.bfloat16().float(), targets).item(), rel=1e-6)


def test_list_dict_and_tensor_give_the_same_loss():
    logits, targets = _batch(c=4)
    logits = logits.float()
    as_list = BalancedSoftmax([8, 4, 2, 1])(logits, targets)
    as_dict = BalancedSoftmax({3: 1, 1: 4, 0: 8, 2: 2})(logits, targets)  # keyed by class, in any order
    as_tensor = BalancedSoftmax(torch.tensor([8, 4, 2, 1]))(logits, targets)
    assert as_dict.item() == pytest.approx(as_list.item(), rel=1e-7)
    assert as_tensor.item() == pytest.approx(as_list.item(), rel=1e-7)
    # a different assignment of counts to classes gives a different loss (the dict is not read in insertion order)
    assert abs(BalancedSoftmax([1, 4, 8, 2])(logits, targets).item() - as_list.item()) > 1e-4


@pytest.mark.parametrize("counts", [[10, 0, 5], [10, -1, 5], [], {0: 3, 1: 0}])
def test_non_positive_counts_are_refused(counts):
    with pytest.raises(ValueError) as info:
        BalancedSoftmax(counts)
    assert "positive" in str(info.value)


def test_build_loss():
    assert isinstance(build_loss("CrossEntropyLoss", [10, 5]), nn.CrossEntropyLoss)
    criterion = build_loss("BalancedSoftmax", [10, 5])
    assert isinstance(criterion, BalancedSoftmax)
    torch.testing.assert_close(criterion.log_prior, torch.log(torch.tensor([10 / 15, 5 / 15])))
    with pytest.raises(ValueError, match="BalancedSoftmax"):
        build_loss("Focal", [10, 5])
