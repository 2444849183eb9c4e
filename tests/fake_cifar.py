"""Small CIFAR-10/100 files in torchvision's on-disk format, with images whose class can be learnt."""
from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Each class has its own colour in the top half and another in the bottom half, under noise; stored as
    torchvision stores CIFAR: N x 3072, channel planes R, G, B, each row-major 32 x 32."""
    palette = np.random.default_rng(1234).integers(30, 226, size=(num_classes, 2, 3))
    images = np.empty((len(labels), 3, 32, 32), dtype=np.float64)
    images[:, :, :16, :] = palette[labels, 0][:, :, None, None]
    images[:, :, 16:, :] = palette[labels, 1][:, :, None, None]
    images += rng.normal(0, 20, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def _write(path: Path, entry: dict) -> str:
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_cifar(root: Path, num_classes: int, train_per_class: int, test_per_class: int, seed: int = 0) -> None:
    """Write CIFAR-10 (num_classes 10) or CIFAR-100 (100) under `root`, as torchvision's download would."""
    rng = np.random.default_rng(seed)
    train = np.repeat(np.arange(num_classes), train_per_class)
    rng.shuffle(train)
    test = np.repeat(np.arange(num_classes), test_per_class)
    if num_classes == 10:
        folder = root / CIFAR10.base_folder
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(train, 5), 1):
            _write(folder / f"data_batch_{i}", {"data": _images(part, 10, rng), "labels": part.tolist()})
        _write(folder / "test_batch", {"data": _images(test, 10, rng), "labels": test.tolist()})
        _write(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)]})
    else:
        folder = root / CIFAR100.base_folder
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / "train", {"data": _images(train, 100, rng), "fine_labels": train.tolist()})
        _write(folder / "test", {"data": _images(test, 100, rng), "fine_labels": test.tolist()})
        _write(folder / "meta", {"fine_label_names": [f"class{c}" for c in range(100)]})


def accept_files_in(root: Path) -> None:
    """Point torchvision's md5 checks at the generated files, so they pass as the real ones would."""
    for cls in (CIFAR10, CIFAR100):
        folder = Path(root) / cls.base_folder
        if not folder.exists():
            continue
        md5 = lambda name: hashlib.md5((folder / name).read_bytes()).hexdigest()  # noqa: E731
        cls.train_list = [[name, md5(name)] for name, _ in cls.train_list]
        cls.test_list = [[name, md5(name)] for name, _ in cls.test_list]
        cls.meta = {**cls.meta, "md5": md5(cls.meta["filename"])}


if __name__ == "__main__":
    # `python tests/fake_cifar.py DATADIR SCRIPT.py ARGS...`: run main.py or evaluate.py on the generated files in
    # DATADIR (used by the subprocess and torchrun tests, where every process must patch the md5 lists)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    accept_files_in(Path(sys.argv[1]))
    script = importlib.import_module(Path(sys.argv[2]).stem)
    script.main(sys.argv[3:])
