"""End-to-end tests of `python main.py`: each runs main.py in a fresh process on generated CIFAR-10 files and checks
what a user sees: exit status, messages, and the files in savedir/CIFAR10LT/resnet32/<exp_name>/."""
from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from checkpoint import output_seeds
from config import load_config
from conftest import OUTPUTS, ROOT, check_ok, main_args, read, run_main, run_script
from datasets import TensorLoader
from fake_cifar import make_cifar

# every test here runs main.py end to end in a fresh process
pytestmark = pytest.mark.slow

# One thread per process: on a shared 2-core machine more threads oversubscribe it (about 4x slower per step)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Settings that learn the generated data within a few seconds and land clearly above chance for seeds 0-3
# (test bcr 1.0, 1.0, 1.0, 0.9). Fewer optimizer steps, or lr >= 0.05, often end at exactly chance: with
# BatchNorm's momentum 0.1 the running statistics still lag the weights after ~15 steps, so the eval-mode
# model predicts one class while the train-mode one is right.
LEARN = ["DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "3", "DEFAULT.seed", "0"]
GROUPS = ("many_acc", "medium_acc", "few_acc", "head_acc", "mid_acc", "tail_acc")
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """CIFAR-10 with 20 training and 10 test images per class: a few seconds per epoch."""
    root = tmp_path_factory.mktemp("small_cifar")
    make_cifar(root, 10, train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)
    return root


def main_command(datadir: Path, savedir: Path, *overrides: str) -> list[str]:
    """The command run_main runs, for tests that need the process itself (to interrupt it)."""
    return [sys.executable, str(ROOT / "tests" / "fake_cifar.py"), str(datadir), "main.py", "--config",
            str(ROOT / "configs.yaml"), *main_args(datadir, savedir, *overrides)]


def run_folder(savedir: Path, exp_name: str) -> Path:
    return savedir / "CIFAR10LT" / "resnet32" / exp_name


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_error(proc: subprocess.CompletedProcess, prefix: str = "error:") -> str:
    """A failed run: nonzero exit, one closing line starting with `prefix`, no traceback; returns that line."""
    assert proc.returncode != 0, f"expected a failure\nstdout:\n{proc.stdout[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith(prefix), f"last stderr line {line!r}\nstderr:\n{proc.stderr[-3000:]}"
    return line


def check_confusion(per_class: dict, num_classes: int, per_class_count: int) -> list[list[int]]:
    """The confusion matrix counts every test image once: rows sum to the balanced test set's class sizes."""
    matrix = per_class["confusion_matrix"]
    assert len(matrix) == num_classes and all(len(row) == num_classes for row in matrix)
    assert [sum(row) for row in matrix] == [per_class_count] * num_classes
    return matrix


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def run_all(calls: list, workers: int = 2) -> list[subprocess.CompletedProcess]:
    """Run independent main.py processes two at a time (their start-up is mostly imports)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call(), calls))


# 1. End to end -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def learnt(small_root, tmp_path_factory):
    """A 3-epoch cross-entropy run on balanced data; shared with the resume test as the uninterrupted reference."""
    savedir = tmp_path_factory.mktemp("learnt")
    overrides = [*LEARN, "DEFAULT.exp_name", "learn"]
    proc = run_main(small_root, savedir, *overrides, env=ONE_THREAD, timeout=600)
    return proc, run_folder(savedir, "learn"), main_args(small_root, savedir, *overrides)


def test_short_run_learns_and_writes_every_output(learnt):
    proc, folder, overrides = learnt
    check_ok(proc)
    assert "200 training images" in proc.stdout
    # the first line says in words where and how it trains; scores print as percentages, as the docs give them
    assert proc.stdout.splitlines()[0].startswith("training on cpu: 1 process(es), not distributed; precision ")
    epoch_line = next(line for line in proc.stdout.splitlines() if line.startswith("epoch 3/3"))
    assert re.search(r"\| test bcr \d+\.\d\d % acc \d+\.\d\d % \|", epoch_line), epoch_line
    assert re.search(r"^test \(epoch \d, by test bcr\): bcr \d+\.\d\d % acc", proc.stdout, re.M), proc.stdout
    assert {p.name for p in folder.iterdir()} == OUTPUTS  # and no temporary or stray files

    results = read(folder / "results-seed0.json")
    test = results["test"]
    assert test["bcr"] > 0.5, f"test bcr {test['bcr']}: the model did not learn the generated classes"
    for key in ("acc", "bcr", "f1", "auroc", "worst_class_acc", *GROUPS):
        assert key in test and key in results["test_last_epoch"], key
    # every class has 20 training images: all are medium-shot, many- and few-shot groups are empty
    assert test["many_acc"] is None and test["few_acc"] is None
    assert test["medium_acc"] == pytest.approx(test["bcr"])
    assert all(0 <= test[k] <= 1 for k in ("acc", "bcr", "f1", "auroc", "worst_class_acc", "head_acc", "tail_acc"))
    assert results["selected_by"] == "test bcr"
    assert results["epochs"] == 3 and 1 <= results["best_epoch"] <= 3
    assert results["num_per_cls"] == [TRAIN_PER_CLASS] * 10
    assert results["ran_on"]["processes"] == 1

    # the per-class report is of the same predictions
    per_class = read(folder / "results-seed0-per-class.json")
    matrix = check_confusion(per_class, 10, TEST_PER_CLASS)
    assert sum(matrix[c][c] for c in range(10)) / 100 == pytest.approx(test["acc"])
    assert sum(per_class["acc"]) / 10 == pytest.approx(test["bcr"])
    assert min(per_class["acc"]) == pytest.approx(test["worst_class_acc"])

    # the selected checkpoint is the best epoch's, and re-testing it reproduces the score it was selected by
    best = read(folder / "results-seed0-best.json")
    assert best["epoch"] == results["best_epoch"] and best["selected_by"] == "test bcr"
    assert best["test"]["bcr"] == pytest.approx(test["bcr"]) and best["test"]["acc"] == pytest.approx(test["acc"])
    assert best["test"]["bcr"] >= results["test_last_epoch"]["bcr"]
    assert torch.load(folder / "model-seed0-best.pt", map_location="cpu", weights_only=False)["epoch"] == best["epoch"]
    assert torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)["epoch"] == 3

    counts = read(folder / "class-counts-seed0.json")
    assert counts["num_per_cls"] == [TRAIN_PER_CLASS] * 10 and counts["test_per_class"] == [TEST_PER_CLASS] * 10
    assert counts["val_per_class"] == 0 and counts["classes"] == [f"class{c}" for c in range(10)]
    assert len(counts["mean"]) == len(counts["std"]) == 3

    # the saved config reloads to exactly the settings of the run
    expected = OmegaConf.to_container(load_config(ROOT / "configs.yaml", overrides))
    assert OmegaConf.to_container(load_config(folder / "configs-seed0.yaml")) == expected
    assert results["config"] == expected
    assert expected["OPTIMIZER"]["lr"] == 0.01 and expected["TRAIN"]["epochs"] == 3


def test_iterations_stop_inside_an_epoch(small_root, tmp_path):
    # 200 images in batches of 32: 7 steps an epoch, of which TRAIN.iterations 3 takes 3
    proc = run_main(small_root, tmp_path, "TRAIN.iterations", "3", "SCHEDULER.interval", "step",
                    "DEFAULT.exp_name", "short", env=ONE_THREAD)
    check_ok(proc)
    last = torch.load(run_folder(tmp_path, "short") / "model-seed0.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == last["epochs"] == 1
    assert last["scheduler"]["last_epoch"] == 3  # the per-step schedule stepped once per optimizer step taken


def readme_smoke_command() -> list[str]:
    """The arguments of the README's quick check: its first main.py command, with TRAIN.iterations."""
    from test_docs_commands import COMMANDS
    found = [c for c in COMMANDS if c.doc.name == "README.md" and c.script == "main.py" and "TRAIN.iterations" in c.argv]
    assert found, "the README gives no quick check (a main.py command with TRAIN.iterations)"
    return found[0].argv


def test_the_readmes_quick_check_writes_every_output_a_run_writes(cifar_root, tmp_path):
    argv = readme_smoke_command()
    proc = run_script("main.py", cifar_root, *argv, "DATASET.datadir", str(cifar_root), "DATASET.download", "false",
                      "DEFAULT.savedir", str(tmp_path), env=ONE_THREAD)
    check_ok(proc)
    folders = [p.parent for p in tmp_path.rglob("results-seed0.json")]
    assert len(folders) == 1
    assert {p.name for p in folders[0].iterdir()} == OUTPUTS
    results = read(folders[0] / "results-seed0.json")
    assert results["config"]["DATASET"]["imbalance_factor"] > 1  # long-tailed


# 2. Balanced Softmax on long-tailed data ------------------------------------------------------------------------------

def test_balanced_softmax_records_the_long_tailed_counts(small_root, tmp_path):
    proc = run_main(small_root, tmp_path, "LOSS.name", "BalancedSoftmax", "DATASET.imbalance_type", "exp",
                    "DATASET.imbalance_factor", "10", "DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01",
                    "TRAIN.epochs", "1", "DEFAULT.exp_name", "bs", env=ONE_THREAD)
    check_ok(proc)
    folder = run_folder(tmp_path, "bs")
    assert {p.name for p in folder.iterdir()} == OUTPUTS
    # exp profile, as in the seed README: n_max * (1/IF)^(c/(C-1)), rounded down
    expected = [int(TRAIN_PER_CLASS * 0.1 ** (c / 9)) for c in range(10)]
    assert expected[0] == 20 and expected[-1] == 2
    assert f"{sum(expected)} training images, classes from 20 to 2 images" in proc.stdout

    counts = read(folder / "class-counts-seed0.json")
    results = read(folder / "results-seed0.json")
    per_class = read(folder / "results-seed0-per-class.json")
    assert counts["num_per_cls"] == results["num_per_cls"] == per_class["num_per_cls"] == expected
    assert counts["test_per_class"] == [TEST_PER_CLASS] * 10  # the test set stays balanced
    check_confusion(per_class, 10, TEST_PER_CLASS)
    assert results["config"]["LOSS"]["name"] == "BalancedSoftmax"
    train_loss = float(proc.stdout.split("train loss ")[1].split()[0])
    assert math.isfinite(train_loss)
    # the shot groups follow the counts: class 0 (20 images) is medium-shot, the rest few-shot, none many-shot
    test = results["test"]
    assert test["many_acc"] is None and test["medium_acc"] is not None and test["few_acc"] is not None
    assert per_class["groups"]["medium"] == [0] and per_class["groups"]["few"] == list(range(1, 10))
    assert test["medium_acc"] == pytest.approx(per_class["acc"][0])


# 3. Validation split -------------------------------------------------------------------------------------------------

def test_validation_split_selects_on_val_and_tests_at_the_end(small_root, tmp_path):
    proc = run_main(small_root, tmp_path, "DATASET.val_per_class", "5", "DATASET.batch_size", "16",
                    "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "1", "DEFAULT.exp_name", "val", env=ONE_THREAD)
    check_ok(proc)
    assert "checkpoint by val bcr" in proc.stdout and "| val bcr" in proc.stdout
    assert "150 training images" in proc.stdout  # 5 of each class's 20 images are held out
    folder = run_folder(tmp_path, "val")
    assert {p.name for p in folder.iterdir()} == OUTPUTS

    results = read(folder / "results-seed0.json")
    assert results["selected_by"] == "val bcr" and results["best_epoch"] == 1
    assert results["num_per_cls"] == [TRAIN_PER_CLASS - 5] * 10
    best = read(folder / "results-seed0-best.json")
    assert best["selected_by"] == "val bcr" and "val" in best and "test" not in best
    counts = read(folder / "class-counts-seed0.json")
    assert counts["val_per_class"] == 5 and counts["num_per_cls"] == [TRAIN_PER_CLASS - 5] * 10
    # the final scores are on the whole test set (100 images), not on the 50 validation images
    per_class = read(folder / "results-seed0-per-class.json")
    check_confusion(per_class, 10, TEST_PER_CLASS)
    assert results["test"]["bcr"] == pytest.approx(sum(per_class["acc"]) / 10)


# 4. Error paths ------------------------------------------------------------------------------------------------------

ERRORS = {
    "unknown key": (["TRAIN.epoch", "3"], ["unknown config key TRAIN.epoch", "did you mean TRAIN.epochs"]),
    "wrong type": (["TRAIN.epochs", "ten"], ["TRAIN.epochs must be int", "'ten'"]),
    "unknown loss": (["LOSS.name", "FocalLoss"], ["LOSS.name 'FocalLoss' is not valid", "BalancedSoftmax"]),
    "unknown model": (["MODEL.name", "no_such_net"], ["MODEL.name 'no_such_net' is not a timm model"]),
    "missing data": ([], ["no valid data in", "cifar-10-batches-py", "DATASET.download true"]),
}


@pytest.fixture(scope="module")
def error_runs(small_root, tmp_path_factory) -> dict:
    """Every error case, run two at a time: {case: (process, savedir, datadir)}."""
    base = tmp_path_factory.mktemp("errors")
    cases = {}
    for i, (case, (overrides, _)) in enumerate(ERRORS.items()):
        datadir = small_root
        if case == "missing data":
            datadir = base / "empty"
            datadir.mkdir()
        cases[case] = (base / f"save{i}", datadir, overrides)
    # TRAIN.epochs 1 first, so that a case that wrongly trains stays short and the case's own value wins
    calls = [lambda s=s, d=d, o=o: run_main(d, s, "TRAIN.epochs", "1", *o, env=ONE_THREAD, timeout=300)
             for s, d, o in cases.values()]
    return {case: (proc, savedir, datadir) for (case, (savedir, datadir, _)), proc in zip(cases.items(), run_all(calls))}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_and_write_nothing(error_runs, case):
    proc, savedir, datadir = error_runs[case]
    line = check_error(proc)
    for text in ERRORS[case][1]:
        assert text in line, f"{text!r} not in {line!r}"
    if case == "missing data":
        assert str(datadir.resolve()) in line
    assert not savedir.exists(), f"{case}: output written under {savedir}: {list(savedir.rglob('*'))}"


@pytest.fixture(scope="module")
def two_seeds(small_root, tmp_path_factory):
    """Seeds 0 and 1 in one run folder, each with a learning rate of its own, on data laid out as the seed lays it
    out (DATASET.datadir/CIFAR10/cifar-10-batches-py): ([process per seed], datadir, run folder)."""
    datadir, savedir = tmp_path_factory.mktemp("seed_layout"), tmp_path_factory.mktemp("two_seeds")
    shutil.copytree(small_root / "cifar-10-batches-py", datadir / "CIFAR10" / "cifar-10-batches-py")
    # fake_cifar.py is given the folder that holds the generated files, main.py the seed's datadir above it
    calls = [lambda seed=seed, lr=lr: run_script(
        "main.py", datadir / "CIFAR10", "--config", str(ROOT / "configs.yaml"),
        *main_args(datadir, savedir, "TRAIN.epochs", "1", "DEFAULT.exp_name", "seeds", "DEFAULT.seed", seed,
                   "OPTIMIZER.lr", lr), env=ONE_THREAD, timeout=300) for seed, lr in (("0", "0.01"), ("1", "0.02"))]
    return run_all(calls), datadir, run_folder(savedir, "seeds")


def test_each_seed_of_a_run_folder_keeps_its_own_config(two_seeds):
    procs, _, folder = two_seeds
    for proc in procs:
        check_ok(proc)
    for seed, lr in ((0, 0.01), (1, 0.02)):
        saved = load_config(folder / f"configs-seed{seed}.yaml")
        assert saved.DEFAULT.seed == seed and saved.OPTIMIZER.lr == lr
        assert read(folder / f"results-seed{seed}.json")["config"] == OmegaConf.to_container(saved)
    assert not (folder / "configs.yaml").exists()  # no shared file for the last seed to overwrite


def test_output_seeds_finds_the_seeds_of_a_run_folder_by_its_file_names(two_seeds, tmp_path):
    """checkpoint.output_seeds reads back the names output_paths gives, and no look-alike."""
    _, _, folder = two_seeds
    assert output_seeds(folder) == output_seeds(folder, "best") == [0, 1]
    for name in ("model-seed07.pt", ".model-seed6.pt.tmp", "results-seed4.json.bak", "notes-seed5.txt",
                 "model-seed12-best.pt"):
        (tmp_path / name).touch()
    assert output_seeds(tmp_path) == output_seeds(tmp_path, "best") == [12]
    assert output_seeds(tmp_path, "last") == []


def test_a_datadir_in_the_seed_layout_is_read_and_named(two_seeds):
    procs, datadir, _ = two_seeds
    for proc in procs:
        check_ok(proc)
        head = proc.stdout.splitlines()[:3]
        assert any(f"CIFAR10LT in {(datadir / 'CIFAR10').resolve()}:" in line for line in head), proc.stdout


# 5. Resume -----------------------------------------------------------------------------------------------------------

def test_interrupted_run_resumes_and_finished_run_is_left_alone(learnt, small_root, tmp_path):
    overrides = [*LEARN, "DEFAULT.exp_name", "learn"]  # the reference run's settings, in another savedir
    folder = run_folder(tmp_path, "learn")
    last = folder / "model-seed0.pt"

    # Ctrl-C once the first epoch's checkpoint is on disk
    environment = {**os.environ, "WANDB_SILENT": "true", **ONE_THREAD}
    proc = subprocess.Popen(main_command(small_root, tmp_path, *overrides), cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert "run the same command again" in check_error(interrupted, "interrupted:")
    saved_epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert 1 <= saved_epoch < 3
    assert not (folder / "results-seed0.json").exists()

    # the same command continues after the saved epoch and ends where an uninterrupted run ends
    resumed = run_main(small_root, tmp_path, *overrides, env=ONE_THREAD)
    check_ok(resumed)
    assert f"resuming {last} after epoch {saved_epoch}" in resumed.stdout
    epochs_run = [int(line.split()[1].split("/")[0]) for line in resumed.stdout.splitlines()
                  if line.startswith("epoch ") and "/3 |" in line]
    assert epochs_run == list(range(saved_epoch + 1, 4))
    results = read(folder / "results-seed0.json")
    assert results["epochs"] == 3
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 3
    reference_proc, reference, _ = learnt
    check_ok(reference_proc)
    expected = torch.load(reference / "model-seed0.pt", map_location="cpu", weights_only=False)["model"]
    got = torch.load(last, map_location="cpu", weights_only=False)["model"]
    assert expected.keys() == got.keys()
    # weights, BatchNorm statistics, optimizer state and the seeded augmentation all resume exactly: bitwise on a
    # CPU; GPU kernels (cuDNN) may differ in the last bits from one run to the next
    tolerance = {"rtol": 1e-3, "atol": 1e-4} if torch.cuda.is_available() else {"rtol": 0, "atol": 0}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **tolerance, msg=name)
    reference_results = read(reference / "results-seed0.json")
    assert results["best_epoch"] == reference_results["best_epoch"]
    assert results["test"]["bcr"] == pytest.approx(reference_results["test"]["bcr"])

    # reruns of the finished run: the same command, and a change that does not alter training, do nothing;
    # a changed setting, or DEFAULT.resume false, is refused; no file is touched either way
    before = mtimes(folder)
    same, harmless, changed, no_resume = run_all([
        lambda: run_main(small_root, tmp_path, *overrides, env=ONE_THREAD),
        lambda: run_main(small_root, tmp_path, *overrides, "TRAIN.log_interval", "5", env=ONE_THREAD),
        lambda: run_main(small_root, tmp_path, *overrides, "OPTIMIZER.lr", "0.02", env=ONE_THREAD),
        lambda: run_main(small_root, tmp_path, *overrides, "DEFAULT.resume", "false", env=ONE_THREAD),
    ])
    for proc in (same, harmless):
        check_ok(proc)
        assert "shows this run finished; nothing to do" in proc.stdout
        assert "epoch 1/3" not in proc.stdout
    line = check_error(changed)
    assert "OPTIMIZER.lr" in line and "other settings" in line and "exp_name" in line
    line = check_error(no_resume)
    assert "already holds a run" in line and "DEFAULT.resume true" in line
    assert mtimes(folder) == before


# 6. Non-finite loss --------------------------------------------------------------------------------------------------

def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(small_root, tmp_path):
    # epoch 1 trains normally; from epoch 2 the learning rate is 1e8 times larger, so the loss diverges
    proc = run_main(small_root, tmp_path, "DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "2",
                    "SCHEDULER.sched_name", "multistep", "SCHEDULER.params", "{milestones: [1], gamma: 1.0e+8}",
                    "DEFAULT.exp_name", "nan", env=ONE_THREAD)
    line = check_error(proc)
    assert "training loss is" in line and ("nan" in line or "inf" in line) and "epoch 2" in line
    assert "OPTIMIZER.lr" in line  # says what to change
    assert "epoch 1/2 |" in proc.stdout and "epoch 2/2 |" not in proc.stdout
    folder = run_folder(tmp_path, "nan")
    state = torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert (folder / "model-seed0-best.pt").exists()
    assert not (folder / "results-seed0.json").exists()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# 7. wandb without an account ------------------------------------------------------------------------------------------

@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch) -> dict:
    """An environment where wandb finds no API key: no WANDB_* variables, HOME and config dirs in tmp_path."""
    for key in list(os.environ):
        if key.startswith("WANDB_") or key == "NETRC":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    return {**ONE_THREAD, "HOME": str(home), "WANDB_DIR": str(home / "wandb"),
            "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"), "WANDB_CACHE_DIR": str(home / ".cache" / "wandb"),
            "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}


def check_offline_run(folder: Path) -> None:
    runs = list((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((folder / "wandb").iterdir()) if (folder / "wandb").exists() else "no wandb folder"
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    for key in (b"train/loss", b"test/bcr", b"test_last_epoch/bcr"):  # per-epoch and final history
        assert key in data, key
    assert (folder / "results-seed0.json").exists()


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_wandb_without_login_logs_offline(small_root, tmp_path, no_wandb_login, mode):
    savedir = tmp_path / "save"
    proc = run_main(small_root, savedir, "TRAIN.wandb.use", "true", "TRAIN.wandb.mode", mode, "TRAIN.epochs", "1",
                    "DEFAULT.exp_name", "wb", env=no_wandb_login, timeout=300)
    check_ok(proc)
    folder = run_folder(savedir, "wb")
    fell_back = "online logging failed" in proc.stdout
    assert fell_back == (mode == "online"), proc.stdout
    if mode == "online":
        assert f"logging offline to {folder / 'wandb'}" in proc.stdout and "wandb sync" in proc.stdout
    check_offline_run(folder)


# 8. The test set once per epoch --------------------------------------------------------------------------------------

@pytest.mark.parametrize("best_epoch", [1, 2])
def test_final_test_reuses_the_epochs_test_passes(small_root, tmp_path, monkeypatch, fresh_accelerate, best_epoch):
    """Selecting on the test set, each epoch's pass over it is the only one: the final test reuses the last epoch's
    and the best epoch's predictions, as their weights are the ones it would test."""
    import main
    from fake_cifar import accept_files_in
    from torchvision.datasets import CIFAR10

    for name in ("train_list", "test_list", "meta"):  # accept_files_in points these at small_root: undone after
        monkeypatch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    accept_files_in(small_root)
    passes, iterate = [], TensorLoader.__iter__

    def counted(loader):
        if not loader.train:
            passes.append(len(loader.targets))
        return iterate(loader)
    monkeypatch.setattr(TensorLoader, "__iter__", counted)
    # every epoch is better than the last (best 2), or none after the first (best 1)
    monkeypatch.setattr(main, "is_better", lambda metric, score, best: best is None or best_epoch == 2)
    main.main(["--config", str(ROOT / "configs.yaml"), *main_args(small_root, tmp_path, *LEARN, "TRAIN.epochs", "2",
                                                                    "DEFAULT.exp_name", "once")])
    results = read(run_folder(tmp_path, "once") / "results-seed0.json")
    assert results["best_epoch"] == best_epoch and results["selected_by"] == "test bcr"
    assert passes == [10 * TEST_PER_CLASS] * 2, f"{len(passes)} passes over the test set in 2 epochs"
    # the reused predictions are the selected epoch's: its scores as recorded when it was selected
    best = read(run_folder(tmp_path, "once") / "results-seed0-best.json")
    assert best["epoch"] == best_epoch and results["test"] == best["test"]


def test_a_run_starts_from_the_weights_of_a_pretrained_file(small_root, tmp_path):
    """With a learning rate too small to move them, the trained weights are the file's: main.py loaded it."""
    import timm

    import models  # noqa: F401  registers resnet32 with timm

    torch.manual_seed(5)
    source = timm.create_model("resnet32", num_classes=10).state_dict()
    torch.save({"state_dict": source}, tmp_path / "w.pth")
    proc = run_main(small_root, tmp_path / "out", "TRAIN.epochs", "1", "OPTIMIZER.lr", "1e-12",
                    "MODEL.pretrained", "true", "MODEL.pretrained_file", str(tmp_path / "w.pth"), env=ONE_THREAD)
    check_ok(proc)
    assert f"weights from {tmp_path / 'w.pth'}" in proc.stdout + proc.stderr
    trained = torch.load(run_folder(tmp_path / "out", "CrossEntropyLoss-IF_1") / "model-seed0.pt", map_location="cpu",
                         weights_only=False)["model"]
    convs = [key for key in source if key.endswith("conv1.weight")]
    assert convs and all(torch.allclose(trained[key], source[key], atol=1e-6) for key in convs)
    assert torch.allclose(trained["fc.weight"], source["fc.weight"], atol=1e-6)


# 9. The methods of the long-tail literature, end to end ------------------------------------------------------------

METHODS = {  # run folder -> overrides beside a long tail of IF 10, 2 epochs
    "LDAM-DRW": ["LOSS.name", "LDAM", "MODEL.classifier", "normed", "LOSS.reweight", "drw", "LOSS.drw_epoch", "1"],
    "Focal-CB": ["LOSS.name", "Focal", "LOSS.gamma", "2.0", "LOSS.reweight", "class_balanced"],
    "LA": ["LOSS.name", "LogitAdjusted", "LOSS.tau", "0.5"],
    "BS-mixup": ["LOSS.name", "BalancedSoftmax", "TRAIN.mixup", "true"],
    "LDAM-mixup": ["LOSS.name", "LDAM", "MODEL.classifier", "normed", "TRAIN.mixup", "true", "DATASET.loader",
                   "classic", "DATASET.num_workers", "0"],
    "BS-remix": ["LOSS.name", "BalancedSoftmax", "TRAIN.mixup", "true", "TRAIN.remix", "true", "TRAIN.remix_kappa",
                 "2.0"],
    "CE-sqrt": ["DATASET.sampler", "sqrt"],
    "CE-progressive": ["DATASET.sampler", "progressive"],
}


@pytest.mark.parametrize("exp_name", METHODS)
def test_each_method_trains_end_to_end(small_root, tmp_path, exp_name):
    proc = run_main(small_root, tmp_path, "DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "10",
                    "DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "2", "DEFAULT.exp_name",
                    exp_name, *METHODS[exp_name], env=ONE_THREAD)
    check_ok(proc)
    folder = run_folder(tmp_path, exp_name)
    results = read(folder / "results-seed0.json")
    settings = dict(zip(METHODS[exp_name][::2], METHODS[exp_name][1::2]))
    for key, value in settings.items():
        section, name = key.split(".")
        assert str(results["config"][section][name]).lower() == value.lower()
    train_losses = [float(part.split()[0]) for part in proc.stdout.split("train loss ")[1:]]
    assert len(train_losses) == 2 and all(math.isfinite(loss) for loss in train_losses)
    assert 0 <= results["test"]["bcr"] <= 1
    if exp_name == "LDAM-DRW":  # the normed head is saved, and evaluate.py rebuilds it from the saved config
        state = torch.load(folder / "model-seed0-best.pt", map_location="cpu", weights_only=True)
        assert "fc.bias" not in state["model"] and state["model"]["fc.weight"].shape == (10, 64)
        out = tmp_path / "evaluated"
        evaluated = run_script("evaluate.py", small_root, str(folder), "--out", str(out), env=ONE_THREAD)
        check_ok(evaluated)
        # the selected checkpoint's test score, again
        assert read(out / "results-seed0.json")["test"]["bcr"] == pytest.approx(results["test"]["bcr"], abs=1e-6)
