"""Cross-entropy and Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BalancedSoftmax(nn.Module):
    """Cross-entropy on logits shifted by the log of the training class prior."""

    def __init__(self, num_per_cls: Sequence[int] | Mapping[int, int] | torch.Tensor, reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(num_per_cls, Mapping):
            num_per_cls = [num_per_cls[c] for c in sorted(num_per_cls)]
        counts = torch.as_tensor(num_per_cls, dtype=torch.float32).flatten()
        if counts.numel() == 0 or bool((counts <= 0).any()):
            raise ValueError(f"BalancedSoftmax needs a positive image count for every class, got {counts.tolist()}")
        self.reduction = reduction
        self.register_buffer("log_prior", torch.log(counts / counts.sum()))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The shift is what makes a softmax trained on long-tailed data estimate the balanced posterior;
        # at test time the raw logits are used, so the prior never enters prediction.
        return F.cross_entropy(logits.float() + self.log_prior.float(), target, reduction=self.reduction)


LOSSES = {
    "CrossEntropyLoss": lambda num_per_cls: nn.CrossEntropyLoss(),
    "BalancedSoftmax": lambda num_per_cls: BalancedSoftmax(num_per_cls),
}


def build_loss(name: str, num_per_cls: Sequence[int]) -> nn.Module:
    """The loss called `name`; `num_per_cls` are the training images per class."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name](num_per_cls)
