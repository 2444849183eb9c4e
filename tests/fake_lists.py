"""Small list benchmarks in the community's format: tiny JPEGs under an image root and `relative/path label` list
files named as the real ones (ImageNet_LT_train.txt, ...), with images whose class can be learnt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Training images per class: 2 many-shot (> 100), 3 medium (20-100) and 3 few-shot (< 20) classes
LONG_TAIL = [130, 105, 60, 30, 20, 19, 8, 4]
# what a run on the generated data sets needs beyond conftest.FAST_RUN
LIST_RUN = ["DATASET.name", "ImageNetLT", "DATASET.strict_sizes", "false", "DATASET.img_size", "32",
            "DATASET.aug_info", "[RandomResizedCrop, RandomHorizontalFlip]", "DATASET.num_workers", "0",
            "DATASET.test_batch_size", "64"]
PREFIXES = {"ImageNetLT": "ImageNet_LT", "PlacesLT": "Places_LT", "iNat2018": "iNaturalist18"}


def _image(label: int, num_classes: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A class's own colour on the left half and another on the right, under noise: learnable after any crop
    that keeps some of both halves, and any flip."""
    palette = np.random.default_rng(4321).integers(30, 226, size=(num_classes, 2, 3))
    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.float64)
    pixels[:, : w // 2] = palette[label, 0]
    pixels[:, w // 2:] = palette[label, 1]
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_split(root: Path, listdir: Path, name: str, list_name: str, counts: list[int], folder: str,
                rng: np.random.Generator, size: tuple[int, int] = (40, 35)) -> list[str]:
    """counts[c] JPEGs of class c under root/folder/class<c>/, listed in listdir/<prefix>_<list_name>.txt in a
    shuffled order, as the real lists are. Returns the lines."""
    lines = []
    for label, count in enumerate(counts):
        (root / folder / f"class{label:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            relative = f"{folder}/class{label:03d}/{i:05d}.jpg"
            _image(label, len(counts), rng, size).save(root / relative, quality=90)
            lines.append(f"{relative} {label}")
    lines = [lines[i] for i in rng.permutation(len(lines))]
    listdir.mkdir(parents=True, exist_ok=True)
    (listdir / f"{PREFIXES[name]}_{list_name}.txt").write_text("\n".join(lines) + "\n")
    return lines


def make_lists(root: Path, name: str = "ImageNetLT", counts: list[int] = tuple(LONG_TAIL), val_per_class: int = 5,
               test_per_class: int = 10, listdir: Path | None = None, seed: int = 0) -> Path:
    """A generated list benchmark: train with `counts`, balanced val and test (iNat 2018: train and val only).
    Returns the folder holding the lists (`listdir`, default `root`)."""
    rng = np.random.default_rng(seed)
    listdir = Path(listdir or root)
    classes = len(counts)
    write_split(root, listdir, name, "train", list(counts), "train", rng)
    write_split(root, listdir, name, "val", [val_per_class] * classes, "val", rng)
    if name != "iNat2018":
        write_split(root, listdir, name, "test", [test_per_class] * classes, "test", rng)
    return listdir
