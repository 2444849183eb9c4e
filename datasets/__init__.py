"""Long-tailed data sets and their loaders: `from datasets import CIFAR10LT, CIFAR100LT, ImageFolderLT`."""
from __future__ import annotations

from errors import DatasetNotFoundError  # noqa: F401  the old import path

from .augment import batch_augmentations
from .cifar import CIFAR10LT, CIFAR100LT
from .folder import ImageFolderLT
from .list_loaders import FAST_LIST_AUGMENTATIONS, LIST_AUGMENTATIONS, classic_eval_loader, list_loaders
from .lists import LIST_DATASETS, ListLT, list_splits
from .loaders import (AUGMENTATIONS, FAST_AUGMENTATIONS, SAMPLERS, ClassBalancedSampler, ClassSampler, TensorLoader,
                      class_probabilities, classic_loader, classic_transform)
from .long_tail import DRAWS, IMBALANCE_TYPES, draw_splits, ldam_draw, long_tail_counts

DATASETS = {"CIFAR10LT": CIFAR10LT, "CIFAR100LT": CIFAR100LT, "ImageFolderLT": ImageFolderLT,
            **{name: ListLT for name in LIST_DATASETS}}  # the list benchmarks: ImageNetLT, PlacesLT, iNat2018


class Dataset:
    """A name only, never instantiated; so is `IterableDataset`. Where Hugging Face `datasets` is installed,
    accelerate runs `from datasets import IterableDataset` (or `Dataset`) to ask whether what it prepares is one of
    its data sets, and from this repository `import datasets` finds this folder (the seed's) first. With these names
    the import works and the answer is no, which is true of every data set here."""


class IterableDataset:
    """A name only: see `Dataset`."""


def build_splits(cfg, data_seed: int, names: tuple[str, ...] | None = None) -> dict:
    """The train, test and (when DATASET.val_per_class > 0, or an image folder has val/) val splits that `cfg`
    (the DATASET section) names, or those of `names` alone; each split's `root` is the folder its data came from.
    The list benchmarks always have their published val split. The test split alone needs no training images (nor
    a DATASET.train_subset file): a checkpoint that holds its training class counts is evaluated from it."""
    if cfg.name in LIST_DATASETS:
        splits = list_splits(cfg)
        return {name: splits[name] for name in names or splits}
    dataset = DATASETS[cfg.name]
    kwargs = dict(imb_type=cfg.imbalance_type, imbalance_factor=cfg.imbalance_factor, seed=data_seed,
                  val_per_class=cfg.val_per_class, download=cfg.download)
    with_val = bool(cfg.val_per_class)
    if dataset is ImageFolderLT:  # read where it is; CIFAR is 32x32 as stored
        kwargs["img_size"] = cfg.img_size
        with_val = with_val or ImageFolderLT.has_val_folder(cfg.datadir)
        build = ImageFolderLT
    else:  # CIFAR in the seed's datadir/CIFAR10 (or CIFAR100), else in datadir itself
        kwargs.update(subset=cfg.train_subset, draw=cfg.draw, verify=cfg.verify)
        build = dataset.in_datadir
    names = names or ["train", "test"] + (["val"] if with_val else [])
    return {name: build(cfg.datadir, split=name, **kwargs) for name in names}


def image_side(train_set) -> int:
    """The side of the square images the model sees: CIFAR's and ImageFolderLT's stored side, a list benchmark's
    crop (DATASET.img_size)."""
    return train_set.img_size if isinstance(train_set, ListLT) else train_set.data.shape[1]


def normalization(cfg, train_set) -> tuple[list[float], list[float]]:
    """The configured mean and std, or else the data set's own."""
    if cfg.mean is not None:
        return list(cfg.mean), list(cfg.std)
    return list(train_set.mean), list(train_set.std)


def build_loaders(cfg, splits: dict, seed: int, accelerator, epochs: int = 1) -> dict:
    """A training loader (fast or classic, per DATASET.loader; drawing per DATASET.sampler, progressive sampling
    over `epochs`) and a fast, sharded loader per evaluation split.
    DATASET.batch_size is the batch of one optimizer step: under gradient accumulation each forward pass takes its
    share, batch_size / accumulation steps images over all processes (and that / processes in each)."""
    mean, std = normalization(cfg, splits["train"])
    if cfg.name in LIST_DATASETS:  # images on disk: datasets/list_loaders.py
        return list_loaders(cfg, splits, seed, accelerator, mean, std, epochs)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    batch_size = cfg.batch_size // accelerator.gradient_accumulation_steps  # of one forward pass, over the processes
    train = splits["train"]
    if cfg.loader == "fast":
        train_loader = TensorLoader(train.data, train.targets, batch_size // world, mean, std, device=device,
                                    train=True, crop="RandomCrop" in cfg.aug_info,
                                    flip="RandomHorizontalFlip" in cfg.aug_info,
                                    augmentations=batch_augmentations(cfg.aug_info, train.data.shape[1], device, cfg.aug_fill),
                                    seed=seed, rank=rank, world_size=world, sampler=cfg.sampler, epochs=epochs)
    else:
        train.transform = classic_transform(cfg.aug_info, train.data.shape[1], mean, std, cfg.aug_fill)
        train_loader = classic_loader(train, batch_size, cfg.num_workers, seed, cfg.sampler, epochs)  # accelerate splits it
    loaders = {"train": train_loader}
    for name in ("val", "test"):
        if name in splits:
            loaders[name] = eval_loader(cfg, splits[name], mean, std, accelerator)
    return loaders


def eval_loader(cfg, split, mean, std, accelerator) -> TensorLoader:
    """A fast loader over `split` in order, each process taking its own shard, for evaluation (a list benchmark's:
    the classic one, which needs no cache)."""
    if isinstance(split, ListLT):
        return classic_eval_loader(split, cfg.img_size, cfg.test_batch_size, cfg.num_workers, mean, std,
                                   accelerator.process_index, accelerator.num_processes, accelerator.device)
    return TensorLoader(split.data, split.targets, cfg.test_batch_size, mean, std, device=accelerator.device,
                        train=False, rank=accelerator.process_index, world_size=accelerator.num_processes)


__all__ = ["CIFAR10LT", "CIFAR100LT", "ImageFolderLT", "ListLT", "LIST_DATASETS", "LIST_AUGMENTATIONS",
           "FAST_LIST_AUGMENTATIONS", "image_side", "DATASETS", "AUGMENTATIONS", "FAST_AUGMENTATIONS",
           "IMBALANCE_TYPES", "SAMPLERS", "ClassBalancedSampler", "ClassSampler", "class_probabilities",
           "DatasetNotFoundError", "TensorLoader",
           "build_splits", "build_loaders", "eval_loader", "draw_splits",
           "long_tail_counts", "normalization", "batch_augmentations"]
