"""Class-count profiles of long-tailed benchmarks, and the seeded draw of which images form each split."""
from __future__ import annotations

import numpy as np
import torch

from errors import ConfigError

IMBALANCE_TYPES = ("exp", "step", None)
# How CIFAR's long-tailed subset is drawn (DATASET.draw): draw_splits, or LDAM-DRW's draw (ldam_splits)
DRAWS = ("torch", "ldam")


def long_tail_counts(n_max: int, num_classes: int, imb_type: str | None, imbalance_factor: float) -> list[int]:
    """Images per class: `exp` decays geometrically from n_max to n_max/IF; `step` halves the classes into
    n_max and n_max/IF; None keeps every class at n_max."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1 (largest class / smallest), got {imbalance_factor}")
    if imb_type is None:
        return [n_max] * num_classes
    if imb_type == "exp":
        return [int(n_max * (1 / imbalance_factor) ** (i / max(num_classes - 1, 1))) for i in range(num_classes)]
    if imb_type == "step":
        head = num_classes // 2
        return [n_max] * head + [int(n_max / imbalance_factor)] * (num_classes - head)
    raise ValueError(f"unknown imb_type {imb_type!r}; choose one of: exp, step, None")


def profile_counts(dataset: str, classes: list[str], n_max: int, imb_type: str | None, imbalance_factor: float,
                   val_per_class: int) -> list[int]:
    """long_tail_counts for a data set's training split, `n_max` being its largest class less `val_per_class`; a
    profile that leaves a class without a training image is a ConfigError naming the fix."""
    counts = long_tail_counts(n_max, len(classes), imb_type, imbalance_factor)
    empty = [c for c, n in enumerate(counts) if n < 1]
    if empty:
        held = f" once DATASET.val_per_class {val_per_class} are held out" if val_per_class else ""
        fix = (f"lower DATASET.imbalance_factor; DATASET.imbalance_factor <= {n_max} leaves every class an image"
               if n_max >= 1 else "lower DATASET.val_per_class")
        raise ConfigError(f"{dataset}: {len(empty)} class(es) would get no training image, the first "
                          f"{classes[empty[0]]!r}: the largest class has {n_max} images{held}, and DATASET.imbalance_type "
                          f"{imb_type} with factor {imbalance_factor} leaves the smallest {min(counts)}: {fix}")
    return counts


def draw_splits(targets, counts: list[int], val_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of a balanced validation split (`val_per_class` images per class) and, disjoint from it,
    a training split with `counts[c]` images of class c, drawn with a generator of their own."""
    targets = np.asarray(targets)
    generator = torch.Generator().manual_seed(seed)  # a private stream: global RNG state stays untouched
    train, val = [], []
    for cls, count in enumerate(counts):
        pool = np.flatnonzero(targets == cls)
        if count + val_per_class > len(pool):
            raise ValueError(f"class {cls} has {len(pool)} images, fewer than {count} train + {val_per_class} val")
        order = pool[torch.randperm(len(pool), generator=generator).numpy()]
        val.append(order[:val_per_class])
        train.append(order[val_per_class:val_per_class + count])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


def given_splits(targets, train: np.ndarray, val_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """The training split as given (indices into `targets`), and a balanced validation split of
    `val_per_class` images per class drawn, as draw_splits draws it, from the images outside it."""
    outside = np.array(targets)
    outside[train] = -1  # the subset's images are in no class's pool
    left = np.bincount(outside[outside >= 0], minlength=int(np.max(targets)) + 1)
    if val_per_class and left.min() < val_per_class:
        cls = int(left.argmin())
        raise ConfigError(f"DATASET.train_subset leaves {left[cls]} images of class {cls} outside it, too few for "
                          f"DATASET.val_per_class {val_per_class}: set DATASET.val_per_class <= {left.min()} (0 "
                          "selects on the test set), or list fewer images of that class")
    val = draw_splits(outside, [0] * len(left), val_per_class, seed)["val"]
    return {"train": np.sort(train), "val": val}


def ldam_draw(targets, counts: list[int], seed: int) -> np.ndarray:
    """The training images of LDAM-DRW's draw (kaidic/LDAM-DRW, imbalance_cifar.py), which BALMS and the codebases
    built on it train on: NumPy's legacy generator seeded once (theirs is the global one, `np.random.seed`), then
    per class in turn a shuffle of its indices and the first counts[c] of them."""
    targets = np.asarray(targets)
    generator = np.random.RandomState(seed)  # the global generator's stream, leaving the global state untouched
    chosen = []
    for cls, count in enumerate(counts):
        indices = np.flatnonzero(targets == cls)
        generator.shuffle(indices)
        chosen.append(indices[:count])
    return np.sort(np.concatenate(chosen))


def ldam_splits(targets, counts: list[int], val_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """LDAM-DRW's draw as the training split, and a balanced validation split of `val_per_class` images a class from
    outside it (given_splits). Where the draw leaves fewer than `val_per_class` images of a class outside it (at IF
    100 it keeps all 5,000 of CIFAR-10's class 0), the class's images of highest index leave the draw for it."""
    targets = np.asarray(targets)
    train = ldam_draw(targets, counts, seed)
    dropped = []
    for cls, pool in enumerate(np.bincount(targets)):
        drawn = train[targets[train] == cls]  # sorted: the last are those of highest index
        short = val_per_class - (pool - len(drawn))
        if short >= len(drawn):
            raise ConfigError(f"class {cls} has {pool} images, too few to hold out DATASET.val_per_class "
                              f"{val_per_class} and keep one to train on: lower DATASET.val_per_class")
        if short > 0:
            dropped.append(drawn[len(drawn) - short:])
    if dropped:
        train = np.setdiff1d(train, np.concatenate(dropped))
    return given_splits(targets, train, val_per_class, seed)


def read_subset(path: str, num_images: int) -> np.ndarray:
    """The image indices listed in `path`, one integer per line (blank lines and # comments skipped), each in
    [0, num_images) and listed once; anything else is a ConfigError naming the file, the line and the fix."""
    try:
        lines = open(path).read().splitlines()
    except OSError as error:
        raise ConfigError(f"DATASET.train_subset {path}: cannot read it ({error.strerror}); give a text file of "
                          "training-image indices, one per line") from None
    indices, seen = [], {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"DATASET.train_subset {path} line {number}"
        if not text.isdigit():
            raise ConfigError(f"{where}: {text!r} is not an image index (a whole number >= 0)")
        index = int(text)
        if index >= num_images:
            raise ConfigError(f"{where}: index {index} is out of range: the training split has {num_images} images "
                              f"(0 to {num_images - 1})")
        if index in seen:
            raise ConfigError(f"{where}: index {index} is listed twice (first on line {seen[index]})")
        seen[index] = number
        indices.append(index)
    if not indices:
        raise ConfigError(f"DATASET.train_subset {path} lists no image index")
    return np.asarray(indices, dtype=np.int64)
