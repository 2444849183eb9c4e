"""losses.py: Balanced Softmax (cross-entropy on logits shifted by log(training prior)), and the losses of the
long-tail literature against their authors' code (LDAM, DRW, focal, class-balanced weights: LDAM-DRW's values in
tests/fixtures/ldam_drw_reference.json) or published formula (the logit-adjusted loss)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from config import LOSS_KEYS
from losses import (DEFAULTS, LDAM, LOSSES, BalancedSoftmax, CrossEntropy, Focal, LogitAdjusted, build_loss,
                    effective_number_weights)
from mixup import MixedTargets

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "ldam_drw_reference.json").read_text())


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
    assert isinstance(build_loss("CrossEntropyLoss", [10, 5]), CrossEntropy)
    criterion = build_loss("BalancedSoftmax", [10, 5])
    assert isinstance(criterion, BalancedSoftmax)
    torch.testing.assert_close(criterion.log_prior, torch.log(torch.tensor([10 / 15, 5 / 15])))
    with pytest.raises(ValueError, match="BalancedSoftmax"):
        build_loss("Seesaw", [10, 5])


# ---------------------------------------------------------------- against LDAM-DRW's code (github.com/kaidic/LDAM-DRW
# at 2536330f2afdaa65618323cb5a5850efccce762a, losses.py and cifar_train.py, run by tools/reference/ldam_drw_losses.py)

def reference_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and labels that tools/reference/ldam_drw_losses.py fed LDAM-DRW's code, by the same formulas."""
    counts = REFERENCE["counts"]
    batch = len(REFERENCE["cases"]["LDAM"]["grad"])
    k = torch.arange(batch * len(counts), dtype=torch.float64).reshape(batch, len(counts))
    return torch.sin(1.7 * k + 0.3).float(), (torch.arange(batch) * 3) % len(counts)


# case -> (LOSS.name, settings, epoch)
REFERENCE_CASES = {
    "LDAM": ("LDAM", {}, 0),
    "LDAM-DRW": ("LDAM", {"reweight": "drw", "drw_epoch": 160}, 160),
    "CE-CB": ("CrossEntropyLoss", {"reweight": "class_balanced"}, 0),
    "Focal": ("Focal", {}, 0),
    "Focal-gamma2": ("Focal", {"gamma": 2.0}, 0),
    "Focal-CB": ("Focal", {"reweight": "class_balanced"}, 0),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_loss_and_gradient_equal_ldam_drws_own_code(case):
    name, settings, epoch = REFERENCE_CASES[case]
    criterion = build_loss(name, REFERENCE["counts"], settings)
    criterion.set_epoch(epoch)
    logits, targets = reference_inputs()
    logits.requires_grad_()
    loss = criterion(logits, targets)
    loss.backward()
    expected = REFERENCE["cases"][case]
    assert loss.item() == pytest.approx(expected["loss"], rel=1e-6)
    torch.testing.assert_close(logits.grad, torch.tensor(expected["grad"]), rtol=1e-5, atol=1e-7)


def test_drw_weighs_nothing_before_its_epoch_as_ldam_drws_code():
    # LDAM-DRW's DRW rule gives weights of 1 before epoch 160 (beta 0): plain LDAM's values
    assert REFERENCE["weights"]["DRW epoch 159"] == [1.0] * 10
    criterion = build_loss("LDAM", REFERENCE["counts"], {"reweight": "drw", "drw_epoch": 160})
    logits, targets = reference_inputs()
    for epoch, case in ((0, "LDAM"), (159, "LDAM"), (160, "LDAM-DRW"), (199, "LDAM-DRW")):
        criterion.set_epoch(epoch)
        assert criterion(logits, targets).item() == pytest.approx(REFERENCE["cases"][case]["loss"], rel=1e-6)


def test_effective_number_weights_and_ldam_margins_equal_ldam_drws():
    weights = effective_number_weights(REFERENCE["counts"], 0.9999)
    torch.testing.assert_close(weights, torch.tensor(REFERENCE["weights"]["Reweight"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(LDAM(REFERENCE["counts"]).margins, torch.tensor(REFERENCE["margins"]), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- the logit-adjusted loss, by its published formula

@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_loss_and_gradient_equal_the_published_formula(tau):
    # google-research/logit_adjustment utils.build_loss_fn (ccc94ce348360ddcd41c749d4088d468ccfd1eaf): CE of
    # logits + log(prior^tau + 1e-12), the batch mean; its gradient softmax(adjusted) - onehot over the batch. Written
    # here in float64 NumPy
    counts = np.array([500, 300, 120, 40, 9], dtype=np.float64)
    logits, targets = _batch(n=10)
    adjusted = logits.numpy() + np.log((counts / counts.sum()) ** tau + 1e-12)
    log_softmax = adjusted - np.log(np.exp(adjusted - adjusted.max(1, keepdims=True)).sum(1, keepdims=True)) - \
        adjusted.max(1, keepdims=True)
    expected_loss = -log_softmax[np.arange(10), targets.numpy()].mean()
    expected_grad = (np.exp(log_softmax) - np.eye(5)[targets.numpy()]) / 10
    ours = logits.float().requires_grad_()
    loss = build_loss("LogitAdjusted", counts.astype(int).tolist(), {"tau": tau})(ours, targets)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    np.testing.assert_allclose(ours.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-7)


def test_logit_adjusted_at_tau_1_is_balanced_softmax_and_at_0_cross_entropy():
    counts, (logits, targets) = [50, 20, 10, 5, 1], _batch()
    la = LogitAdjusted(counts, 1.0)(logits, targets)
    assert la.item() == pytest.approx(BalancedSoftmax(counts)(logits, targets).item(), rel=1e-7)
    assert LogitAdjusted(counts, 0.0)(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits.float(), targets).item(), rel=1e-6)


def test_focal_at_gamma_0_is_cross_entropy():
    logits, targets = _batch()
    assert Focal(0.0)(logits, targets).item() == pytest.approx(F.cross_entropy(logits.float(), targets).item(), rel=1e-6)


# ---------------------------------------------------------------- settings, and mixed batches

def test_each_loss_reads_exactly_the_keys_that_config_lets_it_take():
    # config.NO_EFFECT refuses a LOSS key that the chosen loss does not read; this holds its table to the losses
    assert set(LOSS_KEYS) == set(LOSSES)
    changed = {"reweight": "class_balanced", "gamma": 2.0, "max_m": 0.3, "s": 10.0, "tau": 0.5}
    counts, (logits, targets) = [50, 20, 10, 5, 1], _batch()
    for name in LOSSES:
        base = build_loss(name, counts)(logits, targets).item()
        for key, value in changed.items():
            moved = build_loss(name, counts, {key: value})(logits, targets).item()
            assert (moved != pytest.approx(base, rel=1e-6)) == (key in LOSS_KEYS[name]), (name, key)
    # beta and drw_epoch go with class weights
    weighted = {"reweight": "drw", "drw_epoch": 3}
    criterion = build_loss("CrossEntropyLoss", counts, weighted)
    before = criterion(logits, targets).item()
    criterion.set_epoch(3)
    after = criterion(logits, targets).item()
    other_beta = build_loss("CrossEntropyLoss", counts, {**weighted, "beta": 0.9})
    other_beta.set_epoch(3)
    assert before == pytest.approx(F.cross_entropy(logits.float(), targets).item(), rel=1e-6)
    assert after != pytest.approx(before, rel=1e-6) and other_beta(logits, targets).item() != pytest.approx(after)


def test_defaults_are_the_published_ones_and_configs_yamls():
    from config import load_config

    assert DEFAULTS == {"reweight": "none", "beta": 0.9999, "drw_epoch": 160, "gamma": 1.0, "max_m": 0.5, "s": 30.0,
                        "tau": 1.0}
    loss = load_config(Path(__file__).resolve().parents[1] / "configs.yaml").LOSS
    assert {key: loss[key] for key in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("name, settings", [("CrossEntropyLoss", {}), ("BalancedSoftmax", {}),
                                            ("LogitAdjusted", {"tau": 0.5}), ("Focal", {}),
                                            ("LDAM", {"reweight": "class_balanced"}),
                                            ("CrossEntropyLoss", {"reweight": "class_balanced"})])
def test_a_mixed_batch_takes_the_loss_on_both_labels(name, settings):
    # BagofTricks-LT's input mixup: lam x loss(labels a) + (1 - lam) x loss(labels b)
    counts, (logits, targets) = [50, 20, 10, 5, 1], _batch()
    criterion = build_loss(name, counts, settings)
    other = targets.roll(3)
    mixed = criterion(logits, MixedTargets(targets, other, 0.3))
    expected = 0.3 * criterion(logits, targets) + 0.7 * criterion(logits, other)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    if name in ("CrossEntropyLoss", "BalancedSoftmax") and not settings:
        # for an unweighted loss that is linear in the target: the loss on the mixed soft label
        shift = 0 if name == "CrossEntropyLoss" else BalancedSoftmax(counts).log_prior
        soft = 0.3 * F.one_hot(targets, 5) + 0.7 * F.one_hot(other, 5)
        assert mixed.item() == pytest.approx(F.cross_entropy(logits.float() + shift, soft.float()).item(), rel=1e-6)
