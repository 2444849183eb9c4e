"""The paper's augmentations, batched for the fast loader, and a per-image Cutout for the classic one.

The batched ones take a uint8 N x C x H x W batch on the training device and a torch.Generator on that device.
Each image draws its own sub-policy (AutoAugment) or ops (RandAugment), probabilities and signs, with the
probabilities, magnitudes and signs of torchvision's per-image AutoAugment and RandAugment. The batch is then
sorted by draw, and each distinct op at each magnitude runs once, through torchvision.transforms.v2.functional,
on the slice of images that drew it: a few dozen op calls per batch instead of one per image.

Cutout (DeVries & Taylor 2017, as BALMS uses it): one length x length square of zeros whose centre is a pixel
drawn uniformly over the image, clipped at the borders, so that squares near an edge are smaller.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F
from PIL import Image

from errors import ConfigError

CUTOUT_LENGTH = 16  # side of the Cutout square in pixels, BALMS's (and DeVries & Taylor's) CIFAR setting
AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment reads its magnitudes from 10 bins
NEAREST = T.InterpolationMode.NEAREST  # torchvision's default for both AutoAugment and RandAugment


def _fill(fill: int) -> int | None:
    """torchvision's fill for the grey level `fill` (0-255): None for 0, its default, which zeroes the area moved
    in from outside the image without the blend that any other fill costs."""
    return fill or None


def _affine(images: torch.Tensor, fill: int, translate=(0, 0), shear=(0.0, 0.0), center=None) -> torch.Tensor:
    return F.affine(images, angle=0.0, translate=list(translate), scale=1.0, shear=list(shear),
                    interpolation=NEAREST, fill=_fill(fill), center=center)


# An op takes a uint8 batch, one magnitude (the signed value torchvision's per-image transforms pass on) and the
# grey level (0-255) that the geometric ops bring in from outside the image (DATASET.aug_fill)
OPS: dict[str, Callable[[torch.Tensor, float, int], torch.Tensor]] = {
    "Identity": lambda x, m, fill: x,
    # torchvision shears by atan(m) degrees about the top-left corner, so that the matrix entry is m itself
    "ShearX": lambda x, m, fill: _affine(x, fill, shear=(math.degrees(math.atan(m)), 0.0), center=[0, 0]),
    "ShearY": lambda x, m, fill: _affine(x, fill, shear=(0.0, math.degrees(math.atan(m))), center=[0, 0]),
    "TranslateX": lambda x, m, fill: _affine(x, fill, translate=(int(m), 0)),
    "TranslateY": lambda x, m, fill: _affine(x, fill, translate=(0, int(m))),
    "Rotate": lambda x, m, fill: F.rotate(x, m, interpolation=NEAREST, fill=_fill(fill)),
    "Brightness": lambda x, m, fill: F.adjust_brightness(x, 1.0 + m),
    "Color": lambda x, m, fill: F.adjust_saturation(x, 1.0 + m),
    "Contrast": lambda x, m, fill: F.adjust_contrast(x, 1.0 + m),
    "Sharpness": lambda x, m, fill: F.adjust_sharpness(x, 1.0 + m),
    "Posterize": lambda x, m, fill: F.posterize(x, int(m)),
    "Solarize": lambda x, m, fill: F.solarize(x, m),  # m is a threshold on 0..255, as in torchvision's v1 tables
    "AutoContrast": lambda x, m, fill: F.autocontrast(x),
    "Equalize": lambda x, m, fill: F.equalize(x),
    "Invert": lambda x, m, fill: F.invert(x),
}


class Action(NamedTuple):
    """One op at one signed magnitude: what a group of images that drew the same thing gets."""
    op: str
    magnitude: float


SKIP = Action("Identity", 0.0)  # action 0 of every table: the image is left as it is this round


def _take(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """images[index], as one index_select of whole flattened images: on a CPU about 50 times faster for a uint8
    batch than images[index], which copies it element by element."""
    return images.flatten(1).index_select(0, index).view(len(index), *images.shape[1:])


def apply_grouped(images: torch.Tensor, choice: torch.Tensor, actions: Sequence[Action], fill: int = 0) -> torch.Tensor:
    """`images[i]` after `actions[choice[i]]`, each action run once on all the images that chose it; `fill` is the
    grey level the geometric ops bring in."""
    # note: a CPU-GPU sync point, once per round: the group sizes decide which ops run
    counts = torch.bincount(choice, minlength=len(actions)).tolist()
    order = torch.argsort(choice, stable=True)
    grouped = _take(images, order)  # each group is now a contiguous slice
    start = 0
    for action, count in zip(actions, counts):
        if count and action != SKIP:
            grouped[start:start + count] = OPS[action.op](grouped[start:start + count], action.magnitude, fill)
        start += count
    return _take(grouped, torch.argsort(order))  # back to the loader's order, which the targets follow


class _ActionTable:
    """Distinct actions, numbered from SKIP = 0, each entered once however many draws lead to it."""

    def __init__(self) -> None:
        self.actions: list[Action] = [SKIP]

    def index(self, op: str, magnitude: float) -> int:
        action = Action(op, magnitude)
        if action not in self.actions:
            self.actions.append(action)
        return self.actions.index(action)


def _signed(space: dict, op: str, bin_index: int | None) -> tuple[float, float]:
    """The magnitude torchvision uses for `op` at `bin_index`: (when its sign draw says negative, when positive)."""
    magnitudes, signed = space[op]
    magnitude = float(magnitudes[bin_index]) if bin_index is not None and magnitudes.ndim > 0 else 0.0
    return (-magnitude if signed else magnitude), magnitude


class BatchAutoAugment:
    """torchvision's AutoAugment (CIFAR-10 policy by default) on a batch: each image draws one of the sub-policies
    uniformly, then applies each of its two ops with that op's probability, with a random sign where signed.
    Rotate, shear and translate bring in grey level `fill` (torchvision's `fill`) from outside the image."""

    def __init__(self, size: int, device, policy: T.AutoAugmentPolicy = T.AutoAugmentPolicy.CIFAR10,
                 fill: int = 0) -> None:
        self.fill = fill
        reference = T.AutoAugment(policy)
        # torchvision's own tables (a private method, stable since 0.11), so that the magnitudes cannot drift
        space = reference._augmentation_space(AUTOAUGMENT_BINS, (size, size))
        table = _ActionTable()
        # slot x sub-policy x sign draw (torchvision: sign draw 0 means negative)
        index = [[[table.index(op, m) for m in _signed(space, op, bin_index)] for op, _, bin_index in slot]
                 for slot in zip(*reference.policies)]
        self.actions = table.actions
        self.action_index = torch.tensor(index, device=device)
        self.probability = torch.tensor([[p for _, p, _ in slot] for slot in zip(*reference.policies)], device=device)

    def choices(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per slot, the action index of each of `n` images (SKIP where the op's probability draw failed)."""
        device = self.action_index.device
        policy = torch.randint(self.action_index.shape[1], (n,), device=device, generator=generator)
        draws = torch.rand(2, n, device=device, generator=generator)
        signs = torch.randint(2, (2, n), device=device, generator=generator)
        return [torch.where(draws[s] <= self.probability[s, policy], self.action_index[s, policy, signs[s]], 0)
                for s in range(2)]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for choice in self.choices(len(images), generator):
            images = apply_grouped(images, choice, self.actions, self.fill)
        return images


class BatchRandAugment:
    """torchvision's RandAugment on a batch: each image draws `num_ops` ops uniformly (with replacement), each
    at bin `magnitude` of `num_magnitude_bins`, with a random sign where signed; `fill` as in BatchAutoAugment."""

    def __init__(self, size: int, device, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 fill: int = 0) -> None:
        self.fill = fill
        space = T.RandAugment(num_ops, magnitude, num_magnitude_bins)._augmentation_space(num_magnitude_bins,
                                                                                            (size, size))
        table = _ActionTable()
        # op x sign draw (torchvision: sign draw 1 means negative)
        index = [[table.index(op, m) for m in reversed(_signed(space, op, magnitude))] for op in space]
        self.actions, self.num_ops = table.actions, num_ops
        self.action_index = torch.tensor(index, device=device)

    def choices(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per round, the action index of each of `n` images."""
        device = self.action_index.device
        ops = torch.randint(len(self.action_index), (self.num_ops, n), device=device, generator=generator)
        signs = torch.randint(2, (self.num_ops, n), device=device, generator=generator)
        return list(self.action_index[ops, signs])

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for choice in self.choices(len(images), generator):
            images = apply_grouped(images, choice, self.actions, self.fill)
        return images


def cutout_mask(center_y: torch.Tensor, center_x: torch.Tensor, height: int, width: int,
                length: int = CUTOUT_LENGTH) -> torch.Tensor:
    """B x H x W, True inside each image's square: rows center_y - length/2 to center_y + length/2 (exclusive),
    columns alike; the image's own bounds do the clipping."""
    half = length // 2
    rows = torch.arange(height, device=center_y.device)
    cols = torch.arange(width, device=center_x.device)
    in_rows = (rows >= center_y[:, None] - half) & (rows < center_y[:, None] + half)
    in_cols = (cols >= center_x[:, None] - half) & (cols < center_x[:, None] + half)
    return in_rows[:, :, None] & in_cols[:, None, :]


class BatchCutout:
    """Cutout on a batch: every image gets its own square, centred on a pixel drawn uniformly."""

    def __init__(self, length: int = CUTOUT_LENGTH) -> None:
        self.length = length

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        center_y = torch.randint(height, (n,), device=images.device, generator=generator)
        center_x = torch.randint(width, (n,), device=images.device, generator=generator)
        keep = ~cutout_mask(center_y, center_x, height, width, self.length)[:, None]
        return images * keep  # on a CPU about 10x faster than masked_fill with the same broadcast mask


class Cutout(torch.nn.Module):
    """Cutout on one PIL image, for the classic loader. Zeroing uint8 pixels before ToTensor gives the zeros that
    BALMS writes after ToTensor and before Normalize."""

    def __init__(self, length: int = CUTOUT_LENGTH) -> None:
        super().__init__()
        self.length = length

    def forward(self, image: Image.Image) -> Image.Image:
        pixels = np.array(image)  # a writable copy
        center_y, center_x = (int(torch.randint(side, ())) for side in pixels.shape[:2])
        return Image.fromarray(self.erase(pixels, center_y, center_x))

    def erase(self, pixels: np.ndarray, center_y: int, center_x: int) -> np.ndarray:
        """`pixels` (H x W [x C]) with the square about (center_y, center_x) set to 0, in place."""
        half = self.length // 2
        pixels[max(center_y - half, 0):center_y + half, max(center_x - half, 0):center_x + half] = 0
        return pixels


BatchAugmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# name -> factory(image side, device, fill grey level)
BATCH_AUGMENTATIONS: dict[str, Callable[[int, torch.device, int], BatchAugmentation]] = {
    "AutoAugment": lambda size, device, fill: BatchAutoAugment(size, device, fill=fill),
    "RandAugment": lambda size, device, fill: BatchRandAugment(size, device, fill=fill),
    "Cutout": lambda size, device, fill: BatchCutout(),  # zeros, as BALMS's Cutout writes them
}
GATHERS = ("RandomCrop", "RandomHorizontalFlip")  # the fast loader does these as gathers, before everything else


def batch_augmentations(aug_info: Sequence[str], size: int, device, fill: int = 0) -> list[BatchAugmentation]:
    """The batched augmentations that `aug_info` names, in its order. The fast loader crops and flips first, so a
    crop or flip listed after one of these is refused rather than silently moved."""
    names = list(aug_info)
    batched = [i for i, name in enumerate(names) if name in BATCH_AUGMENTATIONS]
    late = [name for name in names[batched[0]:] if name in GATHERS] if batched else []
    if late:
        raise ConfigError(f"DATASET.aug_info lists {late[0]} after {names[batched[0]]}, but the fast loader crops and "
                          "flips first: list RandomCrop and RandomHorizontalFlip first, or set DATASET.loader classic")
    return [BATCH_AUGMENTATIONS[names[i]](size, device, fill) for i in batched]
