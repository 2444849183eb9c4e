"""shifted.py: the shifted test sets have their profile's class counts, are subsets of the test set and the same on
every call; the prior-corrected prediction under a known test prior is the Bayes classifier's; the uniform prior
leaves a Balanced Softmax model's predictions as they are."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from losses import effective_number_weights

from shifted import (SHIFTS, model_log_prior, prior_corrected, shifted_counts, shifted_indices, shifted_report,
                     shifted_table, split_order)

TRAIN_COUNTS = [500, 200, 80, 30, 10]


def _test_targets(per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """A balanced test set's labels in a shuffled order, as a test file holds them."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_the_profiles_are_sades_on_cifar10():
    assert shifted_counts([1000] * 10, 50, False) == [1000, 647, 419, 271, 175, 113, 73, 47, 30, 20]
    assert shifted_counts([1000] * 10, 50, True) == [20, 30, 47, 73, 113, 175, 271, 419, 647, 1000]
    assert shifted_counts([1000] * 10, 1, False) == [1000] * 10
    assert list(SHIFTS) == ["forward50", "forward25", "forward10", "forward5", "forward2", "uniform", "backward2",
                            "backward5", "backward10", "backward25", "backward50"]


def test_an_unbalanced_test_set_has_no_shifted_sets():
    with pytest.raises(ValueError, match="not balanced"):
        shifted_counts([10, 9, 10], 2, False)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shifted_set_has_its_profile_and_is_a_subset_of_the_test_set(name):
    targets = _test_targets(40, 10)
    counts = shifted_counts([40] * 10, *SHIFTS[name])
    chosen = shifted_indices(targets, counts)
    assert len(set(chosen.tolist())) == len(chosen)  # no image twice
    assert chosen.min() >= 0 and chosen.max() < len(targets)
    assert np.bincount(targets[chosen], minlength=10).tolist() == counts
    assert np.array_equal(chosen, shifted_indices(targets, counts))  # the same on every call


def test_the_draw_is_a_numpy_shuffle_under_seed_0_class_by_class():
    """LDAM-DRW's gen_imbalanced_data, which SADE draws with: np.random.seed(0), then per class np.random.shuffle of
    its indices and the first n kept. The legacy global generator, seeded here, gives the same images."""
    targets = _test_targets(30, 5, seed=3)
    counts = [30, 17, 9, 5, 3]
    np.random.seed(0)
    expected = []
    for c, n in enumerate(counts):
        where = np.where(targets == c)[0]
        np.random.shuffle(where)
        expected.append(where[:n])
    assert np.array_equal(shifted_indices(targets, counts), np.sort(np.concatenate(expected)))


def test_split_order_undoes_the_sharding_of_the_evaluation_loaders():
    n, processes = 11, 3
    gathered = torch.cat([torch.arange(r, n, processes) for r in range(processes)])  # process 0's images first
    assert torch.equal(split_order(n, processes), gathered)
    assert torch.equal(split_order(n, 1), torch.arange(n))


def _config(loss: str, sampler: str = "instance", tau: float = 1.0, reweight: str = "none"):
    return OmegaConf.create({"LOSS": {"name": loss, "tau": tau, "reweight": reweight, "beta": 0.99},
                             "DATASET": {"sampler": sampler}})


def _gaussian_problem(n: int = 3000):
    """1-D Gaussians x | y ~ N(y, 1) for 5 classes: log p(x | y) is known exactly, so is every prior's Bayes rule."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=generator, dtype=torch.float64) * 3
    log_likelihood = -0.5 * (x[:, None] - torch.arange(5, dtype=torch.float64)) ** 2
    return log_likelihood


def test_the_prior_corrected_prediction_is_the_bayes_classifier_under_the_test_prior():
    log_likelihood = _gaussian_problem()
    train = torch.tensor(TRAIN_COUNTS, dtype=torch.float64)
    test_counts = [3, 40, 7, 100, 1]
    bayes = (log_likelihood + torch.log(torch.tensor(test_counts, dtype=torch.float64))).argmax(1)
    weights = effective_number_weights(TRAIN_COUNTS, 0.99).double()
    models = {  # what each model's logits estimate, up to a constant per image
        ("CrossEntropyLoss", "instance", "none"): log_likelihood + torch.log(train / train.sum()) + 3.0,
        ("BalancedSoftmax", "instance", "none"): log_likelihood - 1.0,
        ("CrossEntropyLoss", "class_balanced", "none"): log_likelihood,
        ("CrossEntropyLoss", "sqrt", "none"): log_likelihood + 0.5 * torch.log(train),
        ("CrossEntropyLoss", "instance", "class_balanced"): log_likelihood + torch.log(train * weights),
    }
    for (loss, sampler, reweight), logits in models.items():
        log_prior, _ = model_log_prior(_config(loss, sampler, reweight=reweight), TRAIN_COUNTS)
        corrected = prior_corrected(logits, log_prior, test_counts).argmax(1)
        assert torch.equal(corrected, bayes), (loss, sampler, reweight)
        assert not torch.equal(logits.argmax(1), bayes)  # uncorrected, each predicts for another prior


def test_the_logit_adjusted_loss_predicts_for_the_training_prior_to_1_minus_tau():
    log_prior, about = model_log_prior(_config("LogitAdjusted", tau=0.25), TRAIN_COUNTS)
    train = torch.tensor(TRAIN_COUNTS, dtype=torch.float64)
    expected = 0.75 * torch.log(train / train.sum())
    torch.testing.assert_close(log_prior - log_prior[0], expected - expected[0])
    assert about == "the training prior ** 0.75"
    assert model_log_prior(_config("BalancedSoftmax", sampler="progressive"), TRAIN_COUNTS)[0] is None


def test_the_uniform_prior_leaves_a_balanced_softmax_models_predictions_unchanged():
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_prior, _ = model_log_prior(_config("BalancedSoftmax"), TRAIN_COUNTS)
    assert torch.equal(prior_corrected(logits, log_prior, [40] * 5).argmax(1), logits.argmax(1))


def test_shifted_report_on_gathered_predictions():
    """Two processes' gathered predictions (each took every other image) give the report of one process; on the
    uniform set a Balanced Softmax model's accuracy is the same with the prior as without."""
    targets = torch.as_tensor(_test_targets(20, 5))
    logits = torch.randn(100, 5, generator=torch.Generator().manual_seed(2)) + 2 * torch.nn.functional.one_hot(targets)
    log_prior, about = model_log_prior(_config("BalancedSoftmax"), TRAIN_COUNTS)
    one = shifted_report(logits, targets, targets.tolist(), TRAIN_COUNTS, log_prior, about)
    order = split_order(100, 2)
    two = shifted_report(logits[order], targets[order], targets.tolist(), TRAIN_COUNTS, log_prior, about, processes=2)
    assert one == two
    assert one["uniform"]["n"] == 100 and one["uniform"]["acc"] == one["uniform"]["acc_prior"]
    assert one["uniform"]["acc"] == pytest.approx((logits.argmax(1) == targets).double().mean().item())
    assert one["forward50"]["counts"] == [20, 7, 2, 1, 0] and one["forward50"]["n"] == 30
    assert one["forward50"]["few_acc"] is None  # class 4, the one few-shot class, has no image in it
    assert "acc_prior_temperature" not in one["uniform"] and one["draw"].startswith("SADE's")
    table = shifted_table(one)
    assert "not bcr" in table and len(table.splitlines()) == 2 + len(SHIFTS)


def test_an_unbalanced_test_set_is_reported_as_skipped():
    targets = torch.tensor([0, 0, 1, 2])
    found = shifted_report(torch.zeros(4, 3), targets, targets.tolist(), [5, 3, 1], None, "")
    assert "not balanced" in found["skipped"] and "not balanced" in shifted_table(found)
