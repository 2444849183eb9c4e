"""ImageFolderLT: your own images, laid out as train/<class>/*, test/<class>/* (and optionally val/<class>/*)."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets import VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from errors import ConfigError, DatasetNotFoundError

from .long_tail import draw_splits, profile_counts

LAYOUT = "train/<class>/<image> and test/<class>/<image> (val/<class>/<image> optional)"
SHOWN = 3  # paths or class names quoted in a warning or error before "and N more"


def _listing(names: list) -> str:
    """'a, b, c and 4 more'."""
    more = len(names) - SHOWN
    return ", ".join(map(str, names[:SHOWN])) + (f" and {more} more" if more > 0 else "")


def _subfolders(folder: Path) -> list[str]:
    """Names of the folders in `folder`, sorted, hidden ones (.git, .ipynb_checkpoints) left out."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _decode(path: Path, resize) -> np.ndarray | None:
    """The image at `path` as RGB, resized and cropped; None when PIL cannot read it."""
    try:
        with Image.open(path) as image:
            return np.asarray(resize(image.convert("RGB")), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class ImageFolderLT(VisionDataset):
    """A folder of images per class, decoded once into `data` (N x img_size x img_size x 3 uint8, RGB) and
    `targets`, so that the fast loader and the classic one take it as they take CIFAR.

    - Classes are the folder names under train/, sorted, as torchvision's ImageFolder numbers them; test/ and
      val/ use the same indices. A class folder in test/ or val/ that train/ lacks is an error; a train class
      without test (or val) images is a warning, and the metrics then average over the classes present.
    - `imb_type` None keeps each class's own count (less `val_per_class`). `exp` and `step` impose the
      long-tailed profile by class index, as on CIFAR: class c keeps `long_tail_counts(n_max, C, ...)[c]`
      images, n_max being the largest class (less `val_per_class`). So name the class folders so that larger
      classes sort first; a class short of its count is an error that names it.
    - Validation: a val/ folder when there is one; else, with `val_per_class` > 0, a balanced split drawn out of
      train/ with `seed` (disjoint from the training split). Both at once is an error.
    - Images are converted to RGB (grayscale, palette and RGBA alike; alpha is dropped), their shorter side
      resized to `img_size` (bilinear, antialiased), then center-cropped to img_size x img_size, all in the
      constructor. Files are picked by extension (`extensions`); other files and hidden ones are ignored, and
      an image that cannot be decoded is skipped with a warning naming it.
    - `mean` and `std` (per channel, in [0, 1] units) are computed from this split's images on first use.
    - `download` is accepted for the common signature and ignored.
    """

    extensions = IMG_EXTENSIONS + (".gif",)

    def __init__(self, root: str, train: bool = True, transform=None, target_transform=None, download: bool = False,
                 imb_type: str | None = None, imbalance_factor: float = 1, seed: int = 0, val_per_class: int = 0,
                 split: str | None = None, img_size: int = 32) -> None:
        split = split or ("train" if train else "test")
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
        root = Path(root).resolve()
        super().__init__(str(root), transform=transform, target_transform=target_transform)
        for name in ("train", "test"):
            if not (root / name).is_dir():
                raise DatasetNotFoundError(f"ImageFolderLT: no folder {root / name}: DATASET.datadir must hold "
                                           f"{LAYOUT}")
        has_val = self.has_val_folder(root)
        if has_val and val_per_class:
            raise ConfigError(f"ImageFolderLT: {root / 'val'} exists and DATASET.val_per_class is {val_per_class}: "
                              "set DATASET.val_per_class 0 to validate on val/, or move val/ away to hold out "
                              f"{val_per_class} images per class from train/")
        if split == "val" and not has_val and not val_per_class:
            raise ConfigError(f"ImageFolderLT: no val split: add {root / 'val'} or set DATASET.val_per_class > 0")
        self.split, self.img_size = split, img_size
        self.classes = self.find_classes(root / "train")
        self.class_to_idx = {name: c for c, name in enumerate(self.classes)}
        for other in ("test", "val") if has_val else ("test",):  # before any decoding, so it fails fast
            unknown = [name for name in _subfolders(root / other) if name not in self.class_to_idx]
            if unknown:
                raise ConfigError(f"ImageFolderLT: class folder(s) {_listing(unknown)} in {root / other} but not in "
                                  f"{root / 'train'}: add their training images there, or remove them")
        from_train = split == "train" or (split == "val" and not has_val)
        self.paths, self.targets, self.data = self._load(root / ("train" if from_train else split), from_train)
        if from_train:
            counts = self._training_counts(imb_type, imbalance_factor, val_per_class)
            keep = draw_splits(self.targets, counts, val_per_class, seed)[split]
            self.data = self.data[keep]
            self.targets = [self.targets[i] for i in keep]
            self.paths = [self.paths[i] for i in keep]
        self.num_per_cls = {c: int(n) for c, n in enumerate(np.bincount(self.targets, minlength=len(self.classes)))}

    @staticmethod
    def has_val_folder(root: str | Path) -> bool:
        return (Path(root) / "val").is_dir()

    @staticmethod
    def find_classes(folder: Path) -> list[str]:
        """The class folders of train/, sorted by name: class c is the c-th of them."""
        classes = _subfolders(folder)
        if not classes:
            raise DatasetNotFoundError(f"ImageFolderLT: {folder} has no class folders: DATASET.datadir must hold "
                                       f"{LAYOUT}")
        return classes

    def _files(self, folder: Path) -> dict[str, list[Path]]:
        """Image files per class folder of `folder`, sub-folders included, in sorted order."""
        files = {}
        for name in _subfolders(folder):
            files[name] = []
            for parent, dirs, names in os.walk(folder / name, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files[name] += [Path(parent, n) for n in sorted(names)
                                if not n.startswith(".") and n.lower().endswith(self.extensions)]
        return files

    def _load(self, folder: Path, is_train: bool) -> tuple[list[str], list[int], np.ndarray]:
        """Every readable image of `folder`, decoded, with its path and class index."""
        files = self._files(folder)
        empty = [name for name in self.classes if not files.get(name)]
        if is_train and empty:
            raise ConfigError(f"ImageFolderLT: class folder(s) {_listing(empty)} in {folder} hold no images "
                              f"({' '.join(self.extensions)}): add images, or remove the empty folder(s)")
        paths = [path for name in self.classes for path in files.get(name, [])]
        targets = [self.class_to_idx[name] for name in self.classes for _ in files.get(name, [])]
        resize = T.Compose([T.Resize(self.img_size), T.CenterCrop(self.img_size)])
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # PIL decodes outside the GIL
            images = list(pool.map(lambda path: _decode(path, resize), paths))
        bad = [str(path) for path, image in zip(paths, images) if image is None]
        if bad:
            warnings.warn(f"ImageFolderLT: skipped {len(bad)} unreadable image(s) in {folder}: {_listing(bad)}; "
                          "delete or replace them to silence this", stacklevel=3)
        paths = [str(path) for path, image in zip(paths, images) if image is not None]
        targets = [target for target, image in zip(targets, images) if image is not None]
        present = set(targets)
        missing = [name for c, name in enumerate(self.classes) if c not in present]
        if is_train and missing:
            raise ConfigError(f"ImageFolderLT: class folder(s) {_listing(missing)} in {folder} hold no readable "
                              "images: replace the unreadable files, or remove the folder(s)")
        if not paths:
            raise ConfigError(f"ImageFolderLT: no readable images in {folder}: DATASET.datadir must hold {LAYOUT}")
        if missing:
            warnings.warn(f"ImageFolderLT: {len(missing)} class(es) without images in {folder} ({_listing(missing)}): "
                          "metrics on it average over the classes present; add images there to score them all",
                          stacklevel=3)
        data = np.stack([image for image in images if image is not None])
        return paths, targets, data

    def _training_counts(self, imb_type: str | None, imbalance_factor: float, val_per_class: int) -> list[int]:
        """Training images per class: the folder's own counts or the imposed profile, each less `val_per_class`,
        refused (naming the class) where train/ holds too few."""
        have, train = np.bincount(self.targets, minlength=len(self.classes)), Path(self.root) / "train"
        if imb_type is None:
            counts = [int(n) - val_per_class for n in have]
            short = [c for c, n in enumerate(counts) if n < 1]
            if short:
                c = short[0]
                raise ConfigError(
                    f"ImageFolderLT: class {self.classes[c]!r} has {have[c]} images in {train / self.classes[c]}, too "
                    f"few to hold out DATASET.val_per_class {val_per_class} and keep one to train on ({len(short)} "
                    "class(es) short): lower DATASET.val_per_class, add images, or provide a val/ folder")
            return counts
        n_max = int(have.max()) - val_per_class
        largest = "the largest class" + (" less DATASET.val_per_class" if val_per_class else "")
        counts = profile_counts("ImageFolderLT", self.classes, n_max, imb_type, imbalance_factor, val_per_class)
        short = [c for c, n in enumerate(counts) if n + val_per_class > have[c]]
        if short:
            c = short[0]
            held = f" + {val_per_class} val" if val_per_class else ""
            raise ConfigError(
                f"ImageFolderLT: class {self.classes[c]!r} (index {c}) has {have[c]} images in "
                f"{train / self.classes[c]}, fewer than the {counts[c]}{held} that DATASET.imbalance_type {imb_type} "
                f"with factor {imbalance_factor} asks of it (n_max {n_max} = {largest}; {len(short)} class(es) "
                "short): classes are indexed by sorted folder name, so rename the folders for larger classes to sort "
                "first, raise DATASET.imbalance_factor, or set DATASET.imbalance_type null to keep the folder's own "
                "counts")
        return counts

    @cached_property
    def _moments(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Per-channel mean and std over every pixel, from exact integer sums taken a few million pixels at a time."""
        n, h, w, _ = self.data.shape
        step = max(1, 2 ** 22 // (h * w))
        total, squares = np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64)
        for start in range(0, n, step):
            chunk = self.data[start:start + step].reshape(-1, 3).astype(np.int64)
            total += chunk.sum(0)
            squares += (chunk * chunk).sum(0)
        mean = total / (n * h * w)
        std = np.sqrt(np.maximum(squares / (n * h * w) - mean ** 2, 0))
        return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._moments[0]

    @property
    def std(self) -> tuple[float, float, float]:
        return self._moments[1]

    def __getitem__(self, index: int):
        image, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __len__(self) -> int:
        return len(self.data)

    def extra_repr(self) -> str:
        return f"Split: {self.split}\nClasses: {len(self.classes)}\nImage size: {self.img_size}"
