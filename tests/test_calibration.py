"""calibration.py and evaluate.py --temperature: the ECE on hand-built cases and its bins' edges, temperature scaling
fitted on its own split alone, and refused without a validation split."""
from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from omegaconf import OmegaConf

import calibration
from calibration import (ECE_BINS, expected_calibration_error, fit_temperature, reliability_bins, temperature_scaling,
                         top_confidence)
from checkpoint import save_torch
from conftest import ROOT, read
from config import load_config
from fake_cifar import accept_files_in, make_cifar
from models import build_model


def _two_class_logits(confidences: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose top probability (class 0) is each of `confidences`, and targets that it hits where `correct`."""
    p = torch.tensor(confidences, dtype=torch.float64)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], 1)
    return logits, torch.tensor([0 if hit else 1 for hit in correct])


def test_ece_is_zero_for_calibrated_predictions():
    # in each bin the accuracy equals the confidence: 3 of 4 right at 0.75, 4 of 5 at 0.8, all at a confidence of 1
    logits, targets = _two_class_logits([0.75] * 4 + [0.8] * 5 + [1.0] * 3,
                                        [True, True, True, False] + [True] * 4 + [False] + [True] * 3)
    assert expected_calibration_error(logits, targets) == pytest.approx(0.0, abs=1e-12)


def test_ece_equals_a_hand_computed_value():
    # bin (0.6, 0.667]: 0.62 and 0.64 right, 0.66 wrong: accuracy 2/3, confidence 0.64, gap 0.02667 (3 images)
    # bin (0.933, 1]: 0.95 and 0.99 both wrong: accuracy 0, confidence 0.97, gap 0.97 (2 images)
    logits, targets = _two_class_logits([0.62, 0.64, 0.66, 0.95, 0.99], [True, True, False, False, False])
    expected = (3 * abs(2 / 3 - 0.64) + 2 * abs(0.0 - 0.97)) / 5
    assert expected_calibration_error(logits, targets) == pytest.approx(expected, rel=1e-9)
    found = reliability_bins(*top_confidence(logits, targets))
    assert found["count"][9] == 3 and found["count"][14] == 2 and sum(found["count"]) == 5
    assert found["accuracy"][9] == pytest.approx(2 / 3) and found["confidence"][14] == pytest.approx(0.97)
    assert found["accuracy"][0] is None  # an empty bin has no accuracy


def test_bins_are_equal_width_and_right_closed_and_a_confidence_of_1_is_counted():
    found = reliability_bins(torch.tensor([1.0, 14 / 15, 5 / 15, 5 / 15 + 1e-9, 0.0], dtype=torch.float64),
                             torch.ones(5))
    assert found["edges"] == pytest.approx([k / ECE_BINS for k in range(ECE_BINS + 1)]) and len(found["count"]) == 15
    assert found["count"][14] == 1  # exactly 1: the last bin
    assert found["count"][13] == 1  # 14/15: the upper edge of bin 13 belongs to it
    assert found["count"][4] == 1 and found["count"][5] == 1  # 5/15 closes bin 4; just above it opens bin 5
    assert found["count"][0] == 1  # 0: the first bin


def _overconfident(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a 4-class problem, each image's label drawn from their softmax, then multiplied by 4: over-confident
    by a temperature of 4."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, 4, generator=generator, dtype=torch.float64)
    targets = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return 4 * logits, targets


def test_temperature_scaling_lowers_the_nll_of_its_own_split():
    logits, targets = _overconfident(2000, 0)
    temperature = fit_temperature(logits, targets)
    assert 3 < temperature < 5  # it undoes the factor of 4
    nll = lambda t: torch.nn.functional.cross_entropy(logits.double() / t, targets).item()  # noqa: E731
    assert nll(temperature) < nll(1.0)
    assert nll(temperature) <= min(nll(temperature * 0.95), nll(temperature * 1.05))  # a minimum


def test_temperature_is_fitted_without_the_test_predictions():
    val, test = _overconfident(500, 1), _overconfident(300, 2)
    found = temperature_scaling(*val, *test)
    other = temperature_scaling(*val, -test[0], test[1])  # other test logits: the same temperature
    assert found["temperature"] == other["temperature"] == pytest.approx(fit_temperature(*val))
    assert found["val_nll_after"] < found["val_nll_before"]
    assert found["ece_after"] < found["ece_before"]  # over-confident test logits, as the validation ones


@pytest.fixture
def checkpoint_file(tmp_path, monkeypatch):
    """A resnet32 checkpoint of a run with 3 validation images a class, and the generated CIFAR-10 it names."""
    from torchvision.datasets import CIFAR10

    for name in ("train_list", "test_list", "meta"):
        monkeypatch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    datadir = tmp_path / "data"
    make_cifar(datadir, 10, train_per_class=20, test_per_class=6)
    accept_files_in(datadir)
    cfg = load_config([str(ROOT / "configs.yaml")], [
        "DATASET.datadir", str(datadir), "DATASET.download", "false", "DATASET.val_per_class", "3",
        "MODEL.name", "resnet32", "TRAIN.mixed_precision", "no", "TRAIN.wandb.use", "false"])
    torch.manual_seed(0)
    model, _ = build_model("resnet32", 10, False, 32)
    path = tmp_path / "model.pt"
    save_torch({"model": model.state_dict(), "epoch": 1, "config": OmegaConf.to_container(cfg)}, path)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return path, datadir


def test_evaluate_fits_the_temperature_on_the_validation_split(checkpoint_file, tmp_path, monkeypatch):
    import evaluate

    path, datadir = checkpoint_file
    seen = []
    fit = calibration.fit_temperature
    monkeypatch.setattr(calibration, "fit_temperature", lambda logits, targets: seen.append(targets) or fit(logits, targets))
    evaluate.main([str(path), "--temperature", "--out", str(tmp_path / "eval"), "DATASET.datadir", str(datadir)])
    assert len(seen) == 1 and len(seen[0]) == 30  # the 3 validation images of each class, never the 60 test ones
    results = read(tmp_path / "eval" / "results-seed0.json")
    found = results["calibration"]
    assert found["temperature"] > 0 and found["val_nll_after"] <= found["val_nll_before"] + 1e-12
    assert found["ece_before"] == pytest.approx(results["test"]["ece"], abs=1e-6)
    assert sum(found["reliability"]["count"]) == 60
    assert all("acc_prior_temperature" in results["shifted"][name] for name in ("forward50", "backward50"))


def test_evaluate_refuses_a_temperature_without_a_validation_split(checkpoint_file, tmp_path):
    import evaluate

    path, datadir = checkpoint_file
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(path), "--temperature", "--out", str(tmp_path / "eval"), "DATASET.datadir", str(datadir),
                       "DATASET.val_per_class", "0"])
    message = str(exit_.value.code)
    assert message.startswith("error: --temperature fits on the validation split") and "\n" not in message
    assert not (tmp_path / "eval" / "results-seed0.json").exists()
