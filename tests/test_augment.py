"""datasets.augment: the batched AutoAugment, RandAugment and Cutout against torchvision's per-image ones."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms.autoaugment import _apply_op  # the op torchvision's per-image transforms call

from config import ConfigError, load_config
from datasets import build_loaders
from datasets.augment import (GEOMETRIC, OPS, SKIP, Action, BatchAutoAugment, BatchCutout, BatchRandAugment, Cutout,
                              PerImageActions, _inverse_affine, batch_augmentations, cutout_mask)
from datasets.loaders import TensorLoader, classic_transform

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
Z_999 = 3.0902  # the standard normal's 0.999 quantile


def chi_square_critical(df: int) -> float:
    """The chi-square value exceeded with probability 0.001 at `df` degrees of freedom, by the Wilson-Hilferty
    cube-root normal approximation (within 1% of the exact value for df >= 10; no scipy needed)."""
    return df * (1 - 2 / (9 * df) + Z_999 * math.sqrt(2 / (9 * df))) ** 3


def assert_frequencies(observed: Counter, expected: dict, n: int) -> None:
    """Chi-square goodness of fit at p = 0.001; categories expected fewer than 5 times are pooled into one."""
    assert set(observed) <= {key for key, p in expected.items() if p > 0}, "a draw the policy never makes"
    small = [key for key, p in expected.items() if 0 < p * n < 5]
    cells = [([key], p) for key, p in expected.items() if p * n >= 5] + [(small, sum(expected[k] for k in small))]
    cells = [(keys, p) for keys, p in cells if p > 0]
    statistic = sum((sum(observed[k] for k in keys) - n * p) ** 2 / (n * p) for keys, p in cells)
    assert statistic < chi_square_critical(len(cells) - 1), (statistic, len(cells))


def _test_images() -> torch.Tensor:
    """7 x 3 x 32 x 32 uint8: full-range noise (every geometric error shows), narrow-range noise (AutoContrast and
    Equalize have something to stretch) and a smooth gradient."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (4, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    narrow = torch.randint(60, 141, (2, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    ramp = torch.linspace(0, 1, SIZE)
    gradient = torch.stack([255 * ramp[:, None] * ramp[None, :], 200 * ramp[None, :].expand(SIZE, SIZE),
                            180 * (1 - ramp[:, None]).expand(SIZE, SIZE)]).to(torch.uint8)
    return torch.cat([noise, narrow, gradient[None]])


ALL_ACTIONS = sorted(set(BatchAutoAugment(SIZE, "cpu").actions) | set(BatchRandAugment(SIZE, "cpu").actions))


# ---------------------------------------------------------------- each op is torchvision's

CASES = [(a, 0) for a in ALL_ACTIONS] + [(a, 128) for a in ALL_ACTIONS if a.op in GEOMETRIC]  # 128: BALMS's grey


def _near_half_pixel(action: Action) -> torch.Tensor:
    """H x W, True where a geometric op samples within 1e-3 pixel of the midpoint between two pixels: there float
    rounding in another order (another BLAS, a GPU) may pick the other one. None at 32 x 32 for these actions."""
    if action.op not in GEOMETRIC:
        return torch.zeros(SIZE, SIZE, dtype=torch.bool)
    matrix = torch.tensor(_inverse_affine(action, SIZE), dtype=torch.float64).view(2, 3)
    centres = torch.arange(SIZE, dtype=torch.float64) + 0.5 - SIZE / 2  # torchvision's, about the image centre
    points = torch.stack(torch.broadcast_tensors(centres, centres[:, None], torch.ones(1, dtype=torch.float64)), -1)
    source = points @ matrix.T + (SIZE - 1) / 2  # in pixel indices
    return ((source - source.floor() - 0.5).abs() < 1e-3).any(-1)


def _torchvision(image: torch.Tensor, action: Action, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`action` on one C x H x W uint8 image by torchvision's per-image tensor path and by the classic loader's
    (a PIL image), each given `fill` as torchvision's AutoAugment passes it on (None for 0)."""
    tensor = _apply_op(image, action.op, action.magnitude, T.InterpolationMode.NEAREST,
                       [float(fill)] * 3 if fill else None)
    pil = _apply_op(Image.fromarray(image.permute(1, 2, 0).numpy()), action.op, action.magnitude,
                    T.InterpolationMode.NEAREST, [fill] * 3 if fill else None)
    return tensor, torch.from_numpy(np.array(pil)).permute(2, 0, 1)


def _assert_torchvisions(ours: torch.Tensor, image: torch.Tensor, action: Action, fill: int) -> None:
    """Ours is torchvision's tensor path exactly, and within 1 level of PIL's (whose colour ops round otherwise),
    except at sample points half a pixel from two pixels, which nearest sampling may give either."""
    tensor, pil = _torchvision(image, action, fill)
    exact = ~_near_half_pixel(action)
    assert torch.equal(ours[:, exact], tensor[:, exact]), action
    assert (ours[:, exact].int() - pil[:, exact].int()).abs().max() <= 1, action


@pytest.mark.parametrize("action,fill", CASES, ids=[f"{a.op}{a.magnitude:+.3g}-fill{f}" for a, f in CASES])
def test_batched_op_equals_torchvision_per_image_op(action, fill):
    images = _test_images()
    batched = PerImageActions([action], SIZE, "cpu", fill)(images, torch.zeros(len(images), dtype=torch.long))
    assert batched.dtype == torch.uint8 and batched.shape == images.shape
    for image, ours in zip(images, batched):
        _assert_torchvisions(ours, image, action, fill)
    if fill and action.magnitude:  # the fill shows: some pixel moved in from outside is grey, not black
        assert (batched == fill).all(dim=1).sum() > (images == fill).all(dim=1).sum()


def test_every_policy_op_has_a_batched_op():
    ops = {op for sub_policy in T.AutoAugment(T.AutoAugmentPolicy.CIFAR10).policies for op, _, _ in sub_policy}
    ops |= set(T.RandAugment()._augmentation_space(31, (SIZE, SIZE)))
    assert ops <= set(OPS) and {a.op for a in ALL_ACTIONS} == ops


def test_each_image_gets_its_own_action_in_a_mixed_batch():
    """Every action once or more in one batch, each image as torchvision gives it: no image's parameters leak into
    another's (the blends and lookup tables are per image, the histograms and ranges per image and channel)."""
    images = _test_images().repeat(math.ceil(len(ALL_ACTIONS) / 7) + 1, 1, 1, 1)
    choice = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)) % len(ALL_ACTIONS)
    out = PerImageActions(ALL_ACTIONS, SIZE, "cpu", fill=128)(images, choice)
    for image, index, ours in zip(images, choice.tolist(), out):
        _assert_torchvisions(ours, image, ALL_ACTIONS[index], 128)


# ---------------------------------------------------------------- a fixed number of kernels a batch

OP_BOUND = 400  # aten ops one batch of 256 may run (issue 16; the grouped AutoAugment ran 2,300-2,650)
SYNCS = ("aten::_local_scalar_dense", "aten::item", "aten::nonzero")  # ops that read the device from the host


def _aten_ops(augmentation, images: torch.Tensor, seed: int) -> list[str]:
    """The aten ops (torch.profiler's events named aten::*, those inside other ops included) that one batch runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        augmentation(images, torch.Generator().manual_seed(seed))
    return [event.name for event in profiler.events() if event.name.startswith("aten::")]


@pytest.mark.parametrize("name", ["AutoAugment", "RandAugment", "Cutout"])
def test_a_batch_runs_the_same_ops_whatever_its_images_drew(name):
    """The same count for three draws, under the bound, and no op that needs the host to read a device value: a
    launch count fixed by the batch's shape, which a CUDA graph can capture."""
    [augmentation] = batch_augmentations([name], SIZE, "cpu", fill=128)
    images = torch.randint(0, 256, (256, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    runs = [_aten_ops(augmentation, images, seed) for seed in range(3)]
    assert len({len(ops) for ops in runs}) == 1 and len(runs[0]) < OP_BOUND, [len(ops) for ops in runs]
    assert not set(runs[0]) & set(SYNCS)


# ---------------------------------------------------------------- draws follow the policy

def _op_probabilities(space: dict, op: str, p: float, bin_index) -> dict[Action, float]:
    """What one policy entry applies, as torchvision's AutoAugment.forward draws it."""
    magnitudes, signed = space[op]
    magnitude = float(magnitudes[bin_index]) if bin_index is not None else 0.0
    out = Counter({SKIP: 1 - p})
    for m in ((-magnitude, magnitude) if signed else (magnitude,)):
        out[Action(op, m)] += p / (2 if signed else 1)  # -0.0 and 0.0 make one action, as they do in ours
    return dict(out)


def test_autoaugment_draws_sub_policies_and_ops_at_the_policy_frequencies():
    reference = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
    space = reference._augmentation_space(10, (SIZE, SIZE))
    expected: Counter = Counter()
    for first, second in reference.policies:  # the pair of actions an image gets: the sub-policy shows through
        for a, pa in _op_probabilities(space, *first).items():
            for b, pb in _op_probabilities(space, *second).items():
                expected[(a, b)] += pa * pb / len(reference.policies)
    augment, n = BatchAutoAugment(SIZE, "cpu"), 50_000
    first, second = augment.choices(n, torch.Generator().manual_seed(0))
    observed = Counter((augment.actions[a], augment.actions[b]) for a, b in zip(first.tolist(), second.tolist()))
    assert_frequencies(observed, expected, n)


def test_randaugment_draws_two_independent_uniform_ops():
    space = T.RandAugment()._augmentation_space(31, (SIZE, SIZE))
    one: Counter = Counter()
    for op, (magnitudes, signed) in space.items():
        magnitude = float(magnitudes[9]) if magnitudes.ndim else 0.0
        for m in ((-magnitude, magnitude) if signed else (magnitude,)):
            one[SKIP if op == "Identity" else Action(op, m)] += 1 / len(space) / (2 if signed else 1)
    expected = {(a, b): pa * pb for a, pa in one.items() for b, pb in one.items()}
    augment, n = BatchRandAugment(SIZE, "cpu"), 50_000
    first, second = augment.choices(n, torch.Generator().manual_seed(0))
    observed = Counter((augment.actions[a], augment.actions[b]) for a, b in zip(first.tolist(), second.tolist()))
    assert_frequencies(observed, expected, n)


# ---------------------------------------------------------------- Cutout is placed as in the classic path

def _devries_square(center_y: int, center_x: int, length: int = 16) -> np.ndarray:
    """The square as DeVries & Taylor's Cutout (and BALMS) cuts it: np.clip of center -/+ length // 2."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    y1, y2 = np.clip([center_y - length // 2, center_y + length // 2], 0, SIZE)
    x1, x2 = np.clip([center_x - length // 2, center_x + length // 2], 0, SIZE)
    mask[y1:y2, x1:x2] = True
    return mask


def test_cutout_square_for_every_center_is_the_classic_one():
    centers = torch.cartesian_prod(torch.arange(SIZE), torch.arange(SIZE))
    fast = cutout_mask(centers[:, 0], centers[:, 1], SIZE, SIZE).numpy()
    for (y, x), square in zip(centers.tolist(), fast):
        classic = Cutout().erase(np.ones((SIZE, SIZE, 3), dtype=np.uint8), y, x) == 0
        assert (classic == square[:, :, None]).all() and (square == _devries_square(y, x)).all()


def _centers(zeroed: np.ndarray) -> list[tuple[int, int]]:
    """The center each H x W mask's square came from: a square clipped at the top or left keeps its far edge."""
    centers = []
    for mask in zeroed:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        center_y = rows[0] + 8 if rows[0] > 0 else rows[-1] + 1 - 8
        center_x = cols[0] + 8 if cols[0] > 0 else cols[-1] + 1 - 8
        assert (mask == _devries_square(center_y, center_x)).all()
        centers.append((center_y, center_x))
    return centers


def test_batched_cutout_centers_are_uniform_over_the_image():
    n = 20_480
    images = torch.full((n, 1, SIZE, SIZE), 255, dtype=torch.uint8)
    out = BatchCutout()(images, torch.Generator().manual_seed(0))
    observed = Counter(_centers((out[:, 0] == 0).numpy()))
    assert_frequencies(observed, {(y, x): 1 / SIZE ** 2 for y in range(SIZE) for x in range(SIZE)}, n)


def test_classic_cutout_centers_are_uniform_over_the_image():
    torch.manual_seed(0)  # the classic transforms draw from torch's global generator, seeded per DataLoader worker
    n, image = 3_000, Image.fromarray(np.full((SIZE, SIZE, 3), 255, dtype=np.uint8))
    masks = np.stack([(np.array(Cutout()(image)) == 0).all(-1) for _ in range(n)])
    centers = _centers(masks)
    uniform = {i: 1 / SIZE for i in range(SIZE)}
    assert_frequencies(Counter(y for y, _ in centers), uniform, n)
    assert_frequencies(Counter(x for _, x in centers), uniform, n)


def test_classic_transform_cuts_one_square_of_zeros_before_normalize():
    torch.manual_seed(1)
    transform = classic_transform(["Cutout"], SIZE, MEAN, STD)
    images = [Image.fromarray(np.full((SIZE, SIZE, 3), 200, dtype=np.uint8))] * 20
    out = torch.stack([transform(image) for image in images])
    zeroed = (out == (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)).all(1).numpy()
    assert len(set(_centers(zeroed))) > 1  # one DeVries square per image, drawn anew each time


# ---------------------------------------------------------------- in the fast loader

def _loader(augmentations, seed: int = 0, crop: bool = True) -> TensorLoader:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 256, size=(40, SIZE, SIZE, 3), dtype=np.uint8)  # no zero pixels of its own
    return TensorLoader(data, list(range(40)), 16, MEAN, STD, device="cpu", train=True, crop=crop, flip=crop,
                        augmentations=augmentations, seed=seed)


def test_loader_with_augmentations_yields_normalised_channels_last_batches_reproducibly():
    names = ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "RandAugment", "Cutout"]
    batches = list(_loader(batch_augmentations(names, SIZE, "cpu")))
    again = list(_loader(batch_augmentations(names, SIZE, "cpu")))
    other = list(_loader(batch_augmentations(names, SIZE, "cpu"), seed=1))
    assert [len(y) for _, y in batches] == [16, 16, 8]
    for (x, y), (x2, y2), (x3, _) in zip(batches, again, other):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, SIZE, SIZE)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert not torch.equal(x, x3)


def test_loader_cutout_zeroes_one_square_per_image():
    x = torch.cat([x for x, _ in _loader([BatchCutout()], crop=False)])
    zeroed = (x == (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)).all(1).numpy()
    _centers(zeroed)  # each image's zeros are exactly one DeVries square


def test_fast_augmentations_follow_aug_info_after_crop_and_flip():
    built = batch_augmentations(["RandomCrop", "RandomHorizontalFlip", "Cutout", "AutoAugment"], SIZE, "cpu")
    assert [type(a) for a in built] == [BatchCutout, BatchAutoAugment]
    assert batch_augmentations(["RandomCrop", "RandomHorizontalFlip"], SIZE, "cpu") == []


def test_fast_loader_refuses_a_crop_after_a_batched_augmentation():
    with pytest.raises(ConfigError, match="RandomCrop after AutoAugment.*classic"):
        batch_augmentations(["AutoAugment", "RandomCrop"], SIZE, "cpu")


class _Split:
    """What build_loaders reads of a split."""

    def __init__(self, n: int = 8) -> None:
        self.data = np.random.default_rng(0).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
        self.targets, self.mean, self.std, self.transform = [0] * n, MEAN, STD, None

    def __len__(self) -> int:
        return len(self.targets)


def _build(loader: str, aug_info: str) -> dict:
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.loader", loader, "DATASET.aug_info", aug_info])
    one_process = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"),
                                  gradient_accumulation_steps=1)
    return build_loaders(cfg.DATASET, {"train": _Split(), "test": _Split()}, 0, one_process)


def test_build_loaders_gives_the_fast_loader_the_batched_augmentations():
    train = _build("fast", "[RandomCrop, RandomHorizontalFlip, AutoAugment, Cutout]")["train"]
    assert [type(a) for a in train.augmentations] == [BatchAutoAugment, BatchCutout] and train.pad and train.flip
    with pytest.raises(ConfigError, match="RandomHorizontalFlip after Cutout"):
        _build("fast", "[Cutout, RandomHorizontalFlip]")


def test_build_loaders_gives_the_classic_loader_cutout_before_to_tensor():
    train = _build("classic", "[RandomCrop, RandomHorizontalFlip, AutoAugment, Cutout]")["train"]
    steps = [type(t) for t in train.dataset.transform.transforms]
    assert steps == [T.RandomCrop, T.RandomHorizontalFlip, T.AutoAugment, Cutout, T.ToTensor, T.Normalize]


# ---------------------------------------------------------------- DATASET.aug_fill

@pytest.mark.parametrize("loader", ["fast", "classic"])
def test_aug_fill_is_the_grey_that_autoaugment_brings_in(loader):
    """On black images AutoAugment's colour ops give 0 or (Invert) 255; only rotate, shear and translate can bring
    in another level: the fill, 128 as BALMS sets it (which a later colour op may move), none with fill 0."""
    black = np.zeros((256, SIZE, SIZE, 3), dtype=np.uint8)

    def levels(fill: int) -> set[int]:
        torch.manual_seed(0)
        if loader == "fast":
            [autoaugment] = batch_augmentations(["AutoAugment"], SIZE, "cpu", fill)
            out = autoaugment(torch.from_numpy(black).permute(0, 3, 1, 2).contiguous(),
                              torch.Generator().manual_seed(0))
        else:
            [autoaugment] = classic_transform(["AutoAugment"], SIZE, MEAN, STD, fill).transforms[:1]
            out = torch.stack([T.functional.pil_to_tensor(autoaugment(Image.fromarray(image))) for image in black])
        return set(out.unique().tolist())

    assert levels(0) <= {0, 255}
    assert 128 in levels(128)
