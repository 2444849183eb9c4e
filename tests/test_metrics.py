"""metrics: confusion matrix, per-class scores, AUROC, class groups and summarize, on hand-built cases."""
from __future__ import annotations

import math

import pytest
import torch

from datasets.long_tail import long_tail_counts
from metrics import auroc, class_groups, confusion_matrix, per_class_report, per_class_scores, summarize

# 3 classes, 8 test images. Confusion (rows true, columns predicted):
#   class 0: [4, 0, 0]   recall 1
#   class 1: [1, 1, 0]   recall 1/2
#   class 2: [0, 1, 1]   recall 1/2
# column sums 5, 2, 1 -> precision 4/5, 1/2, 1
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
PREDS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
CONFUSION = [[4, 0, 0], [1, 1, 0], [0, 1, 1]]
PRECISION = [4 / 5, 1 / 2, 1.0]
RECALL = [1.0, 1 / 2, 1 / 2]
F1 = [2 * p * r / (p + r) for p, r in zip(PRECISION, RECALL)]  # 8/9, 1/2, 2/3


def _logits(preds: torch.Tensor, num_classes: int, margin: float = 5.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(preds, num_classes).float() * margin


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(torch.tensor([1]), torch.tensor([0]), 2).tolist() == [[0, 1], [0, 0]]
    assert confusion_matrix(PREDS, TARGETS, 3).tolist() == CONFUSION


def test_confusion_matrix_keeps_unseen_classes():
    confusion = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 4)
    assert confusion.shape == (4, 4)
    assert confusion.sum().item() == 2 and confusion[0, 0] == 1 and confusion[1, 0] == 1


def test_per_class_scores():
    scores = per_class_scores(torch.tensor(CONFUSION))
    assert scores["precision"].tolist() == pytest.approx(PRECISION)
    assert scores["recall"].tolist() == pytest.approx(RECALL)
    assert scores["f1"].tolist() == pytest.approx(F1)


def test_per_class_scores_of_a_never_predicted_class_are_zero_not_nan():
    scores = per_class_scores(torch.tensor([[2, 0], [1, 0]]))
    assert scores["precision"].tolist() == pytest.approx([2 / 3, 0.0])
    assert scores["recall"].tolist() == pytest.approx([1.0, 0.0])
    assert scores["f1"].tolist() == pytest.approx([0.8, 0.0])


def test_summarize_hand_built_case():
    logits = _logits(PREDS, 3)
    result = summarize(logits, TARGETS, [500, 50, 5])
    assert result["acc"] == pytest.approx(6 / 8)
    assert result["bcr"] == pytest.approx((1 + 0.5 + 0.5) / 3)  # mean per-class recall, not acc
    assert result["recall"] == pytest.approx(result["bcr"])
    assert result["precision"] == pytest.approx(sum(PRECISION) / 3)
    assert result["f1"] == pytest.approx((8 / 9 + 1 / 2 + 2 / 3) / 3)
    assert result["worst_class_acc"] == pytest.approx(0.5)
    # loss of the raw logits: 6 right with margin 5 against two zeros, 2 wrong
    z = math.log(math.exp(5) + 2)
    assert result["loss"] == pytest.approx((6 * (z - 5) + 2 * z) / 8, rel=1e-5)
    # groups by training count: 500 many, 50 medium, 5 few; thirds of 3 classes: one each
    assert result["many_acc"] == pytest.approx(1.0)
    assert result["medium_acc"] == pytest.approx(0.5)
    assert result["few_acc"] == pytest.approx(0.5)
    assert result["head_acc"] == pytest.approx(1.0)
    assert result["mid_acc"] == pytest.approx(0.5)
    assert result["tail_acc"] == pytest.approx(0.5)


def test_bcr_differs_from_acc_on_an_imbalanced_test_set():
    # 9 images of class 0 all right, 1 of class 1 wrong: acc 0.9, bcr 0.5
    targets = torch.tensor([0] * 9 + [1])
    result = summarize(_logits(torch.zeros(10, dtype=torch.long), 2), targets, [10, 10])
    assert result["acc"] == pytest.approx(0.9)
    assert result["bcr"] == pytest.approx(0.5)
    assert result["worst_class_acc"] == pytest.approx(0.0)


def test_empty_group_is_none_not_zero():
    # every class has > 100 training images: no medium or few classes
    result = summarize(_logits(PREDS, 3), TARGETS, [5000, 400, 300])
    assert result["medium_acc"] is None and result["few_acc"] is None
    assert result["many_acc"] == pytest.approx(result["bcr"])
    # the thirds always have classes
    for group in ("head", "mid", "tail"):
        assert result[f"{group}_acc"] is not None


def test_a_class_without_test_images_is_left_out_of_the_means():
    # class 2 has no test image: bcr averages classes 0 and 1 only, and its empty group is None
    targets = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 0, 1, 0])
    result = summarize(_logits(preds, 3), targets, [500, 50, 5])
    assert result["bcr"] == pytest.approx((1 + 0.5) / 2)
    assert result["worst_class_acc"] == pytest.approx(0.5)
    assert result["few_acc"] is None



def test_macro_precision_recall_and_f1_average_the_same_classes():
    # class 2 has no test image and is never predicted: its precision, recall and f1 are all 0 by convention,
    # so each macro mean must leave it out alike, or precision alone would be pulled down
    targets = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 0, 1, 0])
    result = summarize(_logits(preds, 3), targets, [500, 50, 5])
    precision, recall = [2 / 3, 1.0], [1.0, 0.5]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert result["precision"] == pytest.approx(sum(precision) / 2)
    assert result["recall"] == pytest.approx(sum(recall) / 2)
    assert result["f1"] == pytest.approx(sum(f1) / 2)

def test_many_medium_few_thresholds():
    groups = class_groups([101, 100, 20, 19, 500, 1])
    assert groups["many"] == [0, 4]  # > 100
    assert groups["medium"] == [1, 2]  # 20..100 inclusive
    assert groups["few"] == [3, 5]  # < 20


def test_head_mid_tail_thirds_by_count_largest_first():
    # sorted by count: 2 (500), 4 (200), 1 (50), 3 (20), 0 (5), 5 (1)
    groups = class_groups([5, 50, 500, 20, 200, 1])
    assert groups["head"] == [2, 4] and groups["mid"] == [1, 3] and groups["tail"] == [0, 5]


def test_thirds_of_ten_classes_cover_every_class_once():
    groups = class_groups(long_tail_counts(5000, 10, "exp", 100))
    assert groups["head"] == [0, 1, 2] and groups["mid"] == [3, 4, 5] and groups["tail"] == [6, 7, 8, 9]


def test_thirds_break_ties_by_class_index():
    groups = class_groups([7, 7, 7, 7, 7, 7])
    assert groups["head"] == [0, 1] and groups["mid"] == [2, 3] and groups["tail"] == [4, 5]


# many/medium/few: > 100 / 20-100 / < 20 training images (Liu et al. 2019, OLTR), counted by hand on the exp profile
# int(n_max * IF ** (-i / (C - 1))) of Cao et al. 2019 (LDAM-DRW) that datasets/long_tail.py draws
@pytest.mark.parametrize("n_max,num_classes,factor,many,medium,few", [
    (5000, 10, 10, 10, 0, 0), (5000, 10, 50, 9, 1, 0), (5000, 10, 100, 8, 2, 0), (5000, 10, 200, 7, 3, 0),
    (500, 100, 10, 69, 31, 0), (500, 100, 50, 41, 41, 18), (500, 100, 100, 35, 35, 30), (500, 100, 200, 30, 31, 39),
])
def test_group_sizes_on_the_cifar_lt_profiles(n_max, num_classes, factor, many, medium, few):
    groups = class_groups(long_tail_counts(n_max, num_classes, "exp", factor))
    assert (len(groups["many"]), len(groups["medium"]), len(groups["few"])) == (many, medium, few)


# ---------------------------------------------------------------- AUROC

def _brute_force_auroc(scores: list[float], positive: list[bool]) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie), over all pairs."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_perfect_separation_is_one():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert auroc(probs, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)


def test_auroc_reversed_is_zero():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert auroc(probs, torch.tensor([1, 1, 0, 0])) == pytest.approx(0.0)


def test_auroc_all_tied_is_one_half():
    probs = torch.full((6, 3), 1 / 3)
    assert auroc(probs, torch.tensor([0, 1, 2, 0, 1, 2])) == pytest.approx(0.5)


def test_auroc_hand_computed_with_a_tie():
    # class 1 scores: positives 0.6, 0.5; negatives 0.5, 0.3 -> pairs: 1, 1, 1/2 (tie), 1 -> 3.5 / 4
    p1 = torch.tensor([0.6, 0.5, 0.5, 0.3])
    probs = torch.stack([1 - p1, p1], 1)
    targets = torch.tensor([1, 1, 0, 0])
    assert auroc(probs, targets) == pytest.approx(3.5 / 4)


def test_auroc_matches_pairwise_definition_with_many_ties():
    g = torch.Generator().manual_seed(0)
    n, c = 60, 4
    probs = (torch.rand(n, c, generator=g) * 5).round() / 5  # few distinct values: many ties
    targets = torch.randint(0, c, (n,), generator=g)
    expected = sum(_brute_force_auroc(probs[:, k].tolist(), (targets == k).tolist()) for k in range(c)) / c
    assert auroc(probs, targets) == pytest.approx(expected, rel=1e-9)


def test_auroc_skips_a_class_without_positives():
    # class 2 never occurs: the macro mean is over classes 0 and 1 (both perfectly separated)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    assert auroc(probs, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)


def test_summarize_auroc_uses_softmax_scores():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert summarize(logits, torch.tensor([0, 0, 1, 1]), [10, 10])["auroc"] == pytest.approx(1.0)
    assert summarize(logits, torch.tensor([1, 1, 0, 0]), [10, 10])["auroc"] == pytest.approx(0.0)


def test_per_class_report():
    report = per_class_report(_logits(PREDS, 3), TARGETS, [500, 50, 5])
    assert report["confusion_matrix"] == CONFUSION
    assert report["acc"] == pytest.approx(RECALL)
    assert report["precision"] == pytest.approx(PRECISION)
    assert report["num_per_cls"] == [500, 50, 5]
    assert report["groups"]["few"] == [2]


def test_per_class_report_keeps_the_test_counts_and_the_most_confused_pairs():
    report = per_class_report(_logits(PREDS, 3), TARGETS, [500, 50, 5])
    assert report["test_per_cls"] == [4, 2, 2]
    # the two mistakes: class 1 taken for 0, class 2 for 1; ties in count go by true class
    assert report["most_confused"] == [{"true": 1, "predicted": 0, "count": 1}, {"true": 2, "predicted": 1, "count": 1}]


def test_per_class_report_leaves_out_a_large_confusion_matrix():
    """At iNat 2018's 8,142 classes the matrix alone is about 0.6 GB of JSON: above FULL_CONFUSION classes the
    report keeps recall, counts and the most confused pairs, and stays small."""
    import json

    from metrics import FULL_CONFUSION, MOST_CONFUSED

    classes = 2_000
    targets = torch.arange(classes).repeat(2)
    preds = torch.where(targets % 7 == 0, (targets + 1) % classes, targets)  # every 7th class taken for the next
    report = per_class_report(_logits(preds, classes), targets, [10] * classes)
    assert classes > FULL_CONFUSION and "confusion_matrix" not in report
    assert len(report["most_confused"]) == MOST_CONFUSED and report["most_confused"][0] == \
        {"true": 0, "predicted": 1, "count": 2}
    assert report["recall"][0] == 0.0 and report["recall"][1] == 1.0 and report["test_per_cls"][0] == 2
    assert len(json.dumps(report, indent=2)) < 1_000_000
