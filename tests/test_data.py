"""Long-tailed class counts, the seeded split draw, and CIFAR10LT/CIFAR100LT on generated CIFAR files."""
from __future__ import annotations

import importlib.util
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from config import check, data_seed, load_config
from datasets import CIFAR10LT, CIFAR100LT, DatasetNotFoundError, build_splits
from datasets.long_tail import draw_splits, long_tail_counts, read_subset
from errors import ConfigError



def _load_tool(name: str):
    """A script of tools/ as a module (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ldam_subset = _load_tool("ldam_subset")

# ---------------------------------------------------------------- class counts
# The profiles of Cao et al. 2019 (LDAM-DRW, Sec. 4) that the CIFAR-LT literature shares: exp keeps
# int(n_max * IF ** (-i / (C - 1))) images of class i; step keeps n_max for half the classes and int(n_max / IF) for
# the rest. Totals such as 12,406 (CIFAR-10-LT) and 10,847 (CIFAR-100-LT) at IF 100 are the sizes papers report.

README_C10_IF200 = [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25]


@pytest.mark.parametrize("n_max, num_classes, factor, total, smallest", [
    (5000, 10, 10, 20431, 500), (5000, 10, 50, 13996, 100), (5000, 10, 100, 12406, 50), (5000, 10, 200, 11203, 25),
    (500, 100, 10, 19573, 50), (500, 100, 50, 12608, 10), (500, 100, 100, 10847, 5), (500, 100, 200, 9502, 2),
])
def test_exp_totals_of_cifar10_and_cifar100(n_max, num_classes, factor, total, smallest):
    counts = long_tail_counts(n_max, num_classes, "exp", factor)
    assert len(counts) == num_classes and counts[0] == n_max
    assert sum(counts) == total and min(counts) == counts[-1] == smallest


def test_readme_example_cifar10_if200():
    assert long_tail_counts(5000, 10, "exp", 200) == README_C10_IF200


def test_exp_profile_is_non_increasing():
    counts = long_tail_counts(500, 100, "exp", 100)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


@pytest.mark.parametrize("n_max, num_classes, factor, counts", [
    (5000, 10, 10, [5000] * 5 + [500] * 5), (5000, 10, 100, [5000] * 5 + [50] * 5),
    (500, 100, 100, [500] * 50 + [5] * 50), (500, 100, 200, [500] * 50 + [2] * 50),
    (500, 100, 3, [500] * 50 + [166] * 50),  # 500 / 3 rounds down
])
def test_step_profile(n_max, num_classes, factor, counts):
    assert long_tail_counts(n_max, num_classes, "step", factor) == counts


@pytest.mark.parametrize("imb_type", [None, "exp", "step"])
def test_imbalance_factor_one_is_balanced(imb_type):
    assert long_tail_counts(500, 100, imb_type, 1) == [500] * 100


def test_none_is_balanced_whatever_the_factor():
    assert long_tail_counts(5000, 10, None, 100) == [5000] * 10


@pytest.mark.parametrize("imb_type", [None, "exp", "step"])
@pytest.mark.parametrize("factor", [0.5, 0, -10])
def test_factor_below_one_is_refused(imb_type, factor):
    with pytest.raises(ValueError, match=">= 1"):
        long_tail_counts(5000, 10, imb_type, factor)


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="exp"):
        long_tail_counts(5000, 10, "linear", 10)


# ---------------------------------------------------------------- draw_splits

TARGETS = np.repeat(np.arange(4), 20)[np.random.default_rng(3).permutation(80)]


def test_draw_splits_counts_disjoint_and_sorted():
    counts = [15, 10, 5, 1]
    splits = draw_splits(TARGETS, counts, val_per_class=4, seed=0)
    train, val = splits["train"], splits["val"]
    assert np.bincount(TARGETS[train], minlength=4).tolist() == counts
    assert np.bincount(TARGETS[val], minlength=4).tolist() == [4, 4, 4, 4]
    assert not set(train.tolist()) & set(val.tolist())
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())


def test_draw_splits_is_seeded():
    counts = [15, 10, 5, 1]
    a = draw_splits(TARGETS, counts, 4, seed=0)
    b = draw_splits(TARGETS, counts, 4, seed=0)
    c = draw_splits(TARGETS, counts, 4, seed=1)
    assert np.array_equal(a["train"], b["train"]) and np.array_equal(a["val"], b["val"])
    assert not np.array_equal(a["train"], c["train"])


def test_draw_splits_refuses_too_many():
    with pytest.raises(ValueError, match="class 0"):
        draw_splits(TARGETS, [17, 1, 1, 1], val_per_class=4, seed=0)


# ---------------------------------------------------------------- CIFAR10LT / CIFAR100LT on generated data
# conftest's cifar_root: CIFAR-10 with 100 train / 20 test images per class, CIFAR-100 with 30 / 4

def _rows(dataset) -> list[bytes]:
    return [image.tobytes() for image in dataset.data]


def _full_labels(root, cls, train: bool) -> dict[bytes, int]:
    full = cls(str(root), train=train, download=False)
    return {image.tobytes(): label for image, label in zip(full.data, full.targets)}


def test_cifar10lt_exp_counts_and_labels(cifar_root):
    train = CIFAR10LT(str(cifar_root), train=True, download=False, imb_type="exp", imbalance_factor=10)
    expected = long_tail_counts(100, 10, "exp", 10)
    assert expected == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]  # int(100 * 0.1 ** (i / 9))
    assert train.num_per_cls == dict(enumerate(expected))
    assert len(train) == len(train.data) == len(train.targets) == sum(expected)
    assert train.data.shape[1:] == (32, 32, 3) and train.data.dtype == np.uint8
    # every kept image keeps its own label
    labels = _full_labels(cifar_root, CIFAR10, train=True)
    assert [labels[row] for row in _rows(train)] == list(train.targets)
    # and __getitem__ agrees with data/targets
    image, label = train[len(train) - 1]
    assert np.array_equal(np.asarray(image), train.data[-1]) and label == train.targets[-1]


def test_cifar10lt_step_and_balanced_counts(cifar_root):
    step = CIFAR10LT(str(cifar_root), download=False, imb_type="step", imbalance_factor=10)
    assert list(step.num_per_cls.values()) == [100] * 5 + [10] * 5
    balanced = CIFAR10LT(str(cifar_root), download=False, imb_type=None, imbalance_factor=1)
    assert list(balanced.num_per_cls.values()) == [100] * 10


def test_cifar100lt_exp_counts(cifar_root):
    train = CIFAR100LT(str(cifar_root), download=False, imb_type="exp", imbalance_factor=10)
    expected = long_tail_counts(30, 100, "exp", 10)
    assert expected[0] == 30 and expected[-1] == 3
    assert train.num_per_cls == dict(enumerate(expected))
    labels = _full_labels(cifar_root, CIFAR100, train=True)
    assert [labels[row] for row in _rows(train)] == list(train.targets)


def test_same_seed_same_images_other_seed_other_images(cifar_root):
    kwargs = dict(download=False, imb_type="exp", imbalance_factor=10)
    a = CIFAR10LT(str(cifar_root), seed=0, **kwargs)
    b = CIFAR10LT(str(cifar_root), seed=0, **kwargs)
    c = CIFAR10LT(str(cifar_root), seed=1, **kwargs)
    assert np.array_equal(a.data, b.data) and a.targets == b.targets
    assert a.num_per_cls == c.num_per_cls  # same profile...
    assert not np.array_equal(a.data, c.data)  # ...other images
    assert set(_rows(a)) != set(_rows(c))


def test_no_global_random_state_is_touched(cifar_root):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    CIFAR10LT(str(cifar_root), download=False, imb_type="exp", imbalance_factor=10, seed=5, split="train",
              val_per_class=5)
    CIFAR10LT(str(cifar_root), download=False, imb_type="exp", imbalance_factor=10, seed=5, split="val",
              val_per_class=5)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state


def test_val_split_is_balanced_and_disjoint_from_train(cifar_root):
    kwargs = dict(download=False, imb_type="exp", imbalance_factor=10, seed=0, val_per_class=5)
    train = CIFAR10LT(str(cifar_root), split="train", **kwargs)
    val = CIFAR10LT(str(cifar_root), split="val", **kwargs)
    test = CIFAR10LT(str(cifar_root), split="test", **kwargs)
    assert val.num_per_cls == {c: 5 for c in range(10)}
    # the validation images come out first: the head class trains on n_max = 100 - 5
    assert train.num_per_cls == dict(enumerate(long_tail_counts(95, 10, "exp", 10)))
    assert train.num_per_cls[0] == 95
    train_rows, val_rows, test_rows = set(_rows(train)), set(_rows(val)), set(_rows(test))
    assert len(val_rows) == 50 and len(train_rows) == len(train)
    assert not train_rows & val_rows
    assert not val_rows & test_rows
    # validation images are training images of the right class
    labels = _full_labels(cifar_root, CIFAR10, train=True)
    assert [labels[row] for row in _rows(val)] == list(val.targets)


def test_val_split_with_a_balanced_profile_leaves_n_max_minus_val(cifar_root):
    kwargs = dict(download=False, imb_type=None, imbalance_factor=1, seed=0, val_per_class=5)
    train = CIFAR100LT(str(cifar_root), split="train", **kwargs)
    val = CIFAR100LT(str(cifar_root), split="val", **kwargs)
    assert train.num_per_cls == {c: 25 for c in range(100)}
    assert val.num_per_cls == {c: 5 for c in range(100)}
    assert not set(_rows(train)) & set(_rows(val))


def test_test_split_is_whole_and_balanced(cifar_root):
    kwargs = dict(download=False, imb_type="exp", imbalance_factor=100, seed=3, val_per_class=5)
    test = CIFAR10LT(str(cifar_root), train=False, **kwargs)
    assert test.split == "test"
    assert test.num_per_cls == {c: 20 for c in range(10)}
    labels = _full_labels(cifar_root, CIFAR10, train=False)
    assert set(_rows(test)) == set(labels)
    test100 = CIFAR100LT(str(cifar_root), split="test", **kwargs)
    assert test100.num_per_cls == {c: 4 for c in range(100)}


@pytest.mark.parametrize("cls, train_files", [(CIFAR10LT, [f"data_batch_{i}" for i in range(1, 6)]),
                                              (CIFAR100LT, ["train"])])
def test_the_test_split_needs_the_test_file_alone(cifar_root, tmp_path, cls, train_files):
    """A released checkpoint is evaluated where only CIFAR's test file is at hand; the training split still needs
    its files."""
    folder = tmp_path / cls.base_folder
    shutil.copytree(cifar_root / cls.base_folder, folder)
    for name in train_files:
        (folder / name).unlink()
    test = cls(str(tmp_path), split="test", download=False)
    assert sum(test.num_per_cls.values()) == len(test.data) > 0
    with pytest.raises(DatasetNotFoundError):
        cls(str(tmp_path), split="train", download=False)


def test_unknown_split_is_refused(cifar_root):
    with pytest.raises(ValueError, match="split"):
        CIFAR10LT(str(cifar_root), split="holdout", download=False)


@pytest.mark.parametrize("cls", [CIFAR10LT, CIFAR100LT])
def test_missing_data_names_the_folder(tmp_path, cls):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        cls(str(root), download=False)
    message = str(info.value)
    assert str(root.resolve() / cls.base_folder) in message
    assert "download" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("kwargs,fix", [({"imbalance_factor": 31}, "DATASET.imbalance_factor <= 30"),
                                        ({"imbalance_factor": 10, "val_per_class": 25}, "<= 5"),
                                        ({"imbalance_factor": 1, "val_per_class": 30}, "lower DATASET.val_per_class")])
def test_a_profile_that_empties_a_class_is_a_config_error(cifar_root, kwargs, fix):
    from config import ConfigError

    # 30 training images per class: IF 31 would give the smallest class int(30 / 31) = 0 images
    with pytest.raises(ConfigError, match="would get no training image") as info:
        CIFAR100LT(str(cifar_root), download=False, imb_type="exp", **kwargs)
    assert fix in str(info.value) and "\n" not in str(info.value)
    assert min(CIFAR100LT(str(cifar_root), download=False, imb_type="exp", imbalance_factor=30).num_per_cls.values()) == 1


# ---------------------------------------------------------------- DATASET.datadir: the seed's layout and the plain one

def _dataset_cfg(datadir, name: str = "CIFAR10LT", download: bool = False):
    from conftest import ROOT
    from config import load_config

    cfg = load_config(ROOT / "configs.yaml", ["DATASET.name", name, "DATASET.datadir", str(datadir),
                                              "DATASET.download", str(download).lower()])
    return cfg.DATASET


@pytest.mark.parametrize("name,cls,seed_folder", [("CIFAR10LT", CIFAR10, "CIFAR10"),
                                                  ("CIFAR100LT", CIFAR100, "CIFAR100")])
def test_datadir_in_the_seed_layout_is_read_from_its_subfolder(cifar_root, tmp_path, name, cls, seed_folder):
    import shutil

    from datasets import build_splits

    # the seed keeps each data set in DATASET.datadir/CIFAR10 (or CIFAR100), beside the other
    shutil.copytree(cifar_root / cls.base_folder, tmp_path / seed_folder / cls.base_folder)
    splits = build_splits(_dataset_cfg(tmp_path, name), 0)
    assert splits["train"].root == str((tmp_path / seed_folder).resolve())
    assert len(splits["test"]) == len(cls(str(cifar_root), train=False))


def test_datadir_that_holds_the_data_itself_is_still_read(cifar_root):
    from datasets import build_splits

    assert build_splits(_dataset_cfg(cifar_root), 0)["train"].root == str(cifar_root.resolve())


def test_the_seed_layout_wins_when_datadir_holds_both(cifar_root, tmp_path):
    import shutil

    from datasets import build_splits

    for folder in (tmp_path, tmp_path / "CIFAR10"):
        shutil.copytree(cifar_root / CIFAR10.base_folder, folder / CIFAR10.base_folder)
    assert build_splits(_dataset_cfg(tmp_path), 0)["train"].root == str((tmp_path / "CIFAR10").resolve())


def test_download_lands_in_the_seed_layout(cifar_root, tmp_path, monkeypatch):
    import shutil

    import torchvision.datasets.cifar as tv_cifar

    from datasets import build_splits

    landed = []

    def fake_download(url, download_root, **kwargs):  # no network here: "download" the generated files
        landed.append(download_root)
        shutil.copytree(cifar_root / CIFAR10.base_folder, f"{download_root}/{CIFAR10.base_folder}")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    build_splits(_dataset_cfg(tmp_path, download=True), 0)
    assert landed and all(root == str((tmp_path / "CIFAR10").resolve()) for root in landed)
    assert (tmp_path / "CIFAR10" / CIFAR10.base_folder).is_dir() and not (tmp_path / CIFAR10.base_folder).exists()


@pytest.mark.parametrize("download", [False, True])
def test_missing_data_names_every_folder_looked_in(tmp_path, monkeypatch, download):
    import torchvision.datasets.cifar as tv_cifar

    from datasets import build_splits

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DatasetNotFoundError) as info:
        build_splits(_dataset_cfg(tmp_path, download=download), 0)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path.resolve() / "CIFAR10" / CIFAR10.base_folder) in message
    assert str(tmp_path.resolve() / CIFAR10.base_folder) in message
    assert ("no network" in message) == download


# ---------------------------------------------------------------- DATASET.train_subset: a draw made elsewhere

def _subset_file(tmp_path, indices, extra: str = "") -> str:
    path = tmp_path / "subset.txt"
    path.write_text("# written by another codebase\n\n" + "".join(f"{i}\n" for i in indices) + extra)
    return str(path)


def test_train_subset_trains_on_exactly_the_listed_images(cifar_root, tmp_path):
    full = CIFAR10(str(cifar_root), train=True, download=False)
    indices = np.random.default_rng(0).choice(len(full.data), size=137, replace=False)
    train = CIFAR10LT(str(cifar_root), split="train", download=False, subset=_subset_file(tmp_path, indices))
    assert sorted(_rows(train)) == sorted(full.data[i].tobytes() for i in indices)
    labels = _full_labels(cifar_root, CIFAR10, train=True)
    assert [labels[row] for row in _rows(train)] == list(train.targets)
    expected = np.bincount(np.asarray(full.targets)[indices], minlength=10)
    assert train.num_per_cls == {c: int(n) for c, n in enumerate(expected)}


def test_train_subset_val_split_comes_from_outside_it_and_leaves_it_whole(cifar_root, tmp_path):
    full = CIFAR10(str(cifar_root), train=True, download=False)
    indices = [i for i, label in enumerate(full.targets) if i % (label + 2) == 0]  # a long-ish tail
    path = _subset_file(tmp_path, indices)
    kwargs = dict(download=False, subset=path, seed=3)
    alone = CIFAR10LT(str(cifar_root), split="train", **kwargs)
    train = CIFAR10LT(str(cifar_root), split="train", val_per_class=5, **kwargs)
    val = CIFAR10LT(str(cifar_root), split="val", val_per_class=5, **kwargs)
    assert _rows(train) == _rows(alone)  # holding out validation images takes none of the subset's
    assert val.num_per_cls == {c: 5 for c in range(10)}
    assert not set(_rows(val)) & set(_rows(train))


@pytest.mark.parametrize("content, named", [
    ("3\nseven\n", ["line 4", "'seven'", "whole number"]),  # two header lines come first
    ("3\n1000\n", ["line 4", "1000", "out of range", "1000 images"]),
    ("3\n5\n3\n", ["line 5", "index 3", "twice", "line 3"]),
    ("", ["lists no image index"]),
])
def test_a_bad_train_subset_file_is_one_line_naming_file_and_line(cifar_root, tmp_path, content, named):
    path = tmp_path / "subset.txt"
    path.write_text("# header\n\n" + content)
    with pytest.raises(ConfigError) as info:
        CIFAR10LT(str(cifar_root), split="train", download=False, subset=str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and all(part in message for part in named), message


def test_a_missing_train_subset_file_is_one_line(cifar_root, tmp_path):
    with pytest.raises(ConfigError, match=r"DATASET.train_subset .*nowhere.txt: cannot read it"):
        CIFAR10LT(str(cifar_root), split="train", download=False, subset=str(tmp_path / "nowhere.txt"))


def test_train_subset_reaches_the_data_through_the_config(cifar_root, tmp_path):
    path = _subset_file(tmp_path, range(0, 1000, 7))
    cfg = load_config("configs.yaml", ["DATASET.datadir", str(cifar_root), "DATASET.download", "false",
                                       "DATASET.train_subset", path, "DATASET.val_per_class", "2"])
    splits = build_splits(cfg.DATASET, 0)
    assert len(splits["train"]) == len(range(0, 1000, 7)) and len(splits["val"]) == 20


# ---------------------------------------------------------------- tools/ldam_subset.py

def _ldam_subset(cifar_root, tmp_path, seed: int, *args: str) -> np.ndarray:
    out = tmp_path / f"ldam{seed}.txt"
    ldam_subset.main(["CIFAR10LT", str(cifar_root), "--imbalance-factor", "10", "--seed", str(seed), "--out", str(out),
                      *args])
    return read_subset(str(out), 1000)


def test_ldam_subset_follows_the_profile_and_its_seed(cifar_root, tmp_path):
    labels = np.asarray(CIFAR10(str(cifar_root), train=True, download=False).targets)
    drawn = _ldam_subset(cifar_root, tmp_path, 0)
    assert np.bincount(labels[drawn]).tolist() == long_tail_counts(100, 10, "exp", 10)
    assert np.array_equal(drawn, _ldam_subset(cifar_root, tmp_path, 0))
    assert not np.array_equal(drawn, _ldam_subset(cifar_root, tmp_path, 1))
    step = _ldam_subset(cifar_root, tmp_path, 0, "--imbalance-type", "step")
    assert np.bincount(labels[step]).tolist() == long_tail_counts(100, 10, "step", 10)


def test_ldam_subset_shuffles_each_class_with_numpy_seeded_once(cifar_root, tmp_path):
    """The draw LDAM-DRW's imbalance_cifar.py makes (checked by hand against its code on real CIFAR): after
    np.random.seed(s), class c's images are the first n_c of np.random.shuffle applied to its indices in turn."""
    labels = np.asarray(CIFAR10(str(cifar_root), train=True, download=False).targets)
    np.random.seed(4)
    expected = []
    for cls, count in enumerate(long_tail_counts(100, 10, "exp", 10)):
        indices = np.where(labels == cls)[0]
        np.random.shuffle(indices)
        expected += indices[:count].tolist()
    assert _ldam_subset(cifar_root, tmp_path, 4).tolist() == sorted(expected)


def test_a_train_subset_that_leaves_too_few_images_for_validation_is_one_line(cifar_root, tmp_path):
    full = CIFAR10(str(cifar_root), train=True, download=False)
    whole_class = [i for i, label in enumerate(full.targets) if label == 0 or i % 10 == 0]  # all of class 0
    with pytest.raises(ConfigError) as info:
        CIFAR10LT(str(cifar_root), split="train", download=False, val_per_class=5,
                  subset=_subset_file(tmp_path, whole_class))
    message = str(info.value)
    assert "\n" not in message and "0 images of class 0" in message and "DATASET.val_per_class <= 0" in message


# ---------------------------------------------------------------- DATASET.draw ldam: LDAM-DRW's images, no file

def _ldam_draw_splits(cifar_root, seed: int, val_per_class: int, *overrides: str) -> dict:
    cfg = load_config("configs.yaml", ["DATASET.datadir", str(cifar_root), "DATASET.download", "false",
                                       "DATASET.draw", "ldam", "DATASET.imbalance_type", "exp",
                                       "DATASET.imbalance_factor", "10", "DATASET.val_per_class", str(val_per_class),
                                       "DEFAULT.seed", str(seed), *overrides])
    check(cfg)
    return build_splits(cfg.DATASET, data_seed(cfg))


@pytest.mark.parametrize("seed", [0, 3])
def test_draw_ldam_trains_on_the_images_tools_ldam_subset_writes(cifar_root, tmp_path, seed):
    drawn = _ldam_subset(cifar_root, tmp_path, seed)
    full = np.asarray(CIFAR10(str(cifar_root), train=True, download=False).targets)
    splits = _ldam_draw_splits(cifar_root, seed, 0)
    # the split keeps the training images in index order: its labels and pixels are the file's images'
    assert splits["train"].targets == full[drawn].tolist()
    assert np.array_equal(splits["train"].data, CIFAR10(str(cifar_root), train=True, download=False).data[drawn])


def test_draw_ldam_with_validation_is_the_tables_protocol(cifar_root, tmp_path):
    """As the full-length table was made: the draw's file less the last `val` lines of class 0 (which the draw keeps
    whole), then DATASET.val_per_class from outside it; the same train and val splits without the file."""
    val = 5
    drawn = _ldam_subset(cifar_root, tmp_path, 0)
    labels = np.asarray(CIFAR10(str(cifar_root), train=True, download=False).targets)
    assert (labels[drawn] == 0).sum() == (labels == 0).sum()  # the draw keeps all of class 0
    held = drawn[labels[drawn] == 0][-val:]
    by_file = _subset_file(tmp_path, [i for i in drawn if i not in held])
    cfg = load_config("configs.yaml", ["DATASET.datadir", str(cifar_root), "DATASET.download", "false",
                                       "DATASET.train_subset", by_file, "DATASET.val_per_class", str(val)])
    expected = build_splits(cfg.DATASET, 0)
    found = _ldam_draw_splits(cifar_root, 0, val)
    for split in ("train", "val"):
        assert found[split].targets == expected[split].targets
        assert np.array_equal(found[split].data, expected[split].data)
    assert found["train"].num_per_cls[0] == (labels == 0).sum() - val and len(found["val"]) == 10 * val


def test_draw_ldam_leaves_the_global_numpy_generator_alone(cifar_root):
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    _ldam_draw_splits(cifar_root, 0, 0)
    assert np.random.rand() == expected


def test_draw_is_refused_where_it_has_no_effect_and_unknown_draws_are_named(cifar_root, tmp_path):
    with pytest.raises(ConfigError, match=r"DATASET.draw .*no effect.*DATASET.train_subset null"):
        load_config("configs.yaml", ["DATASET.draw", "ldam", "DATASET.train_subset", _subset_file(tmp_path, [1, 2])])
    with pytest.raises(ConfigError, match=r"DATASET.draw 'cui' is not valid; choose one of: torch, ldam"):
        check(load_config("configs.yaml", ["DATASET.draw", "cui"]))


# ---------------------------------------------------------------- DATASET.verify: present files with other md5s

def _one_file_rewritten(tmp_path, monkeypatch) -> tuple[Path, str]:
    """Generated CIFAR-10 whose files torchvision's md5 lists accept, but for data_batch_3, as if it were written
    anew: its path and its md5."""
    from fake_cifar import make_cifar

    from torchvision.datasets.utils import calculate_md5

    make_cifar(tmp_path, 10, train_per_class=20, test_per_class=2)
    folder = tmp_path / CIFAR10.base_folder
    md5 = {path.name: calculate_md5(str(path)) for path in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, "train_list", [[name, "0" * 32 if name == "data_batch_3" else md5[name]]
                                                for name, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[name, md5[name]] for name, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5[CIFAR10.meta["filename"]]})
    return folder / "data_batch_3", md5["data_batch_3"]


@pytest.mark.parametrize("download", [False, True])
def test_present_files_with_another_md5_are_refused_naming_file_md5s_and_switch(tmp_path, monkeypatch, download):
    import torchvision.datasets.cifar as tv_cifar

    from datasets import build_splits

    rewritten, found = _one_file_rewritten(tmp_path, monkeypatch)
    downloads = []
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", lambda *args, **kwargs: downloads.append(args))
    with pytest.raises(ConfigError) as info:
        build_splits(_dataset_cfg(tmp_path, download=download), 0)
    message = str(info.value)
    assert "\n" not in message and str(rewritten) in message
    assert f"its md5 is {found}, not {'0' * 32}" in message and "DATASET.verify false" in message
    assert not downloads  # nothing fetched over the files that are there
    # the test split reads the test file alone, whose md5 is torchvision's
    assert len(build_splits(_dataset_cfg(tmp_path, download=download), 0, ("test",))["test"]) == 20


def test_verify_false_reads_the_files_that_are_there(tmp_path, monkeypatch):
    from datasets import build_splits

    _one_file_rewritten(tmp_path, monkeypatch)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": "1" * 32})  # the meta file is read too
    cfg = load_config("configs.yaml", ["DATASET.datadir", str(tmp_path), "DATASET.download", "false",
                                       "DATASET.verify", "false"])
    splits = build_splits(cfg.DATASET, 0)
    assert len(splits["train"]) == 200 and splits["train"].classes == [f"class{c}" for c in range(10)]
