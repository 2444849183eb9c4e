"""Input mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) on whole batches on the training
device, after augmentation: each image becomes lam x itself + (1 - lam) x another image of the batch, and the loss
is taken on both labels (losses.LongTailLoss reads MixedTargets), as BagofTricks-LT's input mixup does. Remix (Chou et
al., "Remix: Rebalanced Mixup", ECCV 2020 workshops) mixes the images alike but gives a mixed image wholly to the
rarer label where the two classes' sizes differ by a factor kappa or more and the rarer image's share exceeds
1 - tau."""
from __future__ import annotations

from typing import NamedTuple

import torch


class MixedTargets(NamedTuple):
    """The labels of a mixed batch: image i is lam x image i + (1 - lam) x image `perm[i]`, so its labels are `a[i]`
    with weight lam and `b[i]` with weight 1 - lam."""
    a: torch.Tensor
    b: torch.Tensor
    lam: float | torch.Tensor  # one weight for the batch (mixup), or one per image (Remix)


class Mixup:
    """Mixes a batch with a permutation of itself, with one lam ~ Beta(alpha, alpha) for the whole batch. The draws
    come from torch's global generators, which every process seeds apart (accelerate's set_seed) and every
    checkpoint saves and restores, so a resumed run mixes as an uninterrupted one would."""

    def __init__(self, alpha: float) -> None:
        if not alpha > 0:
            raise ValueError(f"mixup needs alpha > 0, got {alpha}")
        self.beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, MixedTargets]:
        lam = float(self.beta.sample())  # drawn on the host: no device sync
        perm = torch.randperm(len(images), device=images.device)
        mixed = images.mul(lam).add_(images[perm], alpha=1 - lam)
        return mixed, MixedTargets(targets, targets[perm], lam)


class Remix(Mixup):
    """Mixup's images, with Remix's label weights (the paper's eq. 10): image i, lam x image i + (1 - lam) x image
    j, is labelled a with weight lam, except 0 where n_a / n_b >= kappa and lam < tau (the rarer image b makes up
    more than 1 - tau of it), and 1 where n_a / n_b <= 1 / kappa and 1 - lam < tau; n are the training counts."""

    def __init__(self, alpha: float, num_per_cls, kappa: float = 3.0, tau: float = 0.5) -> None:
        super().__init__(alpha)
        self.counts = torch.as_tensor(list(num_per_cls), dtype=torch.float32)
        self.kappa, self.tau = kappa, tau

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, MixedTargets]:
        mixed, labels = super().__call__(images, targets)
        counts = self.counts.to(targets.device)
        ratio = counts[labels.a] / counts[labels.b]
        lam = torch.full(targets.shape, labels.lam, device=targets.device)
        if labels.lam < self.tau:
            lam[ratio >= self.kappa] = 0.0
        if 1 - labels.lam < self.tau:
            lam[ratio <= 1 / self.kappa] = 1.0
        return mixed, MixedTargets(labels.a, labels.b, lam)


def build_mixup(train, num_per_cls) -> Mixup | None:
    """The TRAIN section's mixing: None, Mixup, or Remix with the training class counts."""
    if not train.mixup:
        return None
    if train.remix:
        return Remix(train.mixup_alpha, num_per_cls, train.remix_kappa, train.remix_tau)
    return Mixup(train.mixup_alpha)
