"""torchrun with 2 CPU processes (gloo) on a generated ImageNet-LT-format data set: one training job, each epoch's
shards covering the training set, and the same test scores from 2 processes as from 1, with either loader."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import OUTPUTS, ROOT, check_ok, main_args, read, run_main, run_script
from fake_lists import LIST_RUN as GENERATED_RUN, make_lists
from test_distributed import CPU_ONLY, check_same_scores, epoch_shards

# 8 classes of 13, 12, ..., 6 training images (76), val 2 and test 5 a class (40)
COUNTS = [13, 12, 11, 10, 9, 8, 7, 6]
TRAIN_IMAGES, TEST_IMAGES = 76, 40
LIST_RUN = [*GENERATED_RUN, "DATASET.test_batch_size", "16"]


@pytest.fixture(scope="module")
def small_lt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small_lt")
    make_lists(root, counts=COUNTS, val_per_class=2, test_per_class=5)
    return root


def with_cache(loader: str, folder: Path) -> list[str]:
    return ["DATASET.loader", loader, *(["DATASET.cache_dir", str(folder / "cache")] if loader == "fast" else [])]


@pytest.mark.slow
def test_two_processes_score_the_test_set_as_one_does(small_lt, tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    args = ["--config", str(ROOT / "configs.yaml"), *main_args(small_lt, tmp_path / "runs", *LIST_RUN)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(run_script, "predict_lists.py", small_lt, str(out), *args, nproc=n, timeout=600,
                               env=CPU_ONLY) for n in (1, 2)]
        for future in futures:
            check_ok(future.result())
    for loader in ("classic", "fast"):
        one, two = (json.loads((out / f"scores-{loader}-{n}.json").read_text()) for n in (1, 2))
        assert sorted(two["targets"]) == sorted(one["targets"]) and len(one["targets"]) == TEST_IMAGES
        check_same_scores(two["test"], one["test"])
        assert two["per_class"]["confusion_matrix"] == one["per_class"]["confusion_matrix"]
        assert one["test"]["acc"] not in (0.0, 1.0)  # the weights tell the images apart, but not all correctly


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["classic", "fast"])
def test_each_epoch_the_shards_of_two_processes_cover_the_training_set(small_lt, tmp_path, loader):
    seen = epoch_shards(small_lt, tmp_path, TRAIN_IMAGES, *LIST_RUN, *with_cache(loader, tmp_path))
    if loader == "classic":
        # accelerate splits each batch of 16 over the processes and fills the last (76 = 4 x 16 + 12) up to 16 with
        # the epoch's first images: 4 of them twice, every other image once
        assert set(seen) == set(range(TRAIN_IMAGES))
        assert sorted(seen.values()) == [1] * (TRAIN_IMAGES - 4) + [2] * 4
    else:
        # equal shards of 38, each 4 batches of 8 and one of 6: every image once
        assert set(seen) == set(range(TRAIN_IMAGES)) and set(seen.values()) == {1}


@pytest.mark.slow
def test_two_processes_train_one_job_and_count_each_test_image_once(small_lt, tmp_path):
    proc = run_main(small_lt, tmp_path, *LIST_RUN, *with_cache("fast", tmp_path), "DATASET.batch_size", "16",
                    "TRAIN.epochs", "1", nproc=2, timeout=600, env=CPU_ONLY)
    check_ok(proc)
    assert "2 process(es)" in proc.stdout and proc.stdout.count("epoch 1/1 |") == 1, proc.stdout
    folder = tmp_path / "ImageNetLT" / "resnet32" / "CrossEntropyLoss"
    assert {p.name for p in folder.iterdir()} == OUTPUTS
    results = read(folder / "results-seed0.json")
    assert results["ran_on"]["processes"] == 2 and results["num_per_cls"] == COUNTS
    assert results["selected_by"] == "val bcr"
    matrix = read(folder / "results-seed0-per-class.json")["confusion_matrix"]
    assert [sum(row) for row in matrix] == [5] * 8  # every test image once, over both processes
