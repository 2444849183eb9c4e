"""Metrics of a long-tailed classifier on a balanced test set, computed once from the gathered logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from calibration import expected_calibration_error

# The standard shot groups of the long-tail literature, by training images per class
MANY_SHOT, FEW_SHOT = 100, 20
# per_class_report writes the whole confusion matrix up to this many classes (CIFAR-100's 10,000 cells); at iNat
# 2018's 8,142 it would be 66 million cells, about 0.6 GB of JSON a file. Every report keeps the most confused pairs
FULL_CONFUSION, MOST_CONFUSED = 100, 20


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted ones."""
    return torch.bincount(targets * num_classes + preds, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    confusion = confusion.double()
    tp = confusion.diag()
    recall = tp / confusion.sum(1).clamp(min=1)
    precision = tp / confusion.sum(0).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {"precision": precision, "recall": recall, "f1": f1}


def auroc(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro one-vs-rest area under the ROC curve (Mann-Whitney U with tied scores sharing their mean rank)."""
    n, num_classes = probs.shape
    areas = []
    for c in range(num_classes):
        positive = targets == c
        n_pos = int(positive.sum())
        if n_pos in (0, n):
            continue
        scores, order = probs[:, c].double().sort()
        _, inverse, counts = torch.unique_consecutive(scores, return_inverse=True, return_counts=True)
        last = counts.cumsum(0).double()
        mean_rank = (last - (counts.double() - 1) / 2)[inverse]  # 1-based ranks, ties averaged
        rank_sum = mean_rank[positive[order]].sum()
        areas.append(float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))))
    return sum(areas) / len(areas) if areas else float("nan")


def class_groups(num_per_cls: list[int]) -> dict[str, list[int]]:
    """Classes per group: many/medium/few by training count (>100, 20-100, <20) and head/mid/tail thirds of the
    classes sorted by training count, largest first (ties broken by class index)."""
    counts = torch.as_tensor(num_per_cls)
    by_count = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    third = [len(counts) * k // 3 for k in range(4)]
    return {
        "many": [c for c in range(len(counts)) if counts[c] > MANY_SHOT],
        "medium": [c for c in range(len(counts)) if FEW_SHOT <= counts[c] <= MANY_SHOT],
        "few": [c for c in range(len(counts)) if counts[c] < FEW_SHOT],
        "head": sorted(by_count[third[0]:third[1]]),
        "mid": sorted(by_count[third[1]:third[2]]),
        "tail": sorted(by_count[third[2]:third[3]]),
    }


def summarize(logits: torch.Tensor, targets: torch.Tensor, num_per_cls: list[int]) -> dict[str, float | None]:
    """acc, bcr (mean per-class recall), macro precision/recall/f1, AUROC, the loss of the raw logits (the NLL, also
    under that name beside the ECE of their top softmax probability, calibration.py), worst-class accuracy and each
    group's mean per-class accuracy (None for a group without classes).
    Every per-class mean (bcr, precision, recall, f1) is over the classes with at least one test image: a class
    without any has no recall, and its precision, 0 then, would pull the mean down for a class not tested."""
    logits, num_classes = logits.float(), len(num_per_cls)
    confusion = confusion_matrix(logits.argmax(1), targets, num_classes)
    scores = per_class_scores(confusion)
    present = confusion.sum(1) > 0
    recall = scores["recall"][present]
    nll = F.cross_entropy(logits, targets).item()
    result = {
        "loss": nll,
        "acc": (confusion.diag().sum() / confusion.sum()).item(),
        "bcr": recall.mean().item(),
        "precision": scores["precision"][present].mean().item(),
        "recall": recall.mean().item(),
        "f1": scores["f1"][present].mean().item(),
        "auroc": auroc(logits.softmax(1), targets),
        "worst_class_acc": recall.min().item(),
        "nll": nll,
        "ece": expected_calibration_error(logits, targets),
    }
    for group, classes in class_groups(num_per_cls).items():
        members = [c for c in classes if present[c]]
        result[f"{group}_acc"] = scores["recall"][members].mean().item() if members else None
    return result


def per_class_report(logits: torch.Tensor, targets: torch.Tensor, num_per_cls: list[int]) -> dict:
    """Per-class precision, recall, f1 and acc (acc = recall of that class), the test images of each class, the class
    groups and the MOST_CONFUSED most frequent mistakes (true, predicted, count); the whole confusion matrix only up
    to FULL_CONFUSION classes."""
    num_classes = len(num_per_cls)
    confusion = confusion_matrix(logits.argmax(1), targets, num_classes)
    scores = {name: values.tolist() for name, values in per_class_scores(confusion).items()}
    mistakes = confusion.clone().fill_diagonal_(0)
    true, predicted = mistakes.nonzero(as_tuple=True)  # at most one per test image: few, whatever the classes
    pairs = sorted(zip(mistakes[true, predicted].tolist(), true.tolist(), predicted.tolist()),
                   key=lambda pair: (-pair[0], pair[1], pair[2]))[:MOST_CONFUSED]
    report = {"num_per_cls": list(num_per_cls), "test_per_cls": confusion.sum(1).tolist(), **scores,
              "acc": scores["recall"], "groups": class_groups(num_per_cls),
              "most_confused": [{"true": t, "predicted": p, "count": n} for n, t, p in pairs]}
    if num_classes <= FULL_CONFUSION:
        report["confusion_matrix"] = confusion.tolist()
    return report


def percent(fraction: float) -> str:
    """A score as the prints and docs give it: `0.4321` -> `43.21 %` (the results files keep fractions of 1)."""
    return f"{100 * fraction:.2f} %"
