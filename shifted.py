"""Test sets of other label distributions, drawn from the balanced test set as LADE (Hong et al., CVPR 2021) and
SADE (Zhang et al., "Self-Supervised Aggregation of Diverse Experts for Test-Agnostic Long-Tailed Recognition",
NeurIPS 2022) score a model, and the prediction for a known test prior.

A model whose softmax estimates p(y | x) under the class prior p_model predicts for a test prior q by adding
log q - log p_model to its logits (Ren et al.'s derivation of Balanced Softmax, section 3.1). On a shifted test set
the target is top-1 accuracy, not bcr: the set is not balanced, and the prior is what tells its classes apart."""
from __future__ import annotations

import numpy as np
import torch

from datasets import ldam_draw, long_tail_counts
from losses import effective_number_weights
from metrics import class_groups, confusion_matrix

# name -> (imbalance factor of the test set's profile, reversed): forward keeps class 0 at its full count, backward
# class C - 1. SADE's order, which its tables and ours follow
SHIFTS = {"forward50": (50, False), "forward25": (25, False), "forward10": (10, False), "forward5": (5, False),
          "forward2": (2, False), "uniform": (1, False), "backward2": (2, True), "backward5": (5, True),
          "backward10": (10, True), "backward25": (25, True), "backward50": (50, True)}
DRAW = ("SADE's (test_all_cifar.py): class c keeps int(n x (1/f) ** (c / (C - 1))) of its n test images (backward: "
        "the profile reversed), the first of a numpy RandomState(0) shuffle of its indices, class by class, as "
        "LDAM-DRW's gen_imbalanced_data; uniform is the whole test set. Test images are not augmented")
# The training samplers whose draw has a known class prior: training prior ** exponent (see model_log_prior)
SAMPLER_EXPONENT = {"instance": 1.0, "sqrt": 0.5, "class_balanced": 0.0}
WEIGHTED_LOSSES = ("CrossEntropyLoss", "Focal", "LDAM")  # the losses that LOSS.reweight gives class weights


def shifted_counts(test_per_cls: list[int], factor: float, backward: bool) -> list[int]:
    """Images per class of one shifted set, from a balanced test set of `test_per_cls` images per class."""
    if len(set(test_per_cls)) != 1:
        raise ValueError(f"the test set is not balanced ({min(test_per_cls)} to {max(test_per_cls)} images a class): "
                         "the shifted test sets are drawn from a balanced one")
    counts = long_tail_counts(test_per_cls[0], len(test_per_cls), "exp", factor)
    return counts[::-1] if backward else counts


def shifted_indices(targets, counts: list[int]) -> np.ndarray:
    """The test images (sorted indices into `targets`, the test set's labels in its order) of a set of `counts` per
    class: LDAM-DRW's draw under seed 0 (datasets.ldam_draw), as SADE draws its shifted sets."""
    return ldam_draw(targets, counts, seed=0)


def split_order(n: int, processes: int) -> torch.Tensor:
    """The test-set index of each gathered prediction: the evaluation loaders give process r every processes-th
    image from r on, and gathering puts process 0's first."""
    return torch.cat([torch.arange(r, n, processes) for r in range(processes)])


def model_log_prior(cfg, num_per_cls: list[int]) -> tuple[torch.Tensor | None, str]:
    """The log of the class prior that the model's own logits predict for, and its description. Training draws
    classes by prior ** s (DATASET.sampler: instance 1, sqrt 1/2, class-balanced 0) and the loss adds a x log prior to
    the logits (Balanced Softmax a = 1, the logit-adjusted loss its tau, others 0), so the logits predict for
    prior ** (s - a): a Balanced Softmax model of instance sampling for the uniform prior, cross-entropy for the
    training one. Class weights (LOSS.reweight, also DRW's, which the final epochs train with) multiply each class's
    share. None where the sampler's prior is not fixed (progressive, meta)."""
    sampler = cfg.DATASET.sampler
    if sampler not in SAMPLER_EXPONENT:
        return None, f"not known: the {sampler} sampler's class prior changes in training"
    adjust = {"BalancedSoftmax": 1.0, "LogitAdjusted": cfg.LOSS.tau}.get(cfg.LOSS.name, 0.0)
    exponent = SAMPLER_EXPONENT[sampler] - adjust
    counts = torch.as_tensor(num_per_cls, dtype=torch.float64)
    log_prior = exponent * torch.log(counts / counts.sum())
    about = "the uniform prior" if exponent == 0 else f"the training prior ** {exponent:g}"
    if cfg.LOSS.name in WEIGHTED_LOSSES and cfg.LOSS.reweight != "none":
        log_prior = log_prior + torch.log(effective_number_weights(num_per_cls, cfg.LOSS.beta).double())
        about += f" x the class weights ({cfg.LOSS.reweight})"
    return log_prior - torch.logsumexp(log_prior, 0), about


def prior_corrected(logits: torch.Tensor, log_model_prior: torch.Tensor, test_counts: list[int]) -> torch.Tensor:
    """The logits for the test prior of `test_counts` (a class without images gets -inf: never predicted)."""
    counts = torch.as_tensor(test_counts, dtype=torch.float64)
    return logits.double() - log_model_prior + torch.log(counts / counts.sum())


def _accuracies(logits: torch.Tensor, targets: torch.Tensor, groups: dict[str, list[int]], suffix: str) -> dict:
    """Top-1 accuracy and each shot group's mean per-class accuracy over its classes present in the set (SADE's
    many/medium/few), None for a group without any."""
    num_classes = logits.shape[1]
    confusion = confusion_matrix(logits.argmax(1), targets, num_classes).double()
    per_class, present = confusion.diag() / confusion.sum(1).clamp(min=1), confusion.sum(1) > 0
    found = {f"acc{suffix}": (confusion.diag().sum() / confusion.sum()).item()}
    for group in ("many", "medium", "few"):
        members = [c for c in groups[group] if present[c]]
        found[f"{group}_acc{suffix}"] = per_class[members].mean().item() if members else None
    return found


def shifted_report(logits: torch.Tensor, targets: torch.Tensor, test_targets, num_per_cls: list[int],
                   log_model_prior: torch.Tensor | None, about_prior: str, processes: int = 1,
                   temperature: float | None = None) -> dict:
    """Per shifted set: n, acc (the model's own prediction), acc_prior (for the set's prior, known) and the shot
    groups' accuracies of both; with `temperature`, acc_prior_temperature too (the logits divided by it before the
    prior is added). `logits` and `targets` are the gathered predictions of the test set whose labels, in its own
    order, are `test_targets`; `num_per_cls` the training counts. An unbalanced test set: {"skipped": why}."""
    test_targets = torch.as_tensor(list(test_targets))
    order = split_order(len(test_targets), processes)
    if not torch.equal(targets.cpu(), test_targets[order]):
        raise RuntimeError("the gathered test predictions are not in the evaluation loaders' order")
    logits = torch.empty_like(logits).index_copy_(0, order.to(logits.device), logits).cpu().double()
    num_classes = len(num_per_cls)
    try:
        test_per_cls = torch.bincount(test_targets, minlength=num_classes).tolist()
        profiles = {name: shifted_counts(test_per_cls, *shift) for name, shift in SHIFTS.items()}
    except ValueError as error:
        return {"skipped": str(error)}
    groups = class_groups(num_per_cls)
    report = {"draw": DRAW, "model_prior": about_prior,
              "target": "top-1 accuracy, not bcr: a shifted test set is not balanced"}
    for name, counts in profiles.items():
        keep = torch.as_tensor(shifted_indices(test_targets.numpy(), counts))
        scores, labels = logits[keep], test_targets[keep]
        found = {"n": len(keep), "counts": counts, **_accuracies(scores, labels, groups, "")}
        if log_model_prior is not None:
            found |= _accuracies(prior_corrected(scores, log_model_prior, counts), labels, groups, "_prior")
            if temperature is not None:
                tempered = prior_corrected(scores / temperature, log_model_prior, counts)
                found["acc_prior_temperature"] = _accuracies(tempered, labels, groups, "")["acc"]
        report[name] = found
    return report


def shifted_table(report: dict) -> str:
    """The terminal's table of shifted_report, in %."""
    if "skipped" in report:
        return f"shifted test sets: none ({report['skipped']})"

    def cell(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    with_temperature = any("acc_prior_temperature" in report[name] for name in SHIFTS)
    header = ["set", "n", "acc", "many", "medium", "few", "acc+prior", "many", "medium", "few"]
    header += ["acc+T+prior"] if with_temperature else []
    rows = [[name, str(found["n"]), *(cell(found.get(key)) for key in
             ("acc", "many_acc", "medium_acc", "few_acc", "acc_prior", "many_acc_prior", "medium_acc_prior",
              "few_acc_prior", *(["acc_prior_temperature"] if with_temperature else [])))]
            for name, found in ((name, report[name]) for name in SHIFTS)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"shifted test sets (top-1 accuracy %, not bcr; +prior: each set's prior known, the model's own logits "
             f"taken to predict for {report['model_prior']}):"]
    lines += ["  " + "  ".join(text.rjust(width) for text, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)
