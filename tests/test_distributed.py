"""torchrun with 2 CPU processes (gloo): one training job, each test image counted once, each epoch's shards covering
the training set, and evaluation that does not depend on the number of processes."""
from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import OUTPUTS, ROOT, check_ok, main_args, read, run_main, run_script
from fake_cifar import make_cifar

# every test here runs two processes under torchrun
pytestmark = pytest.mark.slow

TEST_IMAGES = 200  # the cifar_root fixture's CIFAR-10 test set: 20 per class
# The CPU (gloo) path, also on a machine with one GPU, where two processes cannot share it under NCCL
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}
# Scores computed from the confusion matrix are exact; these come from the logits' float values, which may move
# in the last bits with the batch each process evaluates
FROM_LOGITS = ("loss", "auroc", "nll", "ece")


def check_same_scores(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key in FROM_LOGITS:
            assert got[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def two_process_run(cifar_root, tmp_path_factory):
    """One epoch under `torchrun --nproc_per_node 2` on the balanced fixture data (1000 training images)."""
    savedir = tmp_path_factory.mktemp("ddp")
    proc = run_main(cifar_root, savedir, "DATASET.batch_size", "16", "OPTIMIZER.lr", "0.02", "TRAIN.epochs", "1",
                    "DEFAULT.exp_name", "ddp", nproc=2, timeout=600, env=CPU_ONLY)
    return proc, savedir / "CIFAR10LT" / "resnet32" / "ddp"


def test_two_processes_train_one_job_and_count_each_test_image_once(two_process_run):
    proc, folder = two_process_run
    check_ok(proc)
    # one 2-process job, not two 1-process runs racing over the same files
    assert "2 process(es)" in proc.stdout and "1 process(es)" not in proc.stdout, proc.stdout
    assert proc.stdout.count("epoch 1/1 |") == 1 and proc.stdout.count("test (epoch") == 1, proc.stdout
    assert {p.name for p in folder.iterdir()} == OUTPUTS

    results = read(folder / "results-seed0.json")
    per_class = read(folder / "results-seed0-per-class.json")
    matrix = per_class["confusion_matrix"]
    assert sum(map(sum, matrix)) == TEST_IMAGES
    assert [sum(row) for row in matrix] == [TEST_IMAGES // 10] * 10
    assert results["test"]["acc"] == pytest.approx(sum(matrix[c][c] for c in range(10)) / TEST_IMAGES)
    assert results["test"]["bcr"] == pytest.approx(sum(per_class["acc"]) / 10)
    assert results["epochs"] == 1 and results["best_epoch"] == 1
    assert results["ran_on"]["processes"] == 2
    assert results["num_per_cls"] == [100] * 10
    assert results["test"]["bcr"] > 0.3, "the 2-process run did not learn"
    assert results["config"]["DATASET"]["batch_size"] == 16  # the batch of one step, over both processes


def test_two_process_evaluation_matches_one_process(two_process_run, cifar_root, tmp_path):
    train_proc, folder = two_process_run
    check_ok(train_proc)
    outs = {n: tmp_path / f"eval{n}" for n in (1, 2)}
    with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: their start-up is mostly imports
        # at the training run's precision (evaluate.py's default on a CPU is fp32), to compare with its own test
        futures = {n: pool.submit(run_script, "evaluate.py", cifar_root, str(folder), "--out", str(out),
                                  "TRAIN.mixed_precision", "fp16", nproc=n, timeout=600, env=CPU_ONLY)
                   for n, out in outs.items()}
        procs = {n: future.result() for n, future in futures.items()}
    for n, proc in procs.items():
        check_ok(proc)
        # under torchrun without a GPU, accelerate needs Accelerator(cpu=True) (main.cpu_only()) to form one
        # 2-process job; otherwise each process evaluates everything alone and both write the same files
        assert f"{n} process(es)" in proc.stdout, proc.stdout
    one, two = (read(outs[n] / "results-seed0.json") for n in (1, 2))
    assert one["epoch"] == two["epoch"] == 1
    check_same_scores(two["test"], one["test"])
    one_cls, two_cls = (read(outs[n] / "results-seed0-per-class.json") for n in (1, 2))
    assert one_cls == two_cls
    assert sum(map(sum, one_cls["confusion_matrix"])) == TEST_IMAGES
    # and both equal the test scores the 2-process training run wrote for the same (best) weights
    check_same_scores(one["test"], read(folder / "results-seed0.json")["test"])
    # the shifted test sets are drawn in the test set's own order, whichever process scored each image
    assert two["shifted"] == one["shifted"] == read(folder / "results-seed0.json")["shifted"]
    assert one["shifted"]["forward50"]["n"] < TEST_IMAGES == one["shifted"]["uniform"]["n"]


def hugging_face_datasets_installed(folder: Path) -> dict:
    """An environment in which Hugging Face `datasets` looks installed to accelerate: its package metadata on the
    path. `import datasets` still finds this repository's folder first, as it does beside the real package."""
    info = folder / "datasets-4.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: datasets\nVersion: 4.0.0\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("hf_datasets", [False, True], ids=["without-hf-datasets", "with-hf-datasets"])
def test_two_processes_train_with_the_classic_loader(tmp_path, hf_datasets):
    # accelerate.prepare of a DataLoader under 2 processes runs `from datasets import IterableDataset` when
    # Hugging Face datasets is installed; that import finds our datasets/ package
    datadir = tmp_path / "data"
    make_cifar(datadir, 10, train_per_class=16, test_per_class=4)
    env = {**CPU_ONLY, **(hugging_face_datasets_installed(tmp_path / "site") if hf_datasets else {})}
    proc = run_main(datadir, tmp_path / "runs", "DATASET.loader", "classic", "DATASET.num_workers", "0",
                    "TRAIN.epochs", "1", nproc=2, timeout=600, env=env)
    check_ok(proc)
    assert "2 process(es)" in proc.stdout and proc.stdout.count("epoch 1/1 |") == 1, proc.stdout
    per_class = read(tmp_path / "runs" / "CIFAR10LT" / "resnet32" / "CrossEntropyLoss-IF_1" / "results-seed0-per-class.json")
    assert sum(map(sum, per_class["confusion_matrix"])) == 40  # every test image once, over both processes


def test_two_process_resume_restores_each_process_random_state(tmp_path):
    """A 2-process run stopped after epoch 1 and resumed ends with the weights of the uninterrupted run. The classic
    loader without workers draws its crops and flips from each process's global random state, which differs per
    process (set_seed(..., device_specific=True)): a resume that gave every process the main process's state would
    change process 1's augmentations, and so the weights."""
    root = tmp_path / "data"
    make_cifar(root, 10, train_per_class=20, test_per_class=4)
    savedir = tmp_path / "runs"
    overrides = ["DATASET.loader", "classic", "DATASET.num_workers", "0", "DATASET.batch_size", "16",
                 "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "2", "DEFAULT.exp_name", "rng"]
    last = savedir / "CIFAR10LT" / "resnet32" / "rng" / "model-seed0.pt"

    # The uninterrupted run; its checkpoint after epoch 1 is kept as it stood, as a run stopped then would leave it
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_main, root, savedir, *overrides, nproc=2, env=CPU_ONLY)
        after_epoch_1 = None
        while not future.done():
            if after_epoch_1 is None and last.exists():
                saved = last.read_bytes()  # written atomically: a whole checkpoint of one epoch or the next
                if torch.load(io.BytesIO(saved), map_location="cpu", weights_only=False)["epoch"] == 1:
                    after_epoch_1 = saved
            time.sleep(0.02)
        uninterrupted = future.result()
    check_ok(uninterrupted)
    assert after_epoch_1 is not None, "epoch 2 ended before the epoch 1 checkpoint was read"
    expected = torch.load(last, map_location="cpu", weights_only=False)
    assert len(expected["rng"]) == 2  # one random state per process
    assert not torch.equal(expected["rng"][0]["torch"], expected["rng"][1]["torch"])

    last.write_bytes(after_epoch_1)
    resumed = run_main(root, savedir, *overrides, nproc=2, env=CPU_ONLY)
    check_ok(resumed)
    assert f"resuming {last} after epoch 1" in resumed.stdout and "epoch 2/2 |" in resumed.stdout
    got = torch.load(last, map_location="cpu", weights_only=False)
    assert got["epoch"] == 2 and got["model"].keys() == expected["model"].keys()
    for name, value in expected["model"].items():
        torch.testing.assert_close(got["model"][name], value, rtol=0, atol=0, msg=name)


# 83 training images: make_cifar's 12 per class under an exp profile at imbalance factor 2 (12, 11, ..., 6)
SHARD_DATA = ["DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "2"]
SHARD_IMAGES = 83


def epoch_shards(datadir: Path, folder: Path, images: int, *overrides: str) -> Counter:
    """One epoch at batch 16 under torchrun with 2 CPU processes (tests/record_shards.py): how often each training
    image was drawn, over both processes' shards. Checks that the run trained on `images` images and that the
    processes took the same number of batches of the same sizes."""
    out = folder / "shards"
    out.mkdir()
    proc = run_script("record_shards.py", datadir, str(out), "--config", str(ROOT / "configs.yaml"),
                      *main_args(datadir, folder / "runs", *overrides, "DATASET.batch_size", "16", "TRAIN.epochs", "1"),
                      nproc=2, timeout=600, env=CPU_ONLY)
    check_ok(proc)
    assert f"{images} training images" in proc.stdout, proc.stdout
    shards = [json.loads((out / f"epoch0-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [len(batch) for batch in shards[0]] == [len(batch) for batch in shards[1]]  # the processes stay in step
    return Counter(index for shard in shards for batch in shard for index in batch)


@pytest.mark.parametrize("loader", ["classic", "fast"])
def test_each_epoch_the_shards_of_two_processes_cover_the_training_set(tmp_path, loader):
    """One epoch under torchrun with 2 CPU processes, batch 16: the processes' shards are parts of one shared
    permutation, so every training image is trained on, each once up to the documented padding or drop."""
    datadir = tmp_path / "data"
    make_cifar(datadir, 10, train_per_class=12, test_per_class=2)
    seen = epoch_shards(datadir, tmp_path, SHARD_IMAGES, *SHARD_DATA, "DATASET.loader", loader,
                        *(["DATASET.num_workers", "0"] if loader == "classic" else []))
    if loader == "classic":
        # accelerate splits each batch of 16 over the processes, and fills the epoch's last batch (83 = 5 x 16 + 3)
        # up to 16 with the epoch's first images: 13 of them twice, every other image once
        assert set(seen) == set(range(SHARD_IMAGES))
        assert sorted(seen.values()) == [1] * (SHARD_IMAGES - 13) + [2] * 13
    else:
        # equal shards of 41 leave one image out; each shard is 5 batches of 8 and one of 1, which is left out
        # (BatchNorm cannot train on a batch of one): 80 images, each once
        assert len(seen) == SHARD_IMAGES - 3 and set(seen.values()) == {1}


@pytest.mark.parametrize("loader, nproc", [("fast", 1), ("fast", 2), ("classic", 1), ("classic", 2)])
def test_class_balanced_sampling_draws_every_class_equally(tmp_path, loader, nproc):
    """DATASET.sampler class_balanced under torchrun: over 8 epochs, the classes that all processes are given are
    drawn equally often (chi-square against uniform), from a long tail of 10 down to 1 image, and each epoch is as
    long as instance sampling's."""
    from test_loaders import CHI2_9_DOF_P0001, chi_square_uniform

    datadir, out = tmp_path / "data", tmp_path / "draws"
    make_cifar(datadir, 10, train_per_class=10, test_per_class=2)
    out.mkdir()
    proc = run_script("record_shards.py", datadir, str(out), "--labels", "--config", str(ROOT / "configs.yaml"),
                      *main_args(datadir, tmp_path / "runs", "DATASET.imbalance_type", "exp",
                                 "DATASET.imbalance_factor", "10", "DATASET.sampler", "class_balanced",
                                 "DATASET.loader", loader, *(["DATASET.num_workers", "0"] if loader == "classic" else []),
                                 "DATASET.batch_size", "16", "TRAIN.epochs", "8"),
                      nproc=nproc, timeout=600, env=CPU_ONLY)
    check_ok(proc)
    images = int(proc.stdout.split(" training images")[0].split()[-1])
    assert "classes from 10 to 1 images" in proc.stdout, proc.stdout
    draws = []
    for epoch in range(8):
        shards = [json.loads((out / f"epoch{epoch}-rank{rank}.json").read_text()) for rank in range(nproc)]
        epoch_draws = [c for shard in shards for batch in shard for c in batch]
        # as many as instance sampling gives: the fast loader leaves out up to one image a process, the classic
        # one pads the last batch up to 16 with the epoch's first draws
        assert images - nproc <= len(epoch_draws) <= images + 15
        draws += epoch_draws
    assert chi_square_uniform(draws, 10) < CHI2_9_DOF_P0001


def test_two_process_stage2_trains_the_classifier_alone(two_process_run, cifar_root, tmp_path):
    """Stage 2 (LWS) under torchrun from the 2-process run: DDP syncs the per-class scales alone, and the frozen
    backbone, BatchNorm statistics included, leaves as it came."""
    train_proc, stage1 = two_process_run
    check_ok(train_proc)
    proc = run_main(cifar_root, tmp_path, "DATASET.batch_size", "16", "TRAIN.epochs", "1", "TRAIN.stage2_from",
                    str(stage1), "TRAIN.stage2_classifier", "lws", "DATASET.sampler", "class_balanced",
                    "DEFAULT.exp_name", "lws", nproc=2, timeout=600, env=CPU_ONLY)
    check_ok(proc)
    assert "2 process(es)" in proc.stdout and "stage 2 from" in proc.stdout, proc.stdout
    before = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)["model"]
    after = torch.load(tmp_path / "CIFAR10LT" / "resnet32" / "lws" / "model-seed0.pt", map_location="cpu",
                       weights_only=False)["model"]
    for name, value in before.items():
        moved = name.replace("fc.", "fc.linear.") if name.startswith("fc.") else name
        assert torch.equal(after[f"model.{moved}"], value), name
    assert not torch.equal(after["model.fc.scales"], torch.ones(10))
