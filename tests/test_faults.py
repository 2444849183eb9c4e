"""Storage faults: every write of main.py (stage 1 and stage 2), evaluate.py (with its post-hoc corrections) and
report.py is made to fail in turn, as a full disk (ENOSPC) and a failing one (EIO) would (tests/faults.py). Each time
the command ends in one line naming the file, with a non-zero exit and no traceback; its folder holds what it held
before that write, with no temporary file; and the same command, run again, finishes with the numbers of a run that
never failed. Also: the atomic write itself (its syncs, its clean-up), the lock on a full disk, kill -9 in the final
test and while the results are written, and finished runs whose files were damaged since."""
from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

import storage
from conftest import ROOT, main_args, read
from errors import StorageError
from fake_cifar import accept_files_in, make_cifar
from faults import WriteFaults, digest, errno_of, leftovers

CONFIG = str(ROOT / "configs.yaml")
# Two epochs of 4 images a class (3 batches each): every kind of write main.py makes, and a resume between epochs
RUN = ["DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "2", "DEFAULT.exp_name", "f"]
STAGE2 = ["--config", str(ROOT / "recipes" / "crt.yaml"), "DATASET.batch_size", "16", "TRAIN.epochs", "2",
          "DEFAULT.exp_name", "s2"]
WORDS = {errno.ENOSPC: "no space left on", errno.EIO: "input/output error on"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Generated CIFAR-10 (4 training and 1 test image a class), md5 checks patched and main.py run as on a machine
    without a GPU, for this module only; and one run that never failed (savedir "clean")."""
    import main
    from torchvision.datasets import CIFAR10

    from runtime import mixed_precision

    patch = pytest.MonkeyPatch()
    for name in ("train_list", "test_list", "meta"):
        patch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    patch.setattr(main, "cpu_only", lambda: True)
    patch.setattr(main, "mixed_precision", lambda requested: mixed_precision(requested, on_gpu=False))
    base = tmp_path_factory.mktemp("faults")
    make_cifar(base / "data", 10, train_per_class=4, test_per_class=1)
    accept_files_in(base / "data")
    code, err = command("main", train(base, base / "clean"))
    assert code == 0, err[-2000:]
    yield base
    patch.undo()


def train(base: Path, savedir: Path, *overrides: str) -> list[str]:
    return ["--config", CONFIG, *main_args(base / "data", savedir, *RUN, *overrides)]


def run_folder(savedir: Path, name: str = "f") -> Path:
    return savedir / "CIFAR10LT" / "resnet32" / name


def command(script: str, argv: list[str]) -> tuple[int, str]:
    """`script`'s main(argv) in this process, as a fresh process would run it: (exit status, its error line or "").
    An exception other than SystemExit propagates: a traceback is a failure."""
    module = importlib.import_module(script)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        module.main(argv)
    except SystemExit as stop:
        return (1, stop.code) if isinstance(stop.code, str) else (stop.code, "")
    return 0, ""


def numbers(folder: Path) -> dict:
    """What a finished run must reproduce: every epoch's training loss and the final test bcr."""
    results = read(folder / "results-seed0.json")
    return {"losses": [row["train_loss"] for row in results["history"]], "bcr": results["test"]["bcr"],
            "last_bcr": results["test_last_epoch"]["bcr"]}


class Faulted(NamedTuple):
    """What fail_each_write did: the files the command writes, in order, and the savedir of each failed-and-rerun
    command."""
    names: list[str]
    savedirs: list[Path]


def fail_each_write(monkeypatch, tmp_path, script: str, argv_for, watched_for, every: bool,
                    only: list[int] | None = None) -> Faulted:
    """Run `script` (argv_for(savedir)) once to count its writes, then, in a fresh savedir each time, fail its k-th
    write for each k: the one line names the file and the fault, the folder watched_for(savedir) holds what it held
    before that write and no temporary file, and the same command run again succeeds. Every file the clean command
    left in its folder was written through storage.atomic_write (or the lock's storage.rewrite). `only`: those k
    alone (-1 the last)."""
    clean = tmp_path / "count"
    with monkeypatch.context() as patch:
        faults = WriteFaults(patch, watched_for(clean))
        code, line = command(script, argv_for(clean))
    assert code == 0, line
    names = faults.names
    assert set(digest(watched_for(clean))) <= faults.under(watched_for(clean)), "a file not written by atomic_write"
    savedirs = []
    for k in sorted({k % (len(names) + 1) for k in only}) if only else range(1, len(names) + 1):
        for fault in errno_of(k, every):
            savedir = tmp_path / f"k{k}-{errno.errorcode[fault]}"
            watched = watched_for(savedir)
            with monkeypatch.context() as patch:
                faults = WriteFaults(patch, watched, fail_at=k, code=fault)
                code, line = command(script, argv_for(savedir))
            case = f"write {k} ({names[k - 1]}), {errno.errorcode[fault]}"
            assert code != 0 and "\n" not in line, f"{case}: exit {code}, {line!r}"
            assert line.startswith("error: cannot write") and names[k - 1] in line and WORDS[fault] in line, \
                f"{case}: {line!r}"
            assert leftovers(watched) == [], case
            assert digest(watched) == faults.before, f"{case}: the folder changed beyond the state before the write"
            code, line = command(script, argv_for(savedir))
            assert code == 0, f"{case}, run again: {line}"
            savedirs.append(savedir)
    return Faulted(names, savedirs)


SLOW_TOO = [False, pytest.param(True, marks=pytest.mark.slow)]  # by turns ENOSPC and EIO; --slow: both at each write


@pytest.mark.slow
@pytest.mark.parametrize("every", [False, True], ids=["by-turns", "both"])
def test_main_survives_a_failed_write_at_each_of_its_writes(bench, tmp_path, monkeypatch, every):
    """Every write of a 2-epoch run (the lock, the config, the class counts, each epoch's checkpoints and scores,
    the per-class file, the results) fails in turn; run again, it trains to the same losses and test bcr."""
    expected = numbers(run_folder(bench / "clean"))
    faulted = fail_each_write(monkeypatch, tmp_path, "main", lambda savedir: train(bench, savedir), run_folder, every)
    assert {"configs-seed0.yaml", "class-counts-seed0.json", ".seed0.lock", "model-seed0.pt", "model-seed0-best.pt",
            "results-seed0-best.json", "results-seed0-per-class.json", "results-seed0.json"} <= set(faulted.names)
    for savedir in faulted.savedirs:
        assert numbers(run_folder(savedir)) == expected, savedir.name


def test_main_survives_a_failed_write_of_its_lock_its_first_checkpoint_and_its_results(bench, tmp_path, monkeypatch):
    """The default suite's share of the test above: the first write (the lock), the first checkpoint and the last
    write (the results file), by turns ENOSPC and EIO."""
    expected = numbers(run_folder(bench / "clean"))
    faulted = fail_each_write(monkeypatch, tmp_path, "main", lambda savedir: train(bench, savedir), run_folder,
                              every=False, only=[1, 4, -1])
    assert faulted.names[0] == ".seed0.lock" and faulted.names[3] == "model-seed0.pt" and \
        faulted.names[-1] == "results-seed0.json", faulted.names
    for savedir in faulted.savedirs:
        assert numbers(run_folder(savedir)) == expected, savedir.name


@pytest.mark.slow
@pytest.mark.parametrize("every", [False, True], ids=["by-turns", "both"])
def test_stage2_survives_a_failed_write_at_each_of_its_writes(bench, tmp_path, monkeypatch, every):
    """cRT on the clean run's model: each write fails in turn; run again, it trains to the numbers of a stage-2 run
    that never failed."""
    stage1 = ["TRAIN.stage2_from", str(run_folder(bench / "clean"))]
    check = tmp_path / "never-failed"
    code, line = command("main", train(bench, check, *STAGE2, *stage1))
    assert code == 0, line
    faulted = fail_each_write(monkeypatch, tmp_path, "main", lambda savedir: train(bench, savedir, *STAGE2, *stage1),
                              lambda savedir: run_folder(savedir, "s2"), every)
    for savedir in faulted.savedirs:
        assert numbers(run_folder(savedir, "s2")) == numbers(run_folder(check, "s2")), savedir.name


@pytest.mark.parametrize("every", SLOW_TOO, ids=["by-turns", "both"])
@pytest.mark.parametrize("post_hoc", [[], ["--logit-adjust", "0,1", "--tau-norm", "1"]], ids=["plain", "post-hoc"])
def test_evaluate_survives_a_failed_write_at_each_of_its_writes(bench, tmp_path, monkeypatch, post_hoc, every):
    """evaluate.py on the clean run, with and without post-hoc corrections (a folder each): each write fails in
    turn; run again, it writes what an evaluation that never failed writes, byte for byte."""
    argv = lambda savedir: [str(run_folder(bench / "clean")), "--out", str(savedir / "eval"), *post_hoc]  # noqa: E731
    faulted = fail_each_write(monkeypatch, tmp_path, "evaluate", argv, lambda savedir: savedir / "eval", every)
    assert len(faulted.names) == (8 if post_hoc else 2)
    for savedir in faulted.savedirs:
        assert digest(savedir / "eval") == digest(tmp_path / "count" / "eval"), savedir.name


@pytest.mark.parametrize("every", SLOW_TOO, ids=["first-and-last", "both"])
def test_report_survives_a_failed_write_at_each_of_its_writes(bench, tmp_path, monkeypatch, every):
    """report.py on the clean run: its tables and figures fail in turn (the default suite: the first and the last,
    a figure; --slow: each, with ENOSPC and EIO); run again, it writes what a report that never failed writes."""
    argv = lambda savedir: [str(bench / "clean"), "--out", str(savedir / "report")]  # noqa: E731
    faulted = fail_each_write(monkeypatch, tmp_path, "report", argv, lambda savedir: savedir / "report", every,
                              only=None if every else [1, -1])
    assert {"report.md", "report.csv", "report_cells.csv"} <= set(faulted.names)
    assert any(name.endswith(".png") for name in faulted.names)
    for savedir in faulted.savedirs:
        assert digest(savedir / "report") == digest(tmp_path / "count" / "report"), savedir.name
