"""The list benchmarks (ImageNetLT, PlacesLT, iNat2018): reading and checking the split files, their config keys,
both loaders, and main.py end to end on a generated ImageNet-LT-format data set."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import OUTPUTS, ROOT, check_ok, read, run_main, run_script
from config import LIST_BENCHMARKS, apply_overrides, check, load_config
from datasets import LIST_DATASETS, ListLT, build_loaders, build_splits, image_side
from datasets.list_loaders import CachedLoader, ensure_cache, random_boxes
from datasets.lists import check_size, read_list
from errors import ConfigError, DatasetNotFoundError
from fake_lists import LIST_RUN, LONG_TAIL, make_lists
from metrics import class_groups


@pytest.fixture(scope="module")
def imagenet_lt(tmp_path_factory) -> Path:
    """ImageNet-LT's format: 8 classes, 2 many-shot, 3 medium and 3 few-shot, val 5 and test 10 per class."""
    root = tmp_path_factory.mktemp("imagenet_lt")
    make_lists(root)
    return root


def dataset_cfg(root: Path, *overrides: str):
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.datadir", str(root), *LIST_RUN[:8], *overrides])
    check(cfg)
    return cfg


def quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ the split files
def test_config_names_the_benchmarks_datasets_reads():
    assert LIST_BENCHMARKS == tuple(LIST_DATASETS)


def test_published_sizes_pass_and_the_table_is_the_issues():
    sizes = {name: (spec.sizes["train"], spec.sizes["val"], spec.sizes.get("test"), spec.num_classes)
             for name, spec in LIST_DATASETS.items()}
    assert sizes == {"ImageNetLT": (115_846, 20_000, 50_000, 1_000), "PlacesLT": (62_500, 7_300, 36_500, 365),
                     "iNat2018": (437_513, 24_426, None, 8_142)}
    assert LIST_DATASETS["iNat2018"].files["test"] == "val"  # iNat 2018 tests on its val list, as the literature
    for name, spec in LIST_DATASETS.items():
        for list_name, size in spec.sizes.items():
            check_size(name, list_name, Path("x.txt"), size, strict=True)
        check_size(name, "train", Path("x.txt"), spec.num_classes, strict=True, what="classes")


def test_splits_read_the_lists_with_counts_from_the_train_list(imagenet_lt):
    splits = quiet(build_splits, dataset_cfg(imagenet_lt).DATASET, 0)
    assert set(splits) == {"train", "val", "test"}
    assert list(splits["train"].num_per_cls.values()) == LONG_TAIL
    assert list(splits["val"].num_per_cls.values()) == [5] * 8
    assert list(splits["test"].num_per_cls.values()) == [10] * 8
    assert splits["train"].classes == [f"class{c:03d}" for c in range(8)]
    assert splits["train"].root == str(imagenet_lt.resolve())
    assert image_side(splits["train"]) == 32
    image, label = splits["train"][0]
    assert image.size == (40, 35) and image.mode == "RGB" and 0 <= label < 8


def test_listdir_holds_the_lists_apart_from_the_images(tmp_path):
    make_lists(tmp_path / "images", "PlacesLT", counts=[3, 2], val_per_class=1, test_per_class=1,
               listdir=tmp_path / "lists")
    cfg = dataset_cfg(tmp_path / "images", "DATASET.name", "PlacesLT", "DATASET.listdir", str(tmp_path / "lists"))
    splits = quiet(build_splits, cfg.DATASET, 0)
    assert len(splits["train"]) == 5 and splits["train"].list_file == tmp_path / "lists" / "Places_LT_train.txt"


def test_inat_tests_on_its_val_list_and_has_no_val_split_apart(tmp_path):
    """iNat 2018's val list is its test list: nothing may be chosen on it as if it were held out."""
    make_lists(tmp_path, "iNat2018", counts=[3, 2], val_per_class=2)
    splits = quiet(build_splits, dataset_cfg(tmp_path, "DATASET.name", "iNat2018").DATASET, 0)
    assert set(splits) == {"train", "test"} and splits["test"].list_file.name == "iNaturalist18_val.txt"


def test_inat_selects_on_its_test_list_and_says_so_and_chooses_no_tau_there(tmp_path):
    """The checkpoint is selected on the list reported, so its results say "test bcr"; evaluate.py gives every tau
    its own results rather than choose one on the test images."""
    make_lists(tmp_path / "data", "iNat2018", counts=LONG_TAIL, val_per_class=5)
    run = [*LIST_RUN, "DATASET.name", "iNat2018", "TRAIN.epochs", "1", "DATASET.loader", "classic",
           "TRAIN.mixed_precision", "no", "DEFAULT.exp_name", "CE-IF_1"]
    check_ok(run_main(tmp_path / "data", tmp_path, *run))
    folder = tmp_path / "iNat2018" / "resnet32" / "CE-IF_1"
    assert read(folder / "results-seed0.json")["selected_by"] == "test bcr"
    check_ok(run_script("evaluate.py", tmp_path / "data", str(folder), "--tau-norm", "0,1", "--logit-adjust", "1"))
    for method, taus in (("tau_norm", ("0", "1")), ("logit_adjust", ("1",))):
        assert not (folder / "evaluation" / method).exists()
        for tau in taus:
            post_hoc = read(folder / "evaluation" / f"{method}_tau{tau}" / "results-seed0.json")["post_hoc"]
            assert post_hoc["chosen_on"] is None and post_hoc["tau"] == float(tau)


def test_a_line_may_hold_spaces_in_its_path_and_blank_lines_are_skipped(tmp_path):
    (tmp_path / "l.txt").write_text("train/a b/x.jpg 3\n\ntrain/c/y.JPEG 0  \n")
    assert read_list(tmp_path / "l.txt") == (["train/a b/x.jpg", "train/c/y.JPEG"], [3, 0])


def test_a_missing_list_names_the_file_and_the_key(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"no list file .*ImageNet_LT_train\.txt: .*DATASET\.listdir"):
        ListLT("ImageNetLT", tmp_path, "train")


@pytest.mark.parametrize("line", ["train/a/x.jpg", "train/a/x.jpg seven", "train/a/x.jpg 1.5"])
def test_a_line_that_does_not_parse_names_file_and_line(tmp_path, line):
    (tmp_path / "ImageNet_LT_train.txt").write_text(f"train/a/w.jpg 0\n{line}\n")
    with pytest.raises(ConfigError, match=r"ImageNet_LT_train\.txt:2: .* is not `relative/path label`"):
        ListLT("ImageNetLT", tmp_path, "train", strict_sizes=False)


def test_train_labels_with_a_gap_are_refused(tmp_path):
    (tmp_path / "ImageNet_LT_train.txt").write_text("a.jpg 0\nb.jpg 2\nc.jpg 3\n")
    with pytest.raises(ConfigError, match=r"labels must be 0\.\.C-1 with C = 4 .* 1 class\(es\) have no line: 1"):
        quiet(ListLT, "ImageNetLT", tmp_path, "train", strict_sizes=False)


@pytest.mark.parametrize("label, message", [(-1, r"ImageNet_LT_test\.txt:8: label -1 is negative"),
                                            (8, r"ImageNet_LT_test\.txt: label\(s\) 8 outside 0\.\.7")])
def test_a_test_label_outside_the_train_classes_is_refused(imagenet_lt, tmp_path, label, message):
    lines = (imagenet_lt / "ImageNet_LT_test.txt").read_text().splitlines()
    lines[7] = lines[7].rsplit(maxsplit=1)[0] + f" {label}"
    (tmp_path / "ImageNet_LT_test.txt").write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=message):
        quiet(ListLT, "ImageNetLT", imagenet_lt, "test", listdir=tmp_path, strict_sizes=False, num_classes=8)


def test_missing_images_are_counted_and_the_first_named_before_training(imagenet_lt, tmp_path):
    lines = (imagenet_lt / "ImageNet_LT_val.txt").read_text().splitlines()
    lines += [f"val/class000/gone{i}.jpg 0" for i in range(5)]
    (tmp_path / "ImageNet_LT_val.txt").write_text("\n".join(lines))
    with pytest.raises(DatasetNotFoundError, match=r"^5 of the 45 images in .*ImageNet_LT_val\.txt are missing under "
                       r"DATASET\.datadir .*\(e\.g\. val/class000/gone0\.jpg, val/class000/gone1\.jpg, "
                       r"val/class000/gone2\.jpg and 2 more\)"):
        quiet(ListLT, "ImageNetLT", imagenet_lt, "val", listdir=tmp_path, strict_sizes=False, num_classes=8)


def test_a_size_that_differs_stops_the_run_naming_file_both_counts_and_the_key(imagenet_lt):
    with pytest.raises(ConfigError) as error:
        ListLT("ImageNetLT", imagenet_lt, "train")
    message = str(error.value)
    assert "\n" not in message
    assert "ImageNet_LT_train.txt gives 376 lines; ImageNetLT's published train list has 115,846" in message
    assert "DATASET.strict_sizes false" in message


def test_strict_sizes_false_warns_instead(imagenet_lt):
    with pytest.warns(UserWarning) as records:
        ListLT("ImageNetLT", imagenet_lt, "train", strict_sizes=False)
    assert [str(r.message).split(" gives ")[1] for r in records] == [
        "376 lines; ImageNetLT's published train list has 115,846 (DATASET.strict_sizes false: going on)",
        "8 classes; ImageNetLT's published train list has 1,000 (DATASET.strict_sizes false: going on)"]


def test_a_class_count_that_differs_is_a_size_error_too(tmp_path):
    spec = LIST_DATASETS["PlacesLT"]
    lines = [f"p{i}.jpg {i % 364}" for i in range(spec.sizes["train"])]  # the published length, 364 classes
    (tmp_path / "Places_LT_train.txt").write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=r"gives 364 classes; PlacesLT's published train list has 365"):
        ListLT("PlacesLT", tmp_path, "train")


# -------------------------------------------------------------------------------- many / medium / few, real counts
def test_many_medium_few_on_places_lt_real_counts():
    """The per-class counts of the real Places_LT_train.txt (tests/fixtures; the list is not kept here): 62,500 images
    in 365 classes, 4,980 to 5 a class, split 131 / 163 / 71 as the literature reports."""
    counts = json.loads((ROOT / "tests" / "fixtures" / "places_lt_train_counts.json").read_text())["num_per_cls"]
    assert (len(counts), sum(counts), max(counts), min(counts)) == (365, 62_500, 4_980, 5)
    groups = class_groups(counts)
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [131, 163, 71]
    # the edges: 100 and 20 images are medium, 101 many, 19 few
    assert all(counts[c] > 100 for c in groups["many"]) and all(counts[c] < 20 for c in groups["few"])
    assert {100, 20} <= {counts[c] for c in groups["medium"]}


def test_many_medium_few_on_the_generated_long_tail():
    groups = class_groups(LONG_TAIL)
    assert (groups["many"], groups["medium"], groups["few"]) == ([0, 1], [2, 3, 4], [5, 6, 7])


# ---------------------------------------------------------------------------------------------------- config keys
@pytest.mark.parametrize("overrides, named", [
    (["DATASET.listdir", "/lists"], "DATASET.listdir /lists has no effect on CIFAR10LT"),
    (["DATASET.strict_sizes", "false"], "DATASET.strict_sizes false has no effect on CIFAR10LT"),
    (["DATASET.name", "ImageNetLT", "DATASET.val_per_class", "5"], "selects on its published val list"),
    (["DATASET.name", "ImageNetLT", "DATASET.imbalance_type", "exp"], "train list fixes the class counts"),
    (["DATASET.name", "ImageNetLT", "DATASET.loader", "classic", "DATASET.cache_dir", "/c"], "DATASET.cache_dir"),
])
def test_keys_without_effect_are_refused(overrides, named):
    with pytest.raises(ConfigError, match="has no effect") as error:
        apply_overrides(load_config(ROOT / "configs.yaml"), overrides)
    assert named in str(error.value)


def test_list_keys_and_workers_have_an_effect_on_a_list_benchmark():
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.name", "iNat2018", "DATASET.listdir", "/l",
                                              "DATASET.strict_sizes", "false", "DATASET.cache_dir", "/c",
                                              "DATASET.num_workers", "8", "DATASET.img_size", "224", *LIST_RUN[6:8]])
    check(cfg)


@pytest.mark.parametrize("name, loader, bad", [("ImageNetLT", "fast", "RandomCrop"),
                                               ("ImageNetLT", "fast", "ColorJitter"),
                                               ("CIFAR10LT", "fast", "RandomResizedCrop")])
def test_augmentations_are_checked_per_kind_of_data_set(name, loader, bad):
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.name", name, "DATASET.loader", loader,
                                              "DATASET.aug_info", f"[{bad}]"])
    with pytest.raises(ConfigError, match=bad):
        check(cfg)


def test_color_jitter_passes_with_the_classic_loader():
    augmentations = "[RandomResizedCrop, RandomHorizontalFlip, ColorJitter]"
    check(load_config(ROOT / "configs.yaml", ["DATASET.name", "PlacesLT", "DATASET.loader", "classic",
                                              "DATASET.aug_info", augmentations]))


# ---------------------------------------------------------------------------------------------------------- loaders
def one_process():
    return SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"), gradient_accumulation_steps=1,
                           local_main_process_first=contextlib.nullcontext, print=lambda *a: None)


@pytest.mark.parametrize("loader", ["classic", "fast"])
def test_both_loaders_give_normalised_batches_of_img_size(imagenet_lt, tmp_path, loader):
    cache = ["DATASET.cache_dir", str(tmp_path)] if loader == "fast" else []
    cfg = dataset_cfg(imagenet_lt, "DATASET.loader", loader, "DATASET.num_workers", "0", "DATASET.batch_size", "16",
                      "DATASET.test_batch_size", "32", *cache)
    splits = quiet(build_splits, cfg.DATASET, 0)
    loaders = build_loaders(cfg.DATASET, splits, 0, one_process())
    images, targets = next(iter(loaders["train"]))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and targets.shape == (16,)
    assert -3 < images.mean() < 3 and images.std() > 0.1
    seen = torch.cat([t for _, t in loaders["test"]])
    assert sorted(seen.tolist()) == sorted(splits["test"].targets)  # every test image once, in order
    assert images.is_contiguous(memory_format=torch.channels_last) or loader == "classic"


def test_the_cache_is_written_once_and_rebuilt_when_the_list_changes(imagenet_lt, tmp_path):
    split = quiet(ListLT, "ImageNetLT", imagenet_lt, "val", num_classes=8, strict_sizes=False)
    path = ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None)
    data = np.load(path, mmap_mode="r")
    assert data.shape == (40, 37, 37, 3) and data.dtype == np.uint8
    written = path.stat().st_mtime_ns
    assert ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None) == path
    assert path.stat().st_mtime_ns == written
    # the first image, shorter side to 37 then its centre square: what PIL gives for it
    from PIL import Image
    image = split.open(0).resize((42, 37), Image.Resampling.BILINEAR, reducing_gap=None).crop((2, 0, 39, 37))
    np.testing.assert_array_equal(data[0], np.asarray(image))


def test_partial_cache_files_of_interrupted_decodes_are_removed(imagenet_lt, tmp_path):
    """An interrupted decode leaves its partial file; the next decode removes those whose writer on this machine no
    longer runs, and leaves a running writer's, and another machine's (a shared cache_dir), alone."""
    from datasets.list_loaders import cache_path

    split = quiet(ListLT, "ImageNetLT", imagenet_lt, "val", num_classes=8, strict_sizes=False)
    path = cache_path(tmp_path, split, 37)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, host = int(ended.stdout), socket.gethostname()
    stale = [path.with_name(f"{path.name}.partial{dead}"), path.with_name(f"{path.name}.partial-{host}-{dead}")]
    kept = [path.with_name(f"{path.name}.partial-{host}-{os.getppid()}"),
            path.with_name(f"{path.name}.partial-elsewhere-{dead}")]
    for partial in stale + kept:
        partial.write_bytes(b"half")
    assert ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None) == path
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial" in p.name) == sorted(p.name for p in kept)


def test_random_boxes_fit_the_image_and_follow_random_resized_crop():
    boxes = random_boxes(20_000, 37, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 37).all() and (y2 <= 37).all()
    w, h = x2 - x1, y2 - y1
    assert (w >= 1).all() and (h >= 1).all()
    area = w * h / 37 ** 2
    assert 0.06 < area.min() and area.max() <= 1.0 and 0.45 < area.mean() < 0.6  # scale U(0.08, 1), rounded


def test_cached_training_shards_of_two_processes_cover_the_split_once(imagenet_lt, tmp_path):
    split = quiet(ListLT, "ImageNetLT", imagenet_lt, "val", num_classes=8, strict_sizes=False)
    path = ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None)
    seen = []
    for rank in (0, 1):
        loader = CachedLoader(path, list(range(len(split))), 8, 32, (0.5,) * 3, (0.25,) * 3, device="cpu",
                              train=True, crop=True, flip=True, seed=3, rank=rank, world_size=2)
        loader.set_epoch(1)
        batches = [targets.tolist() for _, targets in loader]
        assert [len(b) for b in batches] == [8, 8, 4]
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(40))


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("loader", ["classic", "fast"])
def test_main_trains_a_generated_imagenet_lt_end_to_end(imagenet_lt, tmp_path, loader):
    cache = ["DATASET.cache_dir", str(tmp_path / "cache")] if loader == "fast" else []
    proc = run_main(imagenet_lt, tmp_path, *LIST_RUN, "DATASET.loader", loader, "TRAIN.epochs", "2",
                    "OPTIMIZER.lr", "0.05", *cache)
    check_ok(proc)
    folder = tmp_path / "ImageNetLT" / "resnet32" / "CrossEntropyLoss"
    assert {p.name for p in folder.iterdir()} == OUTPUTS
    assert "376 training images" in proc.stdout and "checkpoint by val bcr" in proc.stdout
    results = read(folder / "results-seed0.json")
    assert results["selected_by"] == "val bcr" and results["num_per_cls"] == LONG_TAIL
    for key in ("many_acc", "medium_acc", "few_acc"):
        assert results["test"][key] is not None
    per_class = read(folder / "results-seed0-per-class.json")
    assert sum(map(sum, per_class["confusion_matrix"])) == 80  # every test image once
    assert read(folder / "class-counts-seed0.json")["classes"] == [f"class{c:03d}" for c in range(8)]


def test_cached_batches_do_not_depend_on_the_number_of_workers(imagenet_lt, tmp_path):
    split = quiet(ListLT, "ImageNetLT", imagenet_lt, "val", num_classes=8, strict_sizes=False)
    path = ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None)
    epochs = {}
    for workers in (0, 2):
        loader = CachedLoader(path, split.targets, 8, 32, (0.5,) * 3, (0.25,) * 3, device="cpu", train=True,
                              crop=True, flip=True, num_workers=workers, seed=5)
        epochs[workers] = []
        for epoch in (0, 1):  # the workers persist from one epoch to the next
            loader.set_epoch(epoch)
            epochs[workers].append([(images, targets) for images, targets in loader])
    for (a, b) in zip(epochs[0], epochs[2]):
        for (images_a, targets_a), (images_b, targets_b) in zip(a, b):
            assert torch.equal(targets_a, targets_b) and torch.equal(images_a, images_b)
    assert not torch.equal(epochs[0][0][0][0], epochs[0][1][0][0])  # a new epoch draws anew


@pytest.mark.slow
def test_the_data_benchmark_runs_and_reports_json():
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_list_data.py"), "--images", "16", "--seconds",
                           "0.2", "--batch-size", "4", "--size", "32", "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("classic_loader_img_s", "fast_loader_img_s", "cache_build_img_s", "pil_decode_img_s",
                "decode_jpeg_list_img_s", "fast_worker_1thread_img_s", "alt_roi_align_1thread_img_s"):
        assert report[key] > 0, key
    assert report["images"] == 16 and report["cpu"]


@pytest.mark.parametrize("fail_at", [1, 2], ids=["the-images", "the-stamp"])
def test_a_failed_cache_write_is_one_storage_error_and_leaves_no_partial_file(imagenet_lt, tmp_path, monkeypatch,
                                                                             fail_at):
    """The decoded images, then their stamp, each fail as on a full disk (tests/faults.py): one StorageError naming
    the file, no partial or temporary file left, and the next call writes the cache whole."""
    from errors import StorageError
    from faults import WriteFaults, leftovers

    split = quiet(ListLT, "ImageNetLT", imagenet_lt, "val", num_classes=8, strict_sizes=False)
    with monkeypatch.context() as patch:
        faults = WriteFaults(patch, tmp_path, fail_at=fail_at)
        with pytest.raises(StorageError, match="cannot write .*: no space left on"):
            ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None)
    assert faults.names[-1].endswith(".u8" if fail_at == 1 else ".json") and leftovers(tmp_path) == []
    path = ensure_cache(split, tmp_path, 37, threads=1, log=lambda *a: None)
    assert np.load(path, mmap_mode="r").shape == (40, 37, 37, 3) and leftovers(tmp_path) == []
