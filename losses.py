"""The losses of long-tailed recognition, each a LOSS.name: cross-entropy, Balanced Softmax (Ren et al., "Balanced
Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020), the logit-adjusted loss (Menon et al., ICLR 2021),
focal (Lin et al. 2017) and LDAM (Cao et al., NeurIPS 2019); CE, focal and LDAM may weigh classes by their effective
number (Cui et al., CVPR 2019), from the first epoch (class-balanced) or from a later one (DRW, Cao et al.).

Every loss takes hard labels, or the two labels of a mixed batch (mixup.MixedTargets), on which it is the
lam-weighted sum of its values on each (with Remix's weight per image, the mean of each image's weighted sum)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixup import MixedTargets

Counts = Sequence[int] | Mapping[int, int] | torch.Tensor
REWEIGHTS = ("none", "class_balanced", "drw")  # LOSS.reweight


def class_counts(num_per_cls: Counts) -> torch.Tensor:
    """The image count of each class as float32, in class order; a {class: count} dict is read by class."""
    if isinstance(num_per_cls, Mapping):
        num_per_cls = [num_per_cls[c] for c in sorted(num_per_cls)]
    counts = torch.as_tensor(num_per_cls, dtype=torch.float32).flatten()
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError(f"the loss needs a positive image count for every class, got {counts.tolist()}")
    return counts


def effective_number_weights(num_per_cls: Counts, beta: float) -> torch.Tensor:
    """Cui et al.'s class weights, (1 - beta) / (1 - beta^n), scaled to sum to the number of classes, as LDAM-DRW's
    cifar_train.py computes them (in float64, then float32)."""
    counts = class_counts(num_per_cls).double()
    weights = (1 - beta) / (1 - beta ** counts)
    return (weights / weights.sum() * len(counts)).float()


# LongTailLoss.reduction: how `loss` reduces each image's loss where no class weights apply
REDUCTIONS = {"mean": torch.mean, "sum": torch.sum, "none": lambda losses: losses}


class LongTailLoss(nn.Module):
    """A loss on hard labels (`loss`), also on both labels of a mixed batch, and class weights that apply from
    epoch `weights_from` on (`set_epoch`, called before every epoch); before it, or without weights, none. Each
    loss writes its per-image form (`per_image`) alone; `loss` reduces it."""

    # Under class weights `loss` is the weighted mean of the images' losses (torch's weighted cross-entropy, and
    # LDAM-DRW's), or where this is False their plain mean (LDAM-DRW's focal loss, whose weight is in each image's)
    weighted_mean = True

    def __init__(self, class_weights: torch.Tensor | None = None, weights_from: int = 0,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights)
        self.weights_from, self.epoch, self.reduction = weights_from, 0, reduction

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def weight(self) -> torch.Tensor | None:
        """The class weights in force this epoch, or None."""
        return self.class_weights if self.epoch >= self.weights_from else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor | MixedTargets) -> torch.Tensor:
        # float32 whatever the autocast: the losses exponentiate the logits
        logits = logits.float()
        if isinstance(target, MixedTargets):
            if isinstance(target.lam, torch.Tensor):  # Remix: each image's own weights, on its own losses
                lam = target.lam.float()
                return (lam * self.per_image(logits, target.a) + (1 - lam) * self.per_image(logits, target.b)).mean()
            return target.lam * self.loss(logits, target.a) + (1 - target.lam) * self.loss(logits, target.b)
        return self.loss(logits, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's loss: `per_image` reduced by `reduction`, or under class weights their weighted mean (see
        `weighted_mean`)."""
        losses = self.per_image(logits, target)
        if self.weight is not None and self.weighted_mean:
            return losses.sum() / self.weight[target].sum()
        return REDUCTIONS[self.reduction](losses)

    def per_image(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each image's loss, scaled by its class's weight where class weights apply (Remix reads it; with class
        weights config.py refuses Remix, as a weighted mean does not split over images)."""
        raise NotImplementedError


class CrossEntropy(LongTailLoss):
    """Cross-entropy; with class weights, their weighted mean over the batch (torch's, and LDAM-DRW's)."""

    def per_image(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight, reduction="none")


class LogitAdjusted(LongTailLoss):
    """Cross-entropy on logits shifted by `tau` x the log of the training class prior (Menon et al.)."""

    def __init__(self, num_per_cls: Counts, tau: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        counts = class_counts(num_per_cls)
        self.tau = tau
        self.register_buffer("log_prior", torch.log(counts / counts.sum()))

    def per_image(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.adjusted(logits), target, reduction="none")

    def adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits plus tau x the log training prior. The shift is what makes a softmax trained on long-tailed data
        estimate the balanced posterior; at test time the raw logits are used, so the prior never enters
        prediction."""
        return logits + self.tau * self.log_prior.float()


class BalancedSoftmax(LogitAdjusted):
    """Cross-entropy on logits shifted by the log of the training class prior: the logit-adjusted loss at tau 1."""

    def __init__(self, num_per_cls: Counts, reduction: str = "mean") -> None:
        super().__init__(num_per_cls, 1.0, reduction)


class Focal(LongTailLoss):
    """Focal loss, (1 - p)^gamma x CE, averaged over the batch. With class weights it is LDAM-DRW's: p is taken as
    exp(-w_y x CE), so the weight enters the focusing term too, and the mean is a plain one."""

    weighted_mean = False

    def __init__(self, gamma: float = 1.0, class_weights: torch.Tensor | None = None, weights_from: int = 0) -> None:
        super().__init__(class_weights, weights_from)
        self.gamma = gamma

    def per_image(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=self.weight, reduction="none")
        return (1 - torch.exp(-ce)) ** self.gamma * ce


class LDAM(LongTailLoss):
    """Label-distribution-aware margin loss: the target's logit lowered by a margin proportional to n^(-1/4), the
    rarest class's `max_m`, then cross-entropy of the logits times `s`. Its logits are cosines: it goes with a
    normalised head (MODEL.classifier normed)."""

    def __init__(self, num_per_cls: Counts, max_m: float = 0.5, s: float = 30.0,
                 class_weights: torch.Tensor | None = None, weights_from: int = 0) -> None:
        super().__init__(class_weights, weights_from)
        margins = class_counts(num_per_cls).double() ** -0.25
        self.register_buffer("margins", (margins * (max_m / margins.max())).float())
        self.s = s

    def per_image(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.s * self.shifted(logits, target), target, weight=self.weight, reduction="none")

    def shifted(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The logits with each image's target logit lowered by its class's margin."""
        return logits - F.one_hot(target, logits.shape[1]) * self.margins[target, None]


def _weights(num_per_cls: Counts, settings: dict) -> dict:
    """The class weights and the epoch they start from, per LOSS.reweight."""
    if settings["reweight"] == "none":
        return {}
    return {"class_weights": effective_number_weights(num_per_cls, settings["beta"]),
            "weights_from": settings["drw_epoch"] if settings["reweight"] == "drw" else 0}


# name -> factory(class counts, settings)
LOSSES = {
    "CrossEntropyLoss": lambda counts, s: CrossEntropy(**_weights(counts, s)),
    "BalancedSoftmax": lambda counts, s: BalancedSoftmax(counts),
    "LogitAdjusted": lambda counts, s: LogitAdjusted(counts, s["tau"]),
    "Focal": lambda counts, s: Focal(s["gamma"], **_weights(counts, s)),
    "LDAM": lambda counts, s: LDAM(counts, s["max_m"], s["s"], **_weights(counts, s)),
}
# The published defaults, as configs.yaml has them, for callers without a config
DEFAULTS = {"reweight": "none", "beta": 0.9999, "drw_epoch": 160, "gamma": 1.0, "max_m": 0.5, "s": 30.0, "tau": 1.0}


def build_loss(name: str, num_per_cls: Counts, settings: Mapping | None = None) -> LongTailLoss:
    """The loss called `name`, with `settings` (the LOSS section, or some of its keys; the others at DEFAULTS);
    `num_per_cls` are the training images per class."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    settings = settings or {}
    return LOSSES[name](num_per_cls, {key: settings.get(key, value) for key, value in DEFAULTS.items()})
