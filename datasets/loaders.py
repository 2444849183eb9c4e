"""Batches for training and evaluation.

The fast loader keeps a split as one uint8 tensor on the training device and does crop, flip, the batched
augmentations of datasets.augment (AutoAugment, RandAugment, Cutout) and normalisation on whole batches there:
no per-image Python, no worker processes, no host-to-device copies.
The classic loader is torchvision's per-image transforms in a DataLoader, for augmentations the fast one lacks.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms as T
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from torch.utils.data import DataLoader, WeightedRandomSampler

from .augment import BATCH_AUGMENTATIONS, GATHERS, BatchAugmentation, Cutout


def stream_seed(seed: int, epoch: int, rank: int | None = None) -> int:
    """The seed of one epoch's random stream: shared by every process (a shuffle, a drawn sampling), or with `rank`
    one process's own (its augmentation). Every loader and the meta sampler derive theirs from it."""
    shared = seed * 100_003 + epoch
    return shared if rank is None else shared * 1_009 + rank


PAD = 4  # RandomCrop pads by 4 pixels on every side, as in the CIFAR literature

# name -> factory(image side, fill): `fill` is the grey level (0-255) the geometric ops bring in (DATASET.aug_fill)
AUGMENTATIONS = {
    "RandomCrop": lambda size, fill: T.RandomCrop(size, padding=PAD),
    "RandomHorizontalFlip": lambda size, fill: T.RandomHorizontalFlip(),
    "AutoAugment": lambda size, fill: T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=fill or None),
    "RandAugment": lambda size, fill: T.RandAugment(fill=fill or None),
    "TrivialAugmentWide": lambda size, fill: T.TrivialAugmentWide(fill=fill or None),
    "ColorJitter": lambda size, fill: T.ColorJitter(0.4, 0.4, 0.4),
    "Cutout": lambda size, fill: Cutout(),  # on the PIL image, so at its place in aug_info, before ToTensor
}
FAST_AUGMENTATIONS = (*GATHERS, *BATCH_AUGMENTATIONS)


def classic_transform(aug_info, size: int, mean, std, fill: int = 0) -> T.Compose:
    """Per-image torchvision transforms: the augmentations named in `aug_info`, then ToTensor and Normalize."""
    return T.Compose([AUGMENTATIONS[name](size, fill) for name in aug_info] + [T.ToTensor(), T.Normalize(mean, std)])


SAMPLERS = ("instance", "class_balanced", "sqrt", "progressive")  # DATASET.sampler
# the samplers that draw with ClassSampler; the others (instance, and meta, whose loader draws its own batches from
# the instance order) take every image once an epoch
DRAWN_SAMPLERS = SAMPLERS[1:]


def class_probabilities(sampler: str, counts: torch.Tensor, epoch: int = 0, epochs: int = 1) -> torch.Tensor:
    """The chance that one draw picks each class, as Kang et al. ("Decoupling Representation and Classifier for
    Long-Tailed Recognition", ICLR 2020, eq. 1-2) define it from the class sizes n_j: n_j^q / sum_i n_i^q, with
    q = 1 for instance, 0 for class_balanced and 1/2 for sqrt sampling; progressive moves from instance to
    class-balanced, (1 - t/T) n_j / N + (t/T) / C in epoch t (from 0) of T."""
    counts = counts.double()
    if sampler == "progressive":
        t = epoch / epochs
        return (1 - t) * counts / counts.sum() + t / len(counts)
    power = {"instance": 1.0, "class_balanced": 0.0, "sqrt": 0.5}[sampler]
    return counts ** power / (counts ** power).sum()


class ClassSampler(WeightedRandomSampler):
    """Every draw picks a class with class_probabilities(`sampler`), then one of its images uniformly (with
    replacement): `len(targets)` draws an epoch, as many as instance sampling makes. The draws of an epoch depend on
    the seed and the epoch alone, so every process draws the same sequence and takes its own share of it
    (accelerate's batch sharding, or TensorLoader's), and a resumed run draws what an uninterrupted one would.
    `epochs` is the run's length, which progressive sampling moves over."""

    def __init__(self, targets, seed: int, sampler: str = "class_balanced", epochs: int = 1) -> None:
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.per_class = torch.bincount(self.targets).double()
        self.sampler, self.epochs, self.seed = sampler, epochs, seed
        super().__init__(self.image_weights(0), len(self.targets), replacement=True, generator=torch.Generator())
        self.set_epoch(0)

    def image_weights(self, epoch: int) -> torch.Tensor:
        if self.sampler == "class_balanced":  # 1 / n_j: the weights this sampler has always drawn with
            return 1 / self.per_class[self.targets]
        return (class_probabilities(self.sampler, self.per_class, epoch, self.epochs) / self.per_class)[self.targets]

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's prepared loader (and by TensorLoader) at the start of every epoch."""
        self.generator.manual_seed(stream_seed(self.seed, epoch))
        if self.sampler == "progressive":
            self.weights = self.image_weights(epoch)


class ClassBalancedSampler(ClassSampler):
    """Every draw picks a class uniformly, then one of its images uniformly (with replacement), as many draws an
    epoch as there are images: a class of one image is drawn as often as any other."""

    def __init__(self, targets, seed: int) -> None:
        super().__init__(targets, seed, "class_balanced")


def classic_loader(dataset, batch_size: int, num_workers: int, seed: int, sampler: str = "instance",
                   epochs: int = 1) -> DataLoader:
    """A shuffling (or class-aware, see ClassSampler, over `epochs`) DataLoader; accelerate's `prepare` shards it
    over processes."""
    balanced = ClassSampler(dataset.targets, seed, sampler, epochs) if sampler in DRAWN_SAMPLERS else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=balanced is None, sampler=balanced,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0,
                      drop_last=len(dataset) % batch_size == 1)  # BatchNorm cannot train on a batch of one


class TensorLoader(DataLoaderStateMixin):
    """Batches of normalised float images in channels_last from a uint8 split held on `device`.

    Training: every epoch a seeded permutation shared by all processes (or, with another `sampler`, the draws of a
    ClassSampler over `epochs`, as many), split into disjoint shards of equal length, a per-image random crop (pad 4) and horizontal flip, then `augmentations` (datasets.augment's batched
    ones, on the uint8 N x C x H x W batch) in their order. Evaluation: each process takes every
    `world_size`-th image in order, so the shards cover the split exactly once.

    Like the loaders accelerate prepares, it tells accelerate's gradient state when its last batch comes
    (`end_of_dataloader`): `accelerator.accumulate` then steps the optimizer on an epoch's last, partial window
    instead of carrying its gradients into the next epoch.
    """

    def __init__(self, data, targets, batch_size: int, mean, std, *, device, train: bool, crop: bool = False,
                 flip: bool = False, augmentations: Sequence[BatchAugmentation] = (), seed: int = 0, rank: int = 0,
                 world_size: int = 1, sampler: str = "instance", epochs: int = 1) -> None:
        images = torch.as_tensor(data)  # N x H x W x C uint8, as torchvision's CIFAR stores it
        self.pad = PAD if crop else 0
        # Padding once here, not per batch: a crop is then a pure gather
        images = torch.nn.functional.pad(images, (0, 0, self.pad, self.pad, self.pad, self.pad))
        self.images = images.to(device)
        self.targets = torch.as_tensor(targets, dtype=torch.long).to(device)
        self.size = data.shape[1]
        self.scale = (1 / (255 * torch.tensor(std))).to(device)  # per channel, the last dimension
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).to(device)
        self.batch_size, self.train, self.flip, self.augmentations = batch_size, train, flip, list(augmentations)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.device = torch.device(device)
        self.gradient_state = GradientState()  # what DataLoaderStateMixin's begin() and end() report to
        self.balanced = ClassSampler(targets, seed, sampler, epochs) if train and sampler in DRAWN_SAMPLERS else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> torch.Tensor:
        n = len(self.targets)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device=self.device)
        if self.balanced is not None:
            self.balanced.set_epoch(self.epoch)
            order = torch.as_tensor(list(self.balanced))
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(self.seed, self.epoch)))
        per_process = n // self.world_size  # equal shards keep the processes' gradient syncs in step
        return order[self.rank * per_process:(self.rank + 1) * per_process].to(self.device)

    def __len__(self) -> int:
        n = len(self.targets) // self.world_size if self.train else len(range(self.rank, len(self.targets), self.world_size))
        full, rest = divmod(n, self.batch_size)
        return full + (rest > 1 if self.train else rest > 0)

    def __iter__(self):
        indices = self._shard()
        generator = torch.Generator(self.device).manual_seed(stream_seed(self.seed, self.epoch, self.rank))
        offsets = torch.arange(self.size, device=self.device)
        batches = len(self)  # a last batch of one is left out in training: BatchNorm cannot train on it
        self.begin()
        try:
            for i in range(batches):
                idx = indices[i * self.batch_size:(i + 1) * self.batch_size]
                self.end_of_dataloader = i == batches - 1
                yield self.augment(idx, generator, offsets), self.targets[idx]
        finally:
            self.end()

    def augment(self, idx: torch.Tensor, generator: torch.Generator, offsets: torch.Tensor) -> torch.Tensor:
        """Crop and flip as two gathers from the padded uint8 images, the batched augmentations, then normalise to
        channels_last float."""
        b = len(idx)
        if self.train and self.pad:
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2, b, 1), device=self.device, generator=generator)
        else:
            dy = dx = torch.full((b, 1), self.pad, device=self.device)
        cols = dx + offsets
        if self.train and self.flip:
            flipped = torch.rand(b, 1, device=self.device, generator=generator) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        # Whole rows first (long contiguous copies), then the columns within them: several times faster on a CPU
        # than one gather of single pixels
        rows = self.images[idx[:, None], dy + offsets]  # B x H x (W + 2 pad) x C
        crops = rows.gather(2, cols[:, None, :, None].expand(b, self.size, self.size, rows.shape[-1]))
        if self.train and self.augmentations:
            crops = self.apply_augmentations(crops, generator)
        # Normalising in the stored H x W x C order is a contiguous pass; permute then gives an NCHW view with
        # channels_last strides, the layout the model runs in
        return (crops.float().mul_(self.scale).add_(self.shift)).permute(0, 3, 1, 2)

    def apply_augmentations(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batched augmentations on the B x H x W x C uint8 crops, which they see as B x C x H x W."""
        # torchvision's kernels (convolutions, grid samples) run about twice as fast on contiguous NCHW on a CPU
        images = crops.permute(0, 3, 1, 2).contiguous()
        for augmentation in self.augmentations:
            images = augmentation(images, generator)
        return images.permute(0, 2, 3, 1).contiguous()  # back to H x W x C for the contiguous normalising pass
