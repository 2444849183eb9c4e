"""The paper's augmentations, batched for the fast loader, and a per-image Cutout for the classic one.

The batched ones take a uint8 N x 3 x H x W batch on the training device and a torch.Generator on that device.
Each image draws its own sub-policy (AutoAugment) or ops (RandAugment), probabilities and signs, with the
probabilities, magnitudes and signs of torchvision's per-image AutoAugment and RandAugment. Each round (one op per
image) then runs the same fixed sequence of kernels whatever the images drew, with no host sync (as capturing the
step in a CUDA graph needs): every action is a row of parameters that is the identity for the stages it is not
(PerImageActions), and each image reads its own row. The stages are torchvision's tensor kernels with a parameter
per image: one grid_sample for rotate, shear and translate; one blend for brightness, colour, contrast and
sharpness; one per-channel lookup table for posterize, solarize, invert, autocontrast and equalize.

Cutout (DeVries & Taylor 2017, as BALMS uses it): one length x length square of zeros whose centre is a pixel
drawn uniformly over the image, clipped at the borders, so that squares near an edge are smaller.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms as T
from PIL import Image
# torchvision's own matrix math (stable since 0.8), so that the geometric ops sample the pixels its per-image ones do
from torchvision.transforms.functional import _get_inverse_affine_matrix

from errors import ConfigError

CUTOUT_LENGTH = 16  # side of the Cutout square in pixels, BALMS's (and DeVries & Taylor's) CIFAR setting
AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment reads its magnitudes from 10 bins

# The ops each stage of PerImageActions does (Identity passes all three unchanged)
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
# blend op -> the image it mixes in (torchvision's degenerate): black, the grey image, its mean, the 3x3 blur
BLENDS = {"Brightness": 0, "Color": 1, "Contrast": 2, "Sharpness": 3}
LOOKUPS = ("Posterize", "Solarize", "Invert", "AutoContrast", "Equalize")
OPS = ("Identity", *GEOMETRIC, *BLENDS, *LOOKUPS)
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class Action(NamedTuple):
    """One op at one signed magnitude (the value torchvision's per-image transforms pass on)."""
    op: str
    magnitude: float


SKIP = Action("Identity", 0.0)  # action 0 of every table: the image is left as it is this round


def _inverse_affine(action: Action, size: int) -> list[float]:
    """The inverse affine matrix torchvision's tensor F.affine / F.rotate build for `action` on a size x size
    image, as torchvision.transforms.autoaugment._apply_op calls them; the identity for the other ops."""
    op, m = action
    corner = [-size * 0.5, -size * 0.5]  # center=[0, 0], in torchvision's coordinates about the image centre
    args = {  # (center, angle, translate, shear)
        # torchvision shears by atan(m) degrees about the top-left corner, so that the matrix entry is m itself
        "ShearX": (corner, 0.0, [0.0, 0.0], [math.degrees(math.atan(m)), 0.0]),
        "ShearY": (corner, 0.0, [0.0, 0.0], [0.0, math.degrees(math.atan(m))]),
        "TranslateX": ([0.0, 0.0], 0.0, [float(int(m)), 0.0], [0.0, 0.0]),
        "TranslateY": ([0.0, 0.0], 0.0, [0.0, float(int(m))], [0.0, 0.0]),
        "Rotate": ([0.0, 0.0], -m, [0.0, 0.0], [0.0, 0.0]),  # F.rotate turns by -angle in F.affine's convention
    }
    if op not in args:
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    center, angle, translate, shear = args[op]
    return _get_inverse_affine_matrix(center, angle, translate, 1.0, shear)


class PerImageActions:
    """Applies to each image of a batch its own action out of `actions`, in a fixed sequence of kernels: each action
    is a row of parameters for three stages (geometric, blend, lookup), each stage the identity for an action that
    is not its own. `fill` is the grey level (0-255) that the geometric ops bring in from outside the image
    (torchvision's `fill`). The arithmetic is that of torchvision's tensor kernels (transforms.functional), which
    its per-image AutoAugment and RandAugment run on tensors, so that each image comes out as they would give it."""

    # the columns of a row: torchvision's inverse affine matrix, transposed and scaled to grid_sample's -1..1 (6);
    # the blend's ratio, and 1 - ratio in the column of its degenerate (grey image, mean grey, blur; none for black);
    # whether the image reads autocontrast's or equalize's table
    THETA, RATIO, GREY, MEAN, BLUR, STRETCH, EQUALIZE = 0, 6, 7, 8, 9, 10, 11

    def __init__(self, actions: Sequence[Action], size: int, device, fill: int = 0) -> None:
        unknown = sorted({a.op for a in actions} - set(OPS))
        if unknown:
            raise ValueError(f"no batched op for {unknown}; the ops are {list(OPS)}")
        self.actions = list(actions)
        theta = torch.tensor([_inverse_affine(a, size) for a in actions], dtype=torch.float32).view(-1, 2, 3)
        theta = (theta.transpose(1, 2) / torch.tensor([0.5 * size, 0.5 * size])).reshape(-1, 6)  # as torchvision
        rows = []
        for op, m in actions:
            ratio = 1.0 + m if op in BLENDS else 1.0
            degenerate = [1.0 - ratio if BLENDS.get(op) == kind else 0.0 for kind in (1, 2, 3)]
            rows.append([ratio, *degenerate, float(op == "AutoContrast"), float(op == "Equalize")])
        # each value rounded once from the double to float32, as torchvision's Python scalars are
        self.params = torch.cat([theta, torch.tensor(rows, dtype=torch.float32)], dim=1).to(device)
        # posterize, solarize and invert map each level alike in every image: their tables are torchvision's own
        levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256)
        self.tables = torch.cat([_pointwise(a, levels) for a in actions]).view(len(actions), 1, 256).to(device)
        side = torch.linspace(-size * 0.5 + 0.5, size * 0.5 - 0.5, steps=size)  # pixel centres about the centre
        self.base_grid = torch.stack([side.expand(size, size), side[:, None].expand(size, size),
                                      torch.ones(size, size)], dim=-1).view(1, size * size, 3).to(device)
        border = torch.ones(size, size, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        self.border = border.to(device)
        # tensors rather than Python numbers where an op would convert the number first: fewer ops a batch
        self.fill, self.max_level, self.pixel_count = torch.tensor([float(fill), 255.0, size * size],
                                                                   device=device).unbind()
        self.grey = torch.tensor(GREY, device=device).unbind()
        self.levels = levels.float().to(device)

    def __call__(self, images: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """`images[i]` after `actions[choice[i]]`, for a uint8 N x 3 x H x W batch."""
        n = len(images)
        params = self.params.index_select(0, choice).view(n, -1, 1, 1)
        x = self.geometric(images, params[:, self.THETA:self.THETA + 6])
        levels = self.blend(x, params)
        pixels = levels.long()
        table = self.lookup_table(levels, pixels, params.view(n, -1, 1), self.tables.index_select(0, choice))
        return table.gather(2, pixels).view(images.shape)

    def geometric(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Rotate, shear and translate, to float pixels: torchvision's affine grid and nearest grid_sample, with a
        matrix per image. Sampling the image less `fill` with zero padding, then adding `fill` back, gives what
        torchvision's mask channel gives: `fill` where the pixel came from outside, the pixel where not."""
        n, _, h, w = images.shape
        grid = self.base_grid.expand(n, -1, -1).bmm(theta.view(n, 3, 2)).view(n, h, w, 2)
        x = images.float().sub_(self.fill)
        return nnf.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False).add_(self.fill)

    def blend(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Brightness, colour, contrast and sharpness of float pixels x: torchvision's _blend of the image with its
        degenerate, ratio * x + (1 - ratio) * degenerate, clamped and truncated to whole levels; an action that is
        not a blend has ratio 1 and no degenerate. Gives the N x C x H*W levels, whole numbers as floats."""
        # rgb_to_grayscale, truncated to uint8 as torchvision's is
        red, green, blue = self.grey
        grey = (red * x[:, 0:1] + green * x[:, 1:2] + blue * x[:, 2:3]).floor_()
        mean = grey.sum(dim=(2, 3), keepdim=True).div_(self.pixel_count)  # as torch.mean computes it
        # sharpness's degenerate: inside, the rounded 3x3 blur with weights 1 and 5 at the centre, over 13; on the
        # one-pixel border, the image. A blur of whole numbers is some S / 13, never within 1/26 of a half, so
        # rounding it computed in any order gives torchvision's
        box = nnf.avg_pool2d(x, 3, stride=1, padding=1, divisor_override=13)
        blurred = torch.where(self.border, x, box.add_(x, alpha=4 / 13).round_())
        # one of the degenerate terms is torchvision's (1 - ratio) * degenerate, the others exactly 0
        flat = params[:, self.GREY:self.GREY + 1] * grey + params[:, self.MEAN:self.MEAN + 1] * mean
        out = (params[:, self.RATIO:self.RATIO + 1] * x).add_(params[:, self.BLUR:self.BLUR + 1] * blurred).add_(flat)
        return out.clamp_(0, 255).trunc_().flatten(2)  # the truncation of torchvision's cast to uint8

    def lookup_table(self, levels: torch.Tensor, pixels: torch.Tensor, params: torch.Tensor,
                     table: torch.Tensor) -> torch.Tensor:
        """The N x C x 256 uint8 table that maps each channel's levels (N x C x H*W, as floats and as int64
        pixels): `table` (the action's posterize, solarize or invert, else the identity) unless the image drew
        autocontrast or equalize, which read the levels."""
        # autocontrast, as torchvision's: each channel's range stretched to 0..255 (255 * 1 / range, two
        # roundings, as its bound / range computes); a flat channel keeps the identity
        low, high = torch.aminmax(levels, dim=2, keepdim=True)
        spread = high - low
        scale = spread.clamp(min=1).reciprocal_().mul_(self.max_level)
        stretched = self.levels.sub(low).mul_(scale).clamp_(0, 255).to(torch.uint8)
        # equalize, in torchvision's (and PIL's) integer arithmetic: a step from all the pixels but those at the
        # brightest level, each level mapped to its count of darker pixels over the step; a step of 0 keeps the
        # identity
        histogram = torch.zeros(*pixels.shape[:2], 256, dtype=torch.long, device=pixels.device)
        histogram.scatter_add_(2, pixels, torch.ones_like(pixels))
        step = (pixels.shape[2] - histogram.gather(2, high.long())).div_(255, rounding_mode="floor")
        darker = histogram.cumsum(2).sub_(histogram)
        equalized = darker.add_(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
        stretch = torch.logical_and(params[:, self.STRETCH:self.STRETCH + 1], spread)
        equalize = torch.logical_and(params[:, self.EQUALIZE:self.EQUALIZE + 1], step)
        return torch.where(stretch, stretched, torch.where(equalize, equalized.to(torch.uint8), table))


def _pointwise(action: Action, levels: torch.Tensor) -> torch.Tensor:
    """What torchvision's per-image posterize, solarize or invert makes of the uint8 `levels` (else them as they
    are)."""
    op, m = action
    ops = {"Posterize": lambda: T.functional.posterize(levels, int(m)),
           "Solarize": lambda: T.functional.solarize(levels, m), "Invert": lambda: T.functional.invert(levels)}
    return ops[op]() if op in ops else levels


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
        reference = T.AutoAugment(policy)
        # torchvision's own tables (a private method, stable since 0.11), so that the magnitudes cannot drift
        space = reference._augmentation_space(AUTOAUGMENT_BINS, (size, size))
        table = _ActionTable()
        # slot x sub-policy x sign draw (torchvision: sign draw 0 means negative)
        index = [[[table.index(op, m) for m in _signed(space, op, bin_index)] for op, _, bin_index in slot]
                 for slot in zip(*reference.policies)]
        self.actions = table.actions
        self.apply = PerImageActions(self.actions, size, device, fill)
        self.action_index = torch.tensor(index, device=device)
        self.probability = torch.tensor([[p for _, p, _ in slot] for slot in zip(*reference.policies)], device=device)

    def choices(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per slot, the action index of each of `n` images (SKIP where the op's probability draw failed)."""
        device = self.action_index.device
        policy = torch.randint(self.action_index.shape[1], (n,), device=device, generator=generator)
        draws = torch.rand(2, n, device=device, generator=generator)
        signs = torch.randint(2, (2, n), device=device, generator=generator)
        slots = torch.arange(2, device=device)[:, None]
        applied = draws <= self.probability[:, policy]
        return list(torch.where(applied, self.action_index[slots, policy, signs], 0))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for choice in self.choices(len(images), generator):
            images = self.apply(images, choice)
        return images


class BatchRandAugment:
    """torchvision's RandAugment on a batch: each image draws `num_ops` ops uniformly (with replacement), each
    at bin `magnitude` of `num_magnitude_bins`, with a random sign where signed; `fill` as in BatchAutoAugment."""

    def __init__(self, size: int, device, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 fill: int = 0) -> None:
        space = T.RandAugment(num_ops, magnitude, num_magnitude_bins)._augmentation_space(num_magnitude_bins,
                                                                                            (size, size))
        table = _ActionTable()
        # op x sign draw (torchvision: sign draw 1 means negative)
        index = [[table.index(op, m) for m in reversed(_signed(space, op, magnitude))] for op in space]
        self.actions, self.num_ops = table.actions, num_ops
        self.apply = PerImageActions(self.actions, size, device, fill)
        self.action_index = torch.tensor(index, device=device)

    def choices(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per round, the action index of each of `n` images."""
        device = self.action_index.device
        ops = torch.randint(len(self.action_index), (self.num_ops, n), device=device, generator=generator)
        signs = torch.randint(2, (self.num_ops, n), device=device, generator=generator)
        return list(self.action_index[ops, signs])

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for choice in self.choices(len(images), generator):
            images = self.apply(images, choice)
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
