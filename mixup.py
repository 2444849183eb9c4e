"""Input mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) on whole batches on the training
device, after augmentation: each image becomes lam x itself + (1 - lam) x another image of the batch, and the loss
is taken on both labels (losses.LongTailLoss reads MixedTargets), as BagofTricks-LT's input mixup does."""
from __future__ import annotations

from typing import NamedTuple

import torch


class MixedTargets(NamedTuple):
    """The labels of a mixed batch: image i is lam x image i + (1 - lam) x image `perm[i]`, so its labels are `a[i]`
    with weight lam and `b[i]` with weight 1 - lam."""
    a: torch.Tensor
    b: torch.Tensor
    lam: float


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
