"""Loaders for the list benchmarks (datasets.lists), whose images stay on disk: too many to hold decoded in memory
as the CIFAR loaders do (ImageNet-LT's 115,846 training images at 224x224 are 17 GB as uint8).

- classic: PIL decode, RandomResizedCrop, flip (and ColorJitter) per image in DataLoader workers, as the reference
  codebases run them. Evaluation: shorter side to img_size x 256/224, centre crop img_size.
- fast: each split decoded once into a uint8 cache file (N x S x S x 3, S = img_size x 256/224: the shorter side
  resized to S, the centre S x S kept), memory-mapped. Workers copy a batch's rows out of it and crop, resize and flip
  them in uint8 (no JPEG is decoded after the cache is written); the training device normalises the uint8 batch.
  The crop is drawn over the centre square, not the whole image: what differs from classic.
  docs/performance.md has both paths measured, and the alternatives that were.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from errors import ConfigError
from storage import atomic_write

from .lists import ListLT
from .loaders import DRAWN_SAMPLERS, ClassSampler, classic_loader, stream_seed

EVAL_RESIZE = 256 / 224  # evaluation resizes the shorter side to img_size x this, then centre-crops img_size
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop's defaults, which every recipe keeps
CROP_ATTEMPTS = 10  # torchvision draws up to 10 boxes before it falls back to the centre crop

LIST_AUGMENTATIONS = {
    "RandomResizedCrop": lambda size: T.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO),
    "RandomHorizontalFlip": lambda size: T.RandomHorizontalFlip(),
    "ColorJitter": lambda size: T.ColorJitter(0.4, 0.4, 0.4),  # BALMS's ImageNet-LT and Places-LT setting
}
FAST_LIST_AUGMENTATIONS = ("RandomResizedCrop", "RandomHorizontalFlip")


def eval_side(size: int) -> int:
    return round(size * EVAL_RESIZE)


def eval_transform(size: int, mean, std) -> T.Compose:
    return T.Compose([T.Resize(eval_side(size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


def train_transform(aug_info, size: int, mean, std) -> T.Compose:
    """The named augmentations; without RandomResizedCrop the images are resized and centre-cropped first, so that
    a batch has one size."""
    fixed = [] if "RandomResizedCrop" in aug_info else [T.Resize(eval_side(size)), T.CenterCrop(size)]
    return T.Compose(fixed + [LIST_AUGMENTATIONS[name](size) for name in aug_info] + [T.ToTensor(),
                                                                                       T.Normalize(mean, std)])


class OnDevice:
    """A DataLoader's (images, targets) batches moved to `device`, images in channels_last; for evaluation loaders
    that accelerate does not prepare (each process reads its own shard)."""

    def __init__(self, loader: DataLoader, device) -> None:
        self.loader, self.device = loader, torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, targets in self.loader:
            yield (images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   targets.to(self.device, non_blocking=True))


def classic_eval_loader(split: ListLT, size: int, batch_size: int, num_workers: int, mean, std, rank: int,
                        world_size: int, device) -> OnDevice:
    """Every `world_size`-th image from `rank` on, in order, so that the shards cover the split once."""
    split.transform = eval_transform(size, mean, std)
    shard = Subset(split, range(rank, len(split), world_size))
    return OnDevice(DataLoader(shard, batch_size=batch_size, num_workers=num_workers,
                               pin_memory=torch.device(device).type == "cuda"), device)


# ---------------------------------------------------------------------------------------------------- the fast path
def cache_side(size: int) -> int:
    return eval_side(size)


def cache_path(cache_dir: str | Path, split: ListLT, side: int) -> Path:
    return Path(cache_dir) / f"{split.name}_{split.list_file.stem}_{side}.u8"


def _stamp(split: ListLT, side: int) -> dict:
    """What the cache was made from: a changed list, root or side makes it stale."""
    stat = split.list_file.stat()
    return {"list": str(split.list_file), "list_bytes": stat.st_size, "list_mtime": stat.st_mtime,
            "root": split.root, "images": len(split), "side": side}


def _square(split: ListLT, index: int, side: int) -> np.ndarray:
    """Image `index`: shorter side resized to `side` (bilinear, antialiased, as T.Resize), the centre square kept."""
    image = split.open(index)
    w, h = image.size
    scale = side / min(w, h)
    new = (max(side, int(w * scale)), max(side, int(h * scale)))  # T.Resize's sizes
    image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new[0] - side) // 2, (new[1] - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8)


def ensure_cache(split: ListLT, cache_dir: str | Path, side: int, threads: int, log=print) -> Path:
    """The uint8 cache of `split` at `side`, written once (to a partial file of this process, then renamed) and
    reused while its list, root and side are the same; the partial files that interrupted decodes left are removed
    first."""
    path = cache_path(cache_dir, split, side)
    stamp_file = path.with_suffix(".json")
    stamp = _stamp(split, side)
    if path.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"DATASET.cache_dir {cache_dir}: cannot create it ({error.strerror}); point it at a "
                          "writable folder, or set DATASET.loader classic") from None
    log(f"decoding {len(split):,} images of {split.list_file} once into {path} ({side}x{side}, "
        f"{len(split) * side * side * 3 / 2**30:.1f} GiB)")
    remove_stale_partials(path, log)
    partial = path.with_name(f"{path.name}.partial-{socket.gethostname()}-{os.getpid()}")  # a writer of its own

    def decode(tmp: Path) -> None:
        data = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(split), side, side, 3))
        with open(tmp, "r+b") as f:  # the whole file taken now: a full disk fails here, not as a SIGBUS mid-decode
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)

        def fill(index: int) -> None:
            data[index] = _square(split, index, side)

        with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decodes and resizes outside the GIL
            list(pool.map(fill, range(len(split))))
        data.flush()

    # an error or Ctrl-C removes the partial file (storage.atomic_write); what a killed process leaves, the next
    # decode removes
    atomic_write(path, decode, tmp=partial)
    atomic_write(stamp_file, lambda tmp: tmp.write_text(json.dumps(stamp)))
    return path


def remove_stale_partials(path: Path, log=print) -> None:
    """Remove the partial files of `path` that interrupted decodes on this machine left (named for the machine and
    the process, `<name>.partial-<host>-<pid>`; before that, `<name>.partial<pid>`): a retry would otherwise add
    one more, and iNat 2018's train cache is about 80 GiB. A running writer's file stays, and so does another
    machine's, whose writer cannot be checked from here."""
    host = socket.gethostname()
    for partial in path.parent.glob(f"{glob.escape(path.name)}.partial*"):
        found = re.fullmatch(re.escape(path.name) + r"\.partial(?:-(.+)-)?([0-9]+)", partial.name)
        if found is None or (found[1] or host) != host or _running(int(found[2])):
            continue
        partial.unlink(missing_ok=True)
        log(f"removed {partial}, left by an interrupted decode")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _Crops(Dataset):
    """Item (epoch, i): batch i of this process's shard in `epoch`, as uint8 B x size x size x 3 crops with their
    targets, made in the worker that reads it. Training: a seeded permutation per epoch shared by all processes, cut
    into equal shards (as datasets.TensorLoader); each image's row copied out of the memory-mapped cache, cropped and
    resized in one PIL call (antialiased bilinear on uint8, as RandomResizedCrop on a PIL image) and flipped, with
    boxes and flips drawn from the batch's own seed, whichever worker reads it. Evaluation: every `world_size`-th
    image from `rank` on, centre-cropped. The epoch travels with the index, so workers can persist across epochs."""

    def __init__(self, path: Path, targets: torch.Tensor, batch_size: int, size: int, *, train: bool, crop: bool,
                 flip: bool, seed: int, rank: int, world_size: int, sampler: str = "instance", epochs: int = 1) -> None:
        self.path, self.targets, self.batch_size, self.size = path, targets, batch_size, size
        self.balanced = train and sampler in DRAWN_SAMPLERS  # draw as datasets.ClassSampler
        self.sampler, self.epochs = sampler, epochs
        self.train, self.crop, self.flip = train, crop, flip
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.data, self.shard = None, (None, None)  # the memory map, opened in the worker; (epoch, its shard)

    def __len__(self) -> int:
        n = len(self.targets)
        n = n // self.world_size if self.train else len(range(self.rank, n, self.world_size))
        full, rest = divmod(n, self.batch_size)
        return full + (rest > 1 if self.train else rest > 0)  # no training batch of one: BatchNorm cannot take it

    def indices(self, epoch: int) -> torch.Tensor:
        if self.shard[0] != epoch:
            n = len(self.targets)
            if self.balanced:  # its draws depend on the seed and the epoch alone, as in every other loader
                sampler = ClassSampler(self.targets, self.seed, self.sampler, self.epochs)
                sampler.set_epoch(epoch)
                order = torch.as_tensor(list(sampler))
            elif self.train:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(self.seed, epoch)))
            if self.train:
                per_process = n // self.world_size  # equal shards keep the processes' gradient syncs in step
                self.shard = epoch, order[self.rank * per_process:(self.rank + 1) * per_process]
            else:
                self.shard = epoch, torch.arange(self.rank, n, self.world_size)
        return self.shard[1]

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if self.data is None:
            self.data = np.load(self.path, mmap_mode="r")
        idx = self.indices(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, self.rank) * 1_000_003 + i)
        return self.crops_of(idx, generator, self.data), self.targets[idx]

    def crops_of(self, idx: torch.Tensor, generator: torch.Generator, data: np.ndarray | None = None) -> torch.Tensor:
        """The uint8 crops of images `idx` (boxes and flips drawn from `generator` in training); `data` is the
        memory-mapped cache, opened here when not given."""
        data = np.load(self.path, mmap_mode="r") if data is None else data
        order = idx.argsort()  # ascending offsets read the file forwards
        rows = np.empty((len(idx), *data.shape[1:]), dtype=np.uint8)
        rows[order.numpy()] = data[idx[order].numpy()]
        side, size = rows.shape[1], self.size
        top = (side - size) // 2
        if not self.train:
            return torch.from_numpy(rows[:, top:top + size, top:top + size].copy())
        boxes = random_boxes(len(idx), side, generator).tolist() if self.crop else None
        flips = (torch.rand(len(idx), generator=generator) < 0.5).tolist() if self.flip else [False] * len(idx)
        crops = np.empty((len(idx), size, size, 3), dtype=np.uint8)
        for k, row in enumerate(rows):
            image = Image.fromarray(row)
            if boxes is not None:
                image = image.resize((size, size), Image.Resampling.BILINEAR, box=boxes[k], reducing_gap=None)
            else:
                image = image.crop((top, top, top + size, top + size))
            crops[k] = np.asarray(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flips[k] else image)
        return torch.from_numpy(crops)


class _EpochBatches(Sampler):
    """The keys (epoch, i) of one epoch's batches, read from the loader when an epoch starts."""

    def __init__(self, loader: "CachedLoader") -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return ((self.loader.epoch, i) for i in range(len(self.loader)))


def random_boxes(n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """n RandomResizedCrop boxes (x1, y1, x2, y2) over a side x side image, drawn as torchvision draws them: up to 10
    tries of scale and log-uniform aspect ratio, the first that fits; none fitting, the whole (square) image."""
    area = side * side
    scale = torch.empty(n, CROP_ATTEMPTS).uniform_(*CROP_SCALE, generator=generator) * area
    log_ratio = torch.empty(n, CROP_ATTEMPTS).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]),
                                                       generator=generator)
    ratio = log_ratio.exp()
    w, h = (scale * ratio).sqrt().round(), (scale / ratio).sqrt().round()
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    first = fits.int().argmax(1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    w, h = torch.where(fits.any(1), w, side), torch.where(fits.any(1), h, side)
    u = torch.rand(2, n, generator=generator)
    y, x = (u[0] * (side - h + 1)).floor(), (u[1] * (side - w + 1)).floor()
    return torch.stack([x, y, x + w, y + h], dim=1)


class CachedLoader(DataLoaderStateMixin):
    """Batches of normalised float images in channels_last from a split's uint8 cache, cropped (training) as
    _Crops says by `num_workers` DataLoader workers that persist across epochs. The uint8 batches travel to `device`
    (a quarter of the bytes of float ones), which normalises them. Like datasets.TensorLoader it reports its last
    batch to accelerate's gradient state."""

    def __init__(self, path: Path, targets, batch_size: int, size: int, mean, std, *, device, train: bool,
                 crop: bool = False, flip: bool = False, num_workers: int = 0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, sampler: str = "instance", epochs: int = 1) -> None:
        self.crops = _Crops(path, torch.as_tensor(targets, dtype=torch.long), batch_size, size, train=train, crop=crop,
                            flip=flip, seed=seed, rank=rank, world_size=world_size, sampler=sampler, epochs=epochs)
        self.device, self.epoch = torch.device(device), 0
        self.scale = (1 / (255 * torch.tensor(std))).view(1, 3, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(self.device)
        self.loader = DataLoader(self.crops, batch_size=None, sampler=_EpochBatches(self), num_workers=num_workers,
                                 persistent_workers=num_workers > 0, pin_memory=self.device.type == "cuda")
        self.gradient_state = GradientState()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.crops)

    def __iter__(self):
        batches = len(self)
        self.begin()
        try:
            for i, (images, targets) in enumerate(self.loader):
                self.end_of_dataloader = i == batches - 1
                yield self.normalise(images), targets.to(self.device, non_blocking=True)
        finally:
            self.end()

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 B x size x size x 3 -> normalised float B x 3 x size x size in channels_last, on the device: the
        permuted view of the stored order has channels_last strides already."""
        images = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return images.mul_(self.scale).add_(self.shift)


def list_loaders(cfg, splits: dict, seed: int, accelerator, mean, std, epochs: int = 1) -> dict:
    """The training loader (classic or fast, per DATASET.loader; drawing per DATASET.sampler) and an evaluation
    loader for val and test."""
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    batch_size = cfg.batch_size // accelerator.gradient_accumulation_steps  # of one forward pass, over the processes
    size, train = cfg.img_size, splits["train"]
    evaluated = {name: splits[name] for name in ("val", "test") if name in splits}
    if cfg.loader == "classic":
        train.transform = train_transform(cfg.aug_info, size, mean, std)
        loaders = {"train": classic_loader(train, batch_size, cfg.num_workers, seed, cfg.sampler, epochs)}  # accelerate shards it
        for name, split in evaluated.items():
            loaders[name] = classic_eval_loader(split, size, cfg.test_batch_size, cfg.num_workers, mean, std, rank,
                                                world, device)
        return loaders
    side, threads = cache_side(size), max(cfg.num_workers, os.cpu_count() or 1)
    with accelerator.local_main_process_first():  # one process a machine decodes; the others then read
        paths = {name: ensure_cache(split, cfg.cache_dir, side, threads, accelerator.print)
                 for name, split in {"train": train, **evaluated}.items()}
    loaders = {"train": CachedLoader(paths["train"], train.targets, batch_size // world, size, mean, std,
                                     device=device, train=True, crop="RandomResizedCrop" in cfg.aug_info,
                                     flip="RandomHorizontalFlip" in cfg.aug_info, num_workers=cfg.num_workers,
                                     seed=seed, rank=rank, world_size=world, sampler=cfg.sampler, epochs=epochs)}
    for name, split in evaluated.items():
        loaders[name] = CachedLoader(paths[name], split.targets, cfg.test_batch_size, size, mean, std,
                                     device=device, train=False, num_workers=cfg.num_workers, rank=rank,
                                     world_size=world)
    return loaders
