"""Classifier heads beside timm's nn.Linear: LDAM-DRW's normalised linear head (MODEL.classifier normed)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Module):
    """Cosine similarities between the L2-normalised features and each class's L2-normalised weight, no bias: the
    head LDAM needs, whose margins and scale assume logits in [-1, 1]. The weight is stored as nn.Linear's
    (classes x features), where LDAM-DRW's NormedLinear stores its transpose; the outputs are the same."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_parameter("bias", None)  # as nn.Linear(bias=False): code that reads a head's bias finds None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LDAM-DRW's init: uniform in [-1, 1], then each class's weight scaled to norm 1."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


CLASSIFIERS = ("linear", "normed")  # MODEL.classifier
