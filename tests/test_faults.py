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

import checkpoint
import storage
from conftest import ROOT, cpu_main_in_process, main_args, read
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
    patch = cpu_main_in_process()
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


SLOW_TOO = [False, pytest.param(True, marks=pytest.mark.slow)]  # by turns ENOSPC and EIO; --slow: both, each write


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


def test_main_survives_a_failed_write_of_its_lock_config_first_checkpoint_and_results(bench, tmp_path, monkeypatch):
    """The default suite's share of the test above: the first write (the lock), the config, the first checkpoint
    and the last write (the results file), by turns ENOSPC and EIO."""
    expected = numbers(run_folder(bench / "clean"))
    faulted = fail_each_write(monkeypatch, tmp_path, "main", lambda savedir: train(bench, savedir), run_folder,
                              every=False, only=[1, 2, 4, -1])
    assert faulted.names[:2] == [".seed0.lock", "configs-seed0.yaml"] and faulted.names[3] == "model-seed0.pt" and \
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


# ---------------------------------------------------------------- kill -9 in the final test and in the results

@pytest.mark.slow
@pytest.mark.parametrize("moment", ["final-test", "results-seed0-per-class.json", "results-seed0.json"])
def test_a_run_killed_in_its_final_test_or_its_results_finishes_with_the_same_numbers(bench, tmp_path, moment):
    """kill -9 as the final test pass begins, or with a results file half way to its place (written, not renamed):
    the same command finishes with the losses and test bcr of a run never killed, and leaves no temporary file.
    With a validation split, so that the final test is a pass of its own."""
    overrides = ["DATASET.val_per_class", "1"]
    argv = main_args(bench / "data", tmp_path / "never-killed", *RUN, *overrides)
    check = subprocess.run([sys.executable, str(ROOT / "tests" / "fake_cifar.py"), str(bench / "data"), "main.py",
                            "--config", CONFIG, *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stderr[-2000:]
    argv = ["--config", CONFIG, *main_args(bench / "data", tmp_path / "killed", *RUN, *overrides)]
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_at.py"), moment, str(bench / "data"),
                             "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = run_folder(tmp_path / "killed")
    assert not (folder / "results-seed0.json").exists()
    again = subprocess.run([sys.executable, str(ROOT / "tests" / "fake_cifar.py"), str(bench / "data"), "main.py",
                            *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert "resuming" in again.stdout
    assert numbers(folder) == numbers(run_folder(tmp_path / "never-killed"))
    assert leftovers(folder) == []


# ---------------------------------------------------------------- the atomic write, the lock, names too long

def test_an_interrupted_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    """The write raises half way (ENOSPC after some bytes): the file it was replacing is as it was, no temporary
    file stays, and the error is one line naming the file and the fault."""
    path = tmp_path / "results.json"
    path.write_text("old")

    def half(tmp: Path) -> None:
        tmp.write_text("new, but cut")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    with pytest.raises(StorageError) as raised:
        storage.atomic_write(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    assert str(raised.value).startswith(f"cannot write {path}: no space left on /") and "\n" not in str(raised.value)


def test_torch_s_own_write_failure_is_a_storage_error_and_leaves_no_temporary_file(tmp_path):
    """torch.save raises RuntimeError, not OSError, when its writer fails (here on /dev/full, as on a full disk)."""
    def to_full_disk(tmp: Path) -> None:
        tmp.write_bytes(b"PK")
        torch.save({"weights": torch.zeros(1000)}, "/dev/full")
    with pytest.raises(StorageError, match=r"cannot write .*model\.pt: "):
        storage.atomic_write(tmp_path / "model.pt", to_full_disk)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_a_write_leaves_no_temporary_file(tmp_path):
    def interrupted(tmp: Path) -> None:
        tmp.write_text("part")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(tmp_path / "a.json", interrupted)
    assert os.listdir(tmp_path) == []


def test_a_write_syncs_the_file_then_its_folder(tmp_path, monkeypatch):
    """fsync of the file's data before the rename, of the folder after it: a rename is durable once both are."""
    synced, fsync = [], os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)
    monkeypatch.setattr(os, "fsync", record)
    storage.atomic_write(tmp_path / "a.json", lambda tmp: tmp.write_text("{}"))
    assert synced == [str(tmp_path / ".a.json.tmp"), str(tmp_path)]


def test_the_lock_on_a_full_disk_leaves_no_empty_lock_file(tmp_path, monkeypatch):
    from run_folder import RunLock

    with monkeypatch.context() as patch:
        WriteFaults(patch, tmp_path, fail_at=1)
        with pytest.raises(StorageError, match=r"cannot write .*\.seed0\.lock: no space left"):
            with RunLock(tmp_path / "run", 0):
                pass
    assert not (tmp_path / "run").exists()


def test_an_exp_name_too_long_for_the_file_system_is_refused_before_training(bench, tmp_path):
    code, line = command("main", train(bench, tmp_path, "DEFAULT.exp_name", "x" * 300))
    assert code == 1 and "DEFAULT.exp_name" in line and "longer than the file system allows" in line, line
    assert "300 bytes, at most 255" in line and not (tmp_path / "CIFAR10LT").exists()
    code, line = command("main", train(bench, tmp_path, "DEFAULT.exp_name", "x" * 255, "TRAIN.epochs", "1"))
    assert code == 0, line


def test_a_storage_fault_raised_outside_a_write_is_one_line_too(bench, tmp_path, monkeypatch):
    """A folder made on a full disk (mkdir raises ENOSPC): the one line, not a traceback."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "CIFAR10LT"))
    monkeypatch.setattr(Path, "mkdir", full)
    code, line = command("main", train(bench, tmp_path))
    assert code == 1 and line.startswith(f"error: cannot write {tmp_path / 'CIFAR10LT'}: no space left on"), line


# ---------------------------------------------------------------- finished means its files are whole

def finished_copy(bench: Path, tmp_path: Path) -> Path:
    shutil.copytree(bench / "clean", tmp_path / "copy")
    return run_folder(tmp_path / "copy")


def report_skips(tmp_path: Path, capsys, folder: Path, name: str) -> None:
    """report.py leaves the run out of its tables, naming the file and the command that repairs it."""
    code, _ = command("report", [str(tmp_path / "copy"), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 0 and f"skipped {folder / 'results-seed0.json'}: {name} is unreadable" in err, err
    assert "main.py command" in err, err
    assert f"{name} is unreadable" in (tmp_path / "report" / "report.md").read_text().split("## Incomplete")[1]


def test_a_finished_run_with_a_damaged_per_class_file_is_named_and_made_whole_again(bench, tmp_path, capsys):
    """report.py names it; main.py, run again, keeps it aside and writes it again in its final test, to the bytes
    the run wrote; the report then tables the run."""
    folder = finished_copy(bench, tmp_path)
    whole = (folder / "results-seed0-per-class.json").read_bytes()
    (folder / "results-seed0-per-class.json").write_text('{"acc": "garbage"}')
    report_skips(tmp_path, capsys, folder, "results-seed0-per-class.json")
    code, line = command("main", train(bench, tmp_path / "copy"))
    out = capsys.readouterr().out
    assert code == 0, line
    assert "results-seed0-per-class.json cannot be read (num_per_cls is not a list" in out, out
    assert "kept as results-seed0-per-class.json.damaged" in out, out
    assert (folder / "results-seed0-per-class.json").read_bytes() == whole
    assert numbers(folder) == numbers(run_folder(bench / "clean"))
    command("report", [str(tmp_path / "copy"), "--out", str(tmp_path / "report")])
    assert "skipped" not in capsys.readouterr().err


def test_a_finished_run_with_a_truncated_best_checkpoint_is_named_with_the_way_out(bench, tmp_path, capsys):
    """The clean run selected epoch 1 of 2: its last checkpoint cannot write the best one again. report.py names
    it; main.py, run again, refuses in one line naming it and the way out, and changes nothing."""
    folder = finished_copy(bench, tmp_path)
    path = folder / "model-seed0-best.pt"
    path.write_bytes(path.read_bytes()[:1000])
    report_skips(tmp_path, capsys, folder, "model-seed0-best.pt")
    before = digest(folder)
    code, line = command("main", train(bench, tmp_path / "copy"))
    assert code == 1 and "model-seed0-best.pt cannot be read" in line and "DEFAULT.overwrite true" in line, line
    assert digest(folder) == before


def test_report_skips_a_results_file_of_the_wrong_type_and_reports_the_rest(bench, tmp_path, capsys):
    """A string where test.bcr's number belongs: named with its key, left out; the other run is reported."""
    shutil.copytree(run_folder(bench / "clean"), run_folder(tmp_path / "runs", "good"))
    bad = run_folder(tmp_path / "runs", "bad")
    shutil.copytree(run_folder(bench / "clean"), bad)
    results = read(bad / "results-seed0.json")
    results["test"]["bcr"] = "0.5"
    (bad / "results-seed0.json").write_text(json.dumps(results))
    code, _ = command("report", [str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"skipped {bad / 'results-seed0.json'}: results-seed0.json is not as main.py writes it (test.bcr is " \
           '"0.5", not a number)' in err, err
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "CrossEntropyLoss" in report.split("## Incomplete")[0] and "test.bcr" in report.split("## Incomplete")[1]


def test_a_damaged_config_beside_a_last_checkpoint_is_named_kept_aside_and_written_again(bench, tmp_path, capsys):
    """The last checkpoint holds the config: the run resumes (here: is found finished) and says what it did."""
    folder = finished_copy(bench, tmp_path)
    (folder / "configs-seed0.yaml").write_text("DEFAULT: [unclosed\n")
    code, line = command("main", train(bench, tmp_path / "copy"))
    out = capsys.readouterr().out
    assert code == 0, line
    assert "configs-seed0.yaml cannot be read" in out and "kept as configs-seed0.yaml.damaged" in out, out
    assert checkpoint.read_saved_config(folder / "configs-seed0.yaml")["DEFAULT"]["exp_name"] == "f"
