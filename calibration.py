"""Calibration of a classifier's top softmax probability: the expected calibration error over equal-width bins (Guo
et al., "On Calibration of Modern Neural Networks", ICML 2017; MiSLAS reports it with 15 bins on long-tailed data),
the bins themselves for a reliability diagram, and temperature scaling fitted on the validation split."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15  # equal-width bins of the top softmax probability, as Guo et al. and MiSLAS count them


def bin_edges(bins: int = ECE_BINS) -> torch.Tensor:
    """0, 1/bins, ..., 1 in float64; bin b holds the confidences in (b/bins, (b+1)/bins], the first one 0 too."""
    return torch.arange(bins + 1, dtype=torch.float64) / bins


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> dict[str, list]:
    """Per bin of `confidence` (the top probability of each image): its images, their mean confidence and their
    accuracy (None for an empty bin). A confidence of exactly 1 falls in the last bin."""
    confidence = confidence.detach().double().cpu()
    index = torch.bucketize(confidence, bin_edges(bins)[1:-1])  # right-closed: k/bins goes to bin k-1
    count = torch.bincount(index, minlength=bins)
    sums = {"confidence": torch.bincount(index, confidence, minlength=bins),
            "accuracy": torch.bincount(index, correct.detach().double().cpu(), minlength=bins)}
    means = {name: [float(s / n) if n else None for s, n in zip(total.tolist(), count.tolist())]
             for name, total in sums.items()}
    return {"edges": bin_edges(bins).tolist(), "count": count.tolist(), **means}


def top_confidence(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's top softmax probability (float64) and whether its top class is the target."""
    confidence, predicted = logits.double().softmax(1).max(1)
    return confidence, predicted == targets


def expected_calibration_error(logits: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Sum over the bins of (images in it / images) x |accuracy - mean confidence| in it, a fraction of 1."""
    found = reliability_bins(*top_confidence(logits, targets), bins)
    gaps = [n * abs(a - c) for n, a, c in zip(found["count"], found["accuracy"], found["confidence"]) if n]
    return sum(gaps) / max(sum(found["count"]), 1)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on these (validation) predictions. The NLL is
    convex in 1/T; L-BFGS searches its log, so T stays positive."""
    logits, targets = logits.detach().double().cpu(), targets.detach().cpu()
    log_inverse = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_inverse], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits * log_inverse.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(1 / log_inverse.detach().exp())


def temperature_scaling(val_logits: torch.Tensor, val_targets: torch.Tensor, test_logits: torch.Tensor,
                        test_targets: torch.Tensor) -> dict[str, float | str]:
    """T fitted on the validation predictions alone, and the test ECE and NLL before and after dividing by it."""
    temperature = fit_temperature(val_logits, val_targets)

    def scores(logits: torch.Tensor, targets: torch.Tensor, t: float) -> tuple[float, float]:
        logits = logits.double() / t
        return expected_calibration_error(logits, targets), F.cross_entropy(logits, targets).item()

    (val_nll_before, val_nll_after) = (scores(val_logits, val_targets, t)[1] for t in (1.0, temperature))
    (ece_before, nll_before), (ece_after, nll_after) = (scores(test_logits, test_targets, t) for t in (1.0, temperature))
    return {"temperature": temperature, "fitted_on": "val nll", "val_nll_before": val_nll_before,
            "val_nll_after": val_nll_after, "ece_before": ece_before, "ece_after": ece_after,
            "nll_before": nll_before, "nll_after": nll_after}


def temperature_line(found: dict) -> str:
    """The terminal's line for temperature_scaling's record."""
    return (f"temperature scaling (T {found['temperature']:.3f}, fitted on the validation NLL): test ECE "
            f"{100 * found['ece_before']:.2f} -> {100 * found['ece_after']:.2f} %, NLL {found['nll_before']:.4f} -> "
            f"{found['nll_after']:.4f}")
