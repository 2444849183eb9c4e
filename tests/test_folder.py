"""ImageFolderLT on generated image folders: class counts, imposed profiles, resizing, normalisation, validation
splits, the promised errors and warnings, and a main.py run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from config import ConfigError, check, load_config
from conftest import ROOT, run_main
from datasets import (DATASETS, DatasetNotFoundError, ImageFolderLT, build_splits, classic_transform,
                      long_tail_counts, normalization)
from losses import build_loss

TRAIN = {"a_cat": 30, "b_dog": 15, "c_fox": 6}  # sorted names run from the largest class to the smallest
TEST = {"a_cat": 4, "b_dog": 4, "c_fox": 4}


def write_image(path: Path, rng: np.random.Generator, width: int, height: int, mode: str = "RGB") -> None:
    """A noisy image in `mode`, saved in the format its suffix names."""
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([pixels, np.full((height, width), 128, np.uint8)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_folder(root: Path, splits: dict[str, dict[str, int]], sizes=((48, 40), (40, 48)), seed: int = 0) -> Path:
    """Class folders of PNG and JPEG images of mixed sizes, with one grayscale, one palette and one RGBA image per
    class of four or more, and files that are no images."""
    rng = np.random.default_rng(seed)
    for split, counts in splits.items():
        for name, n in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode = {1: "L", 2: "P", 3: "RGBA"}.get(i, "RGB") if n >= 4 else "RGB"
                suffix = "jpg" if i % 2 and mode in ("RGB", "L") else "png"
                write_image(folder / f"{name}_{i:03d}.{suffix}", rng, *sizes[i % len(sizes)], mode)
    (root / "train" / "a_cat" / "README.txt").write_text("not an image")
    (root / "train" / "a_cat" / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "train" / ".ipynb_checkpoints").mkdir(exist_ok=True)
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data", {"train": TRAIN, "test": TEST})


def config(datadir: Path, *overrides: str):
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.name", "ImageFolderLT", "DATASET.datadir", str(datadir),
                                              "DATASET.download", "false", *overrides])
    check(cfg)
    return cfg


def one_line(info) -> str:
    message = str(info.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


# ---------------------------------------------------------------- counts and profiles

def test_natural_counts_sorted_classes_and_rgb_uint8(folder):
    train = ImageFolderLT(folder, split="train")
    assert train.classes == ["a_cat", "b_dog", "c_fox"]  # .ipynb_checkpoints is no class
    assert train.num_per_cls == {0: 30, 1: 15, 2: 6}
    assert train.data.shape == (51, 32, 32, 3) and train.data.dtype == np.uint8
    assert len(train) == len(train.targets) == len(train.paths) == 51
    assert all(Path(p).suffix in (".png", ".jpg") for p in train.paths)  # README.txt and .DS_Store ignored
    assert [train.class_to_idx[Path(p).parent.name] for p in train.paths] == train.targets
    test = ImageFolderLT(folder, train=False)
    assert test.split == "test" and test.classes == train.classes and test.num_per_cls == {0: 4, 1: 4, 2: 4}


@pytest.mark.parametrize("imb_type", ["exp", "step"])
def test_imposed_profile_is_long_tail_counts_of_the_largest_class(folder, imb_type):
    train = ImageFolderLT(folder, imb_type=imb_type, imbalance_factor=5, seed=3)
    expected = long_tail_counts(30, 3, imb_type, 5)
    assert list(train.num_per_cls.values()) == expected == ([30, 13, 6] if imb_type == "exp" else [30, 6, 6])
    assert len(train.data) == sum(expected)
    again = ImageFolderLT(folder, imb_type=imb_type, imbalance_factor=5, seed=3)
    assert again.paths == train.paths and np.array_equal(again.data, train.data)  # the seed fixes the subset


def test_class_short_of_its_imposed_count_is_named(folder):
    with pytest.raises(ConfigError) as info:
        ImageFolderLT(folder, imb_type="exp", imbalance_factor=2)  # asks 30, 21, 15: b_dog has 15
    message = one_line(info)
    assert "'b_dog'" in message and "15" in message and "21" in message
    assert "DATASET.imbalance_type null" in message and "sort first" in message


def test_profile_leaving_a_class_empty_is_refused(folder):
    with pytest.raises(ConfigError, match="lower DATASET.imbalance_factor") as info:
        ImageFolderLT(folder, imb_type="step", imbalance_factor=40)
    assert "'b_dog'" in one_line(info)


def test_counts_feed_balanced_softmax(folder):
    train = ImageFolderLT(folder, imb_type="exp", imbalance_factor=5)
    loss = build_loss("BalancedSoftmax", list(train.num_per_cls.values()))
    logits, targets = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    prior = torch.tensor([30, 13, 6.0]) / 49
    assert torch.allclose(loss(logits, targets), torch.nn.functional.cross_entropy(prior.log().expand(4, 3), targets))


# ---------------------------------------------------------------- images: size, colour, normalisation

def test_img_size_resizes_every_split(folder):
    splits = build_splits(config(folder, "DATASET.img_size", "24").DATASET, 0)
    assert set(splits) == {"train", "test"}
    assert splits["train"].data.shape == (51, 24, 24, 3) and splits["test"].data.shape == (12, 24, 24, 3)


def test_resize_is_shorter_side_then_center_crop(tmp_path):
    # 80 wide, 40 high: red and blue 16-pixel stripes left and right of green; resized to 40 x 20, the middle
    # 20 columns (10 to 30 of 40, where green spans 8 to 32) are green alone
    stripes = np.zeros((40, 80, 3), np.uint8)
    stripes[:, :16, 0] = stripes[:, 16:64, 1] = stripes[:, 64:, 2] = 255
    for split in ("train", "test"):
        (tmp_path / split / "x").mkdir(parents=True)
        Image.fromarray(stripes).save(tmp_path / split / "x" / "stripes.png")
    data = ImageFolderLT(tmp_path, img_size=20).data
    assert data.shape == (1, 20, 20, 3)
    assert (data[0, :, :, 1] == 255).all() and (data[0, :, :, [0, 2]] == 0).all()


def test_grayscale_palette_and_rgba_become_rgb_and_mean_std_match_numpy(tmp_path):
    make_folder(tmp_path, {"train": {"a_cat": 6, "b_dog": 5, "c_fox": 3}, "test": {"a_cat": 1, "b_dog": 1, "c_fox": 1}},
                sizes=((16, 16),))
    train = ImageFolderLT(tmp_path, img_size=16)  # already 16x16: pixels as decoded, no resampling
    expected = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in train.paths])
    assert np.array_equal(train.data, expected)
    gray = train.paths.index(str(tmp_path / "train" / "a_cat" / "a_cat_001.jpg"))
    assert Image.open(train.paths[gray]).mode == "L"
    assert (train.data[gray, ..., 0] == train.data[gray, ..., 2]).all()
    pixels = expected.reshape(-1, 3).astype(np.float64) / 255
    assert np.allclose(train.mean, pixels.mean(0), atol=1e-12) and np.allclose(train.std, pixels.std(0), atol=1e-12)
    assert all(isinstance(v, float) for v in train.mean + train.std) and len(train.mean) == len(train.std) == 3
    cfg = config(tmp_path, "DATASET.img_size", "16")
    assert normalization(cfg.DATASET, train) == (list(train.mean), list(train.std))
    cfg = config(tmp_path, "DATASET.mean", "[0.5, 0.4, 0.3]", "DATASET.std", "[0.2, 0.2, 0.2]")
    assert normalization(cfg.DATASET, train) == ([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])


def test_classic_loader_reads_items(folder):
    train = ImageFolderLT(folder, img_size=24)
    train.transform = classic_transform(["RandomCrop", "RandomHorizontalFlip"], 24, train.mean, train.std)
    image, target = train[40]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and target == train.targets[40]


# ---------------------------------------------------------------- validation

def test_val_folder_is_used_when_present(folder):
    make_folder(folder, {"val": {"a_cat": 3, "b_dog": 2, "c_fox": 2}}, seed=1)
    splits = build_splits(config(folder).DATASET, 0)
    assert set(splits) == {"train", "val", "test"}
    assert splits["val"].num_per_cls == {0: 3, 1: 2, 2: 2}
    assert all("/val/" in p for p in splits["val"].paths)
    assert splits["train"].num_per_cls == {0: 30, 1: 15, 2: 6}  # nothing held out of train/
    with pytest.raises(ConfigError, match="DATASET.val_per_class 0") as info:
        build_splits(config(folder, "DATASET.val_per_class", "2").DATASET, 0)
    one_line(info)


@pytest.mark.parametrize("imb_type,train_counts", [(None, [28, 13, 4]), ("exp", long_tail_counts(28, 3, "exp", 6))])
def test_val_per_class_is_balanced_and_disjoint(folder, imb_type, train_counts):
    overrides = ["DATASET.val_per_class", "2"]
    overrides += ["DATASET.imbalance_type", imb_type, "DATASET.imbalance_factor", "6"] if imb_type else []
    splits = build_splits(config(folder, *overrides).DATASET, 7)
    assert splits["val"].num_per_cls == {0: 2, 1: 2, 2: 2}
    assert list(splits["train"].num_per_cls.values()) == train_counts
    assert not set(splits["val"].paths) & set(splits["train"].paths)
    assert all("/train/" in p for p in splits["val"].paths)
    assert build_splits(config(folder, *overrides).DATASET, 7)["val"].paths == splits["val"].paths


def test_val_per_class_needs_images_left_to_train_on(folder):
    with pytest.raises(ConfigError, match="'c_fox'.*DATASET.val_per_class 6") as info:
        ImageFolderLT(folder, val_per_class=6)
    one_line(info)


def test_val_split_without_source_is_refused(folder):
    with pytest.raises(ConfigError, match="no val split"):
        ImageFolderLT(folder, split="val")


# ---------------------------------------------------------------- broken folders

def test_missing_train_folder(tmp_path):
    make_folder(tmp_path, {"train": {"a_cat": 1}, "test": {"a_cat": 1}})
    (tmp_path / "train").rename(tmp_path / "training")
    with pytest.raises(DatasetNotFoundError) as info:
        ImageFolderLT(tmp_path, split="test")
    message = one_line(info)
    assert str(tmp_path / "train") in message and "train/<class>/<image> and test/<class>/<image>" in message


def test_empty_class_is_an_error(folder):
    (folder / "train" / "d_empty").mkdir()
    (folder / "train" / "d_empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="d_empty.*no images") as info:
        ImageFolderLT(folder)
    one_line(info)


def test_unreadable_image_is_skipped_with_a_warning(folder):
    broken = folder / "train" / "b_dog" / "broken.png"
    broken.write_bytes(b"this is no png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image") as record:
        train = ImageFolderLT(folder)
    assert str(broken) in str(record[0].message) and "\n" not in str(record[0].message)
    assert train.num_per_cls == {0: 30, 1: 15, 2: 6} and str(broken) not in train.paths


def test_class_with_only_unreadable_images_is_an_error(folder):
    (folder / "train" / "d_bad").mkdir()
    (folder / "train" / "d_bad" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(ConfigError, match="d_bad.*no readable"):
        ImageFolderLT(folder)


def test_test_class_absent_from_train_is_an_error(folder):
    write_image(folder / "test" / "zebra" / "z.png", np.random.default_rng(0), 8, 8)
    for split in ("train", "test"):  # refused before anything is decoded, whichever split comes first
        with pytest.raises(ConfigError, match="zebra") as info:
            ImageFolderLT(folder, split=split)
        assert str(folder / "train") in one_line(info)


def test_train_class_absent_from_test_warns(folder):
    for path in (folder / "test" / "c_fox").iterdir():
        path.unlink()
    with pytest.warns(UserWarning, match=r"1 class\(es\) without images .*c_fox"):
        test = ImageFolderLT(folder, split="test")
    assert test.num_per_cls == {0: 4, 1: 4, 2: 0}


# ---------------------------------------------------------------- registry, config and main.py

def test_registered_and_accepted_by_config_check(folder, cifar_root):
    assert DATASETS["ImageFolderLT"] is ImageFolderLT
    check(config(folder, "DATASET.download", "true"))  # download is ignored, never required
    cifar = load_config(ROOT / "configs.yaml", ["DATASET.datadir", str(cifar_root), "DATASET.download", "false"])
    assert build_splits(cifar.DATASET, 0)["train"].data.shape[1] == 32
    with pytest.raises(ConfigError, match="DATASET.img_size 24 has no effect on CIFAR10LT"):  # CIFAR is never resized
        load_config(ROOT / "configs.yaml", ["DATASET.img_size", "24"])


@pytest.mark.slow
def test_main_trains_on_an_image_folder(folder, tmp_path):
    savedir = tmp_path / "runs"
    done = run_main(folder, savedir, "DATASET.name", "ImageFolderLT", "DATASET.img_size", "32", "TRAIN.epochs", "1",
                    "LOSS.name", "BalancedSoftmax", "DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    run = savedir / "ImageFolderLT" / "resnet32" / "BalancedSoftmax-IF_5"
    results = json.loads((run / "results-seed0.json").read_text())
    assert results["num_per_cls"] == [30, 13, 6] and 0 <= results["test"]["bcr"] <= 1
    counts = json.loads((run / "class-counts-seed0.json").read_text())
    train = ImageFolderLT(folder, imb_type="exp", imbalance_factor=5, seed=0)
    assert counts["classes"] == ["a_cat", "b_dog", "c_fox"] and counts["test_per_class"] == [4, 4, 4]
    assert np.allclose(counts["mean"], train.mean) and np.allclose(counts["std"], train.std)
