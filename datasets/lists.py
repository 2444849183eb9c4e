"""ImageNet-LT, Places-LT and iNaturalist 2018 as the literature runs them: the community's split files, one
`relative/path label` per line, over images kept on disk and read as they are needed.

The lists are those of the decoupling code (github.com/facebookresearch/classifier-balancing, data/): not shipped
here. Class counts come from the train list; every list is checked at start-up (its length against the published
one, each line, each label, each image file), so that a bad list or a missing image stops the run in one line before
training, never hours into it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from torch.utils.data import Dataset

from errors import ConfigError, DatasetNotFoundError

# The normalisation the three benchmarks' codebases use: ImageNet's pixel statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHOWN = 3  # file names or classes quoted in an error before "and N more"


class ListSpec(NamedTuple):
    """One benchmark: the prefix of its list files, the list each split reads, and the published sizes."""
    prefix: str                # ImageNet_LT -> ImageNet_LT_train.txt, ...
    files: dict[str, str]      # split -> the list it reads (iNat 2018 tests on its val list, as the literature, and
                               #   so has no val split apart: nothing is chosen on the images it reports)
    sizes: dict[str, int]      # list -> lines in the published file
    num_classes: int


LIST_DATASETS = {
    "ImageNetLT": ListSpec("ImageNet_LT", {"train": "train", "val": "val", "test": "test"},
                           {"train": 115_846, "val": 20_000, "test": 50_000}, 1_000),
    "PlacesLT": ListSpec("Places_LT", {"train": "train", "val": "val", "test": "test"},
                         {"train": 62_500, "val": 7_300, "test": 36_500}, 365),
    "iNat2018": ListSpec("iNaturalist18", {"train": "train", "test": "val"},
                         {"train": 437_513, "val": 24_426}, 8_142),
}
WHERE = "README.md, section 'ImageNet-LT, Places-LT and iNaturalist 2018', says where to get them"


def _listing(names: list) -> str:
    more = len(names) - SHOWN
    return ", ".join(map(str, names[:SHOWN])) + (f" and {more} more" if more > 0 else "")


def list_path(name: str, split: str, listdir: str | Path) -> Path:
    spec = LIST_DATASETS[name]
    return Path(listdir) / f"{spec.prefix}_{spec.files[split]}.txt"


def read_list(path: Path) -> tuple[list[str], list[int]]:
    """The relative paths and integer labels of a list file; blank lines and a leading BOM are skipped. A line that
    is not `relative/path label`, with a path inside the image root and a label >= 0, stops the run naming the file
    and line."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM that an editor put first is no part of the first path
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no list file {path}: put the list files in DATASET.listdir (default "
                                   f"DATASET.datadir); {WHERE}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the list file {path} ({error}): it must be text, one `path label` a line")
    paths, labels = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)  # a path may hold spaces; the label is the last word
        try:
            if len(parts) != 2:
                raise ValueError
            label = int(parts[1])
        except ValueError:
            raise ConfigError(f"{path}:{number}: {line.strip()[:80]!r} is not `relative/path label` (an integer "
                              "label): fix or remove the line") from None
        if label < 0:
            raise ConfigError(f"{path}:{number}: label {label} is negative: labels are 0..C-1; fix or remove the line")
        if os.path.isabs(parts[0]) or ".." in Path(parts[0]).parts:
            raise ConfigError(f"{path}:{number}: {parts[0][:80]!r} is not a relative path inside DATASET.datadir (no "
                              "leading '/', no '..'): write it relative to the image root, as the published lists do")
        paths.append(parts[0])
        labels.append(label)
    return paths, labels


def check_size(name: str, list_name: str, path: Path, found: int, strict: bool, what: str = "lines") -> None:
    """The published size of a list (or the class count), enforced unless DATASET.strict_sizes is false."""
    spec = LIST_DATASETS[name]
    expected = spec.num_classes if what == "classes" else spec.sizes[list_name]
    if found == expected:
        return
    message = f"{path} gives {found:,} {what}; {name}'s published {list_name} list has {expected:,}"
    if strict:
        raise ConfigError(f"{message}: use the standard list, or set DATASET.strict_sizes false for a subset made "
                          "on purpose")
    warnings.warn(f"{message} (DATASET.strict_sizes false: going on)", stacklevel=2)


class ListLT(Dataset):
    """One split of a list benchmark (`name`, a key of LIST_DATASETS): `paths` under `root` (DATASET.datadir),
    `targets`, `num_per_cls` and `classes` (each class named by its train images' folder), PIL images through
    `transform`. `img_size` is the side of the crops the model sees. `num_classes` is the train list's: `max label
    + 1`, with every label 0..C-1 present there."""

    def __init__(self, name: str, root: str | Path, split: str, listdir: str | Path | None = None,
                 strict_sizes: bool = True, num_classes: int | None = None, img_size: int = 224,
                 transform=None) -> None:
        if split not in LIST_DATASETS[name].files:
            raise ValueError(f"{name} has no split {split!r}; choose one of: {', '.join(LIST_DATASETS[name].files)}")
        self.name, self.split, self.img_size, self.transform = name, split, img_size, transform
        self.root = str(Path(root).resolve())
        self.list_file = list_path(name, split, listdir if listdir is not None else root)
        paths, labels = read_list(self.list_file)
        if not paths:
            raise ConfigError(f"{self.list_file} lists no images: it must hold one `relative/path label` a line")
        list_name = LIST_DATASETS[name].files[split]
        check_size(name, list_name, self.list_file, len(paths), strict_sizes)
        defines = num_classes is None  # the train list defines the classes
        if defines:
            num_classes = max(max(labels) + 1, 1)
            check_size(name, list_name, self.list_file, num_classes, strict_sizes, "classes")
        self._check_labels(labels, num_classes, need_all=defines)
        self.paths, self.targets, self.num_classes = paths, labels, num_classes
        counts = [0] * num_classes
        for label in labels:
            counts[label] += 1
        self.num_per_cls = dict(enumerate(counts))
        folder = {}
        for path, label in zip(paths, labels):
            folder.setdefault(label, Path(path).parent.name)
        self.classes = [folder.get(c, str(c)) for c in range(num_classes)]
        self._check_files()

    def _check_labels(self, labels: list[int], num_classes: int, need_all: bool) -> None:
        outside = sorted({label for label in labels if not 0 <= label < num_classes})
        if outside:
            raise ConfigError(f"{self.list_file}: label(s) {_listing(outside)} outside 0..{num_classes - 1} (the "
                              "train list's classes): labels must be 0..C-1, as in the train list")
        if need_all:
            absent = sorted(set(range(num_classes)) - set(labels))
            if absent:
                raise ConfigError(f"{self.list_file}: labels must be 0..C-1 with C = {num_classes} (the largest label "
                                  f"+ 1), but {len(absent)} class(es) have no line: {_listing(absent)}; renumber "
                                  "the classes without gaps")

    def _check_files(self) -> None:
        """Every listed image exists under root, checked now rather than when a worker first reads it."""
        missing = [path for path in self.paths if not os.path.isfile(os.path.join(self.root, path))]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing):,} of the {len(self.paths):,} images in {self.list_file} are missing under "
                f"DATASET.datadir {self.root} (e.g. {_listing(missing)}): set DATASET.datadir to the folder the "
                "list's paths start from, or fetch the missing images")

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD

    def open(self, index: int) -> Image.Image:
        with Image.open(os.path.join(self.root, self.paths[index])) as image:
            return image.convert("RGB")

    def __getitem__(self, index: int):
        image = self.open(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ListLT({self.name}, {self.split}: {len(self):,} images, {self.num_classes} classes, {self.list_file})"


def list_splits(cfg) -> dict:
    """The train, val and test splits of the list benchmark `cfg` (the DATASET section) names; val selects the
    checkpoint, and every split takes its classes from the train list. iNat 2018 tests on its val list and has no
    val split: like a run without DATASET.val_per_class, it selects on the test set and says so ("test bcr")."""
    listdir = cfg.listdir if cfg.listdir is not None else cfg.datadir
    splits = {"train": ListLT(cfg.name, cfg.datadir, "train", listdir, cfg.strict_sizes, img_size=cfg.img_size)}
    for split in [split for split in LIST_DATASETS[cfg.name].files if split != "train"]:
        splits[split] = ListLT(cfg.name, cfg.datadir, split, listdir, cfg.strict_sizes, splits["train"].num_classes,
                               cfg.img_size)
    return splits
