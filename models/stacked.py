"""K CIFAR ResNets trained as one module, so that the K models share every kernel launch.

On a GPU an eager ResNet-32 step is paced by kernel launches, not arithmetic (docs/performance.md): 16 ms at batch
32, 128 and 512 alike. A sweep trains many such models (seeds, losses) on the same kind of data; stacked, K of them
cost the launches of one. Every convolution becomes one grouped convolution (groups=K) over the K models' channels
laid side by side, every BatchNorm one BatchNorm over K x C channels (its statistics are per channel, so per model),
the option-A shortcut pads each model's block of channels, and the K linear heads are one batched matmul.

Layout: the input is the K models' batches one after the other along the batch dimension, (K*B) x C x H x W, model
k's batch at rows k*B to (k+1)*B; the output is (K*B) x num_classes in the same order. A loader of K*B images thus
feeds it as it is, and `train.train_step` runs it unchanged with `StackedLoss`.

A candidate measured on a GPU (`bench.py --stack`), not wired into main.py: tests/test_stacked.py checks that it
trains exactly as K separate models do, `stack` and `unstack` convert to and from K CifarResNet state dicts. A fresh
stack draws each model's weights and head bias as CifarResNet does. It refuses fp16 (see FP16_REFUSED): bf16 and
fp32 only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnet_cifar import CifarResNet

HEAD = "fc."  # the head's parameters are stacked along a new first dimension; every other tensor is concatenated
# fp16 trains with a loss scaler, which skips the optimizer step that any gradient overflows: stacked, K models share
# one step, so one model's overflow would skip all K models' steps (and halve the scale of all), where K separate runs
# would skip one. No stacked loss scaling matches that, so the stack is kept out of fp16.
FP16_REFUSED = ("StackedResNet does not run under fp16: one model's overflow would skip all K models' optimizer "
                "steps, unlike K separate runs; use bf16 or fp32 (--precision bf16)")


class StackedBlock(nn.Module):
    """K BasicBlocks side by side."""

    def __init__(self, k: int, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(k * in_planes, k * planes, 3, stride, 1, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * planes)
        self.conv2 = nn.Conv2d(k * planes, k * planes, 3, 1, 1, bias=False, groups=k)
        self.bn2 = nn.BatchNorm2d(k * planes)
        self.k, self.extra_channels, self.stride = k, planes - in_planes, stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and not self.extra_channels:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        b, _, h, w = x.shape
        half = self.extra_channels // 2
        # The zeros go around each model's own channels, not at the two ends of all K models' channels
        padded = F.pad(x.reshape(b, self.k, -1, h, w), (0, 0, 0, 0, half, self.extra_channels - half))
        return padded.reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class StackedLinear(nn.Module):
    """K linear heads as one batched matmul: K x B x in_features to K x B x out_features."""

    def __init__(self, k: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))
        for head in self.weight:  # one at a time: kaiming_normal_ would count K x in_features as the fan-in
            nn.init.kaiming_normal_(head)
        bound = 1 / math.sqrt(in_features)  # each model's nn.Linear draws its bias so, and CifarResNet keeps it
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedResNet(nn.Module):
    """K CifarResNets in one module; its state dict has CifarResNet's keys (see `stack` and `unstack`)."""

    def __init__(self, k: int, depth: int = 5, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.k, self.num_classes = k, num_classes
        self.stem = nn.Sequential(nn.Conv2d(k * in_chans, k * 16, 3, 1, 1, bias=False, groups=k),
                                  nn.BatchNorm2d(k * 16), nn.ReLU())
        blocks, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(depth):
                blocks.append(StackedBlock(k, in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = StackedLinear(k, 64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # per model as CifarResNet's: a grouped weight's fan-in is one model's
                nn.init.kaiming_normal_(module.weight)

    @classmethod
    def from_models(cls, models: Sequence[CifarResNet]) -> StackedResNet:
        """The K models' weights and BatchNorm statistics, copied into one stacked module."""
        first = models[0]
        stacked = cls(len(models), len(first.blocks) // 3, first.num_classes, first.stem[0].in_channels)
        stacked.load_state_dict(stack([model.state_dict() for model in models]))
        return stacked.to(first.fc.weight.device)

    def unstack(self) -> list[dict[str, torch.Tensor]]:
        """K CifarResNet state dicts (copies), e.g. one checkpoint per seed."""
        return [{key: value.clone() for key, value in state.items()} for state in unstack(self.state_dict(), self.k)]

    def get_classifier(self) -> nn.Module:
        """The K heads, as timm's models name a classifier (OPTIMIZER.classifier_lr finds it so)."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type) == torch.float16:
            raise RuntimeError(FP16_REFUSED)
        kb, c, h, w = x.shape
        b = kb // self.k
        # Sample i of model k becomes channels k*c to (k+1)*c of row i: the grouped convolutions keep models apart
        x = x.reshape(self.k, b, c, h, w).transpose(0, 1).reshape(b, self.k * c, h, w)
        features = self.blocks(self.stem(x)).mean((2, 3)).reshape(b, self.k, -1).transpose(0, 1)
        return self.fc(features).reshape(kb, -1)


class StackedLoss(nn.Module):
    """The sum of each model's own loss (e.g. CE for some, Balanced Softmax for others) on its own batch: its
    gradient is, for every model, that model's own loss's gradient. `train.train_step` then reports K times a
    model's mean loss and counts correct predictions over all K*B images."""

    def __init__(self, criteria: Sequence[nn.Module]) -> None:
        super().__init__()
        self.criteria = nn.ModuleList(criteria)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = len(self.criteria)
        return sum(criterion(out, target) for criterion, out, target in
                   zip(self.criteria, logits.chunk(k), targets.chunk(k)))


def stack(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """K CifarResNet state dicts as one StackedResNet state dict. Their BatchNorms must have counted the same
    number of batches (models trained side by side do)."""
    stacked = {}
    for key, first in states[0].items():
        values = [state[key] for state in states]
        if key.endswith("num_batches_tracked"):
            if any(not torch.equal(value, first) for value in values):
                raise ValueError(f"{key} differs between the models: only models at the same step stack")
            stacked[key] = first.clone()
        else:
            stacked[key] = (torch.stack if key.startswith(HEAD) else torch.cat)(values)
    return stacked


def unstack(state: Mapping[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    """A StackedResNet state dict (or any mapping with its keys, such as its parameters' gradients) as K
    CifarResNet state dicts of views into it."""
    def part(key: str, value: torch.Tensor, i: int) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return value
        return value[i] if key.startswith(HEAD) else value.chunk(k)[i]
    return [{key: part(key, value, i) for key, value in state.items()} for i in range(k)]
