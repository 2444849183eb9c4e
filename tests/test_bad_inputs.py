"""Bad inputs to main.py, evaluate.py, report.py and run.sh: each ends in one line (exit status 1 or 2, no
traceback), before any work where it can, and leaves a finished run folder byte for byte as it was. Damaged files
in a run folder are named, and resumed from where the rest of the folder allows an exact resume."""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from conftest import ROOT, cpu_main_in_process, main_args, read
from fake_cifar import accept_files_in, make_cifar
from fake_lists import LIST_RUN, make_lists

CONFIG = str(ROOT / "configs.yaml")
# One short epoch that learns a little of the generated data
RUN = ["DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "1"]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by relative path, with the sha256 of its bytes; folders as "dir"."""
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def call(script: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """`script`'s main(argv) in this process, as a fresh process would run it: (exit status, stdout, stderr). An
    exception other than SystemExit propagates: a traceback is a failure."""
    module = importlib.import_module(script)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    capsys.readouterr()
    code = 0
    try:
        module.main(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Bench(NamedTuple):
    data: Path      # generated CIFAR-10
    lists: Path     # a generated ImageNet-LT (images and lists)
    savedir: Path   # holds the finished run
    folder: Path    # the finished run: savedir/CIFAR10LT/resnet32/done
    tmp: Path       # this case's own scratch folder


@pytest.fixture(scope="module")
def bench_base(tmp_path_factory):
    """A finished 1-epoch run on generated CIFAR-10, shared by every case; md5 checks patched and main.py run as on
    a machine without a GPU, for this module only."""
    import main

    patch = cpu_main_in_process()
    base = tmp_path_factory.mktemp("bad_inputs")
    make_cifar(base / "data", 10, train_per_class=10, test_per_class=2)
    accept_files_in(base / "data")
    make_lists(base / "lists", counts=[6, 4, 2], val_per_class=1, test_per_class=1)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    main.main(["--config", CONFIG, *main_args(base / "data", base / "results", *RUN, "DEFAULT.exp_name", "done")])
    folder = base / "results" / "CIFAR10LT" / "resnet32" / "done"
    assert (folder / "results-seed0.json").exists()
    yield Bench(base / "data", base / "lists", base / "results", folder, base)
    patch.undo()


@pytest.fixture
def bench(bench_base, tmp_path) -> Bench:
    return bench_base._replace(tmp=tmp_path)


def train(b: Bench, *overrides: str, datadir: Path | None = None, savedir: Path | None = None) -> list[str]:
    """main.py's argv: the finished run's settings, then `overrides`."""
    return ["--config", CONFIG, *main_args(datadir or b.data, savedir or b.savedir, *RUN, "DEFAULT.exp_name", "done",
                                           *overrides)]


def copy_run(b: Bench, name: str = "copy") -> Path:
    """A copy of the finished run folder, in a savedir of its own (b.tmp / "results"), named `name`."""
    folder = b.tmp / "results" / "CIFAR10LT" / "resnet32" / name
    shutil.copytree(b.folder, folder)
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def nowhere(b: Bench) -> Path:
    """A datadir without data: a check that came after the data were read would end in the data's error."""
    return b.tmp / "no_data"


class Case(NamedTuple):
    script: str                       # main | evaluate | report | run.sh
    argv: list[str]
    expected: list[str]               # fragments of the closing line
    watched: list[Path] = []          # folders that must stay byte for byte as they were (the finished run always)
    env: dict = {}


def seed_state(b: Bench, folder: Path, **changes) -> None:
    """The copy's last checkpoint rewritten with `changes`: e.g. a run stopped after epoch 2 of 3 that selected
    epoch 1."""
    path = folder / "model-seed0.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    torch.save({**state, **changes}, path)


def bad_list(b: Bench, line_of: Callable[[str], str], first: bool = False, prefix: str = "") -> Path:
    """A copy of the generated lists whose train list has its first line changed by `line_of` (or `prefix` put
    before the file's text); returns the copy's folder."""
    listdir = b.tmp / "lists"
    listdir.mkdir()
    for name in ("train", "val", "test"):
        shutil.copy(b.lists / f"ImageNet_LT_{name}.txt", listdir)
    path = listdir / "ImageNet_LT_train.txt"
    lines = path.read_text().splitlines()
    lines[0] = line_of(lines[0])
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return listdir


def list_run(b: Bench, listdir: Path) -> list[str]:
    return ["--config", CONFIG, *main_args(b.lists, b.tmp / "out", *LIST_RUN, "DATASET.listdir", str(listdir),
                                           "TRAIN.epochs", "1")]


def run_sh(b: Bench, **env: str) -> Case:
    env = {"SAVEDIR": str(b.tmp / "sweep"), "PYTHON": sys.executable, "LAUNCH": "false", **env}
    return Case("run.sh", [], [], env=env)


def case_other_settings_after_the_last_checkpoint_was_removed(b):
    folder = copy_run(b)
    (folder / "model-seed0.pt").unlink()
    return Case("main", train(b, "DEFAULT.exp_name", "copy", "LOSS.name", "BalancedSoftmax", savedir=b.tmp / "results"),
                ["other settings", "LOSS.name", "DEFAULT.exp_name"], [folder])


def case_a_best_checkpoint_without_the_last(b):
    folder = copy_run(b)
    (folder / "model-seed0.pt").unlink()
    return Case("main", train(b, "DEFAULT.exp_name", "copy", savedir=b.tmp / "results"),
                ["model-seed0-best.pt", "no model-seed0.pt", "DEFAULT.overwrite true", "DEFAULT.exp_name"], [folder])


def case_a_truncated_last_checkpoint(b):
    folder = copy_run(b)
    truncate(folder / "model-seed0.pt")
    return Case("main", train(b, "DEFAULT.exp_name", "copy", savedir=b.tmp / "results"),
                ["model-seed0.pt", "cannot be read", "DEFAULT.overwrite true"], [folder])


def case_a_truncated_best_checkpoint_the_last_cannot_replace(b):
    folder = copy_run(b)
    seed_state(b, folder, epoch=2, epochs=3, best_epoch=1)  # stopped after epoch 2 of 3, epoch 1 the best
    (folder / "results-seed0.json").unlink()
    truncate(folder / "model-seed0-best.pt")
    return Case("main", train(b, "DEFAULT.exp_name", "copy", savedir=b.tmp / "results"),
                ["model-seed0-best.pt", "cannot be read", "epoch 1"], [folder])


def case_an_unreadable_config_without_a_checkpoint(b):
    folder = b.tmp / "results" / "CIFAR10LT" / "resnet32" / "copy"
    folder.mkdir(parents=True)
    (folder / "configs-seed0.yaml").write_text("DEFAULT: [unclosed\n")
    return Case("main", train(b, "DEFAULT.exp_name", "copy", savedir=b.tmp / "results"),
                ["configs-seed0.yaml", "cannot be read"], [folder])


def case_a_run_stopped_in_its_first_epoch_with_other_settings(b):
    folder = b.tmp / "results" / "CIFAR10LT" / "resnet32" / "copy"
    folder.mkdir(parents=True)
    shutil.copy(b.folder / "configs-seed0.yaml", folder)
    shutil.copy(b.folder / "class-counts-seed0.json", folder)
    return Case("main", train(b, "DEFAULT.exp_name", "copy", "LOSS.name", "BalancedSoftmax",
                              savedir=b.tmp / "results"), ["other settings", "LOSS.name"], [folder])


def case_another_process_trains_the_run(b):
    folder = copy_run(b)
    seed_state(b, folder, epoch=0, epochs=1)
    (folder / "results-seed0.json").unlink()
    lock = open(folder / ".seed0.lock", "a+")  # noqa: SIM115  held until the case ends (the object lives on)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    case_another_process_trains_the_run.held = lock
    return Case("main", train(b, "DEFAULT.exp_name", "copy", savedir=b.tmp / "results"),
                ["being trained", "another process"], [folder])


CASES: dict[str, Callable[[Bench], Case]] = {
    # 1. finished results
    "other settings into a finished run": lambda b: Case("main", train(b, "LOSS.name", "BalancedSoftmax"),
                                                         ["other settings", "LOSS.name"]),
    "other settings after the last checkpoint was removed": case_other_settings_after_the_last_checkpoint_was_removed,
    "a best checkpoint without the last": case_a_best_checkpoint_without_the_last,
    "resume false on a finished run": lambda b: Case("main", train(b, "DEFAULT.resume", "false"),
                                                     ["already holds", "DEFAULT.resume true"]),
    "a run stopped in its first epoch, other settings": case_a_run_stopped_in_its_first_epoch_with_other_settings,
    "evaluate --out another run's folder": lambda b: Case(
        "evaluate", [str(copy_run(b)), "--out", str(b.folder)], ["--out", "training run", "model-seed0.pt"]),
    # 2. damaged files that allow no exact resume
    "a truncated last checkpoint": case_a_truncated_last_checkpoint,
    "a truncated best checkpoint the last cannot replace": case_a_truncated_best_checkpoint_the_last_cannot_replace,
    "an unreadable config and no checkpoint": case_an_unreadable_config_without_a_checkpoint,
    # 3. tracebacks
    "lr 0": lambda b: Case("main", train(b, "OPTIMIZER.lr", "0", datadir=nowhere(b)), ["OPTIMIZER.lr", "> 0"]),
    "seed -1": lambda b: Case("main", train(b, "DEFAULT.seed", "-1", datadir=nowhere(b)), ["DEFAULT.seed", ">= 0"]),
    "data_seed -1": lambda b: Case("main", train(b, "DEFAULT.data_seed", "-1", datadir=nowhere(b)),
                                   ["DEFAULT.data_seed", ">= 0"]),
    "malformed yaml as the first --config": lambda b: Case(
        "main", ["--config", str(write(b.tmp / "bad.yaml", "DEFAULT: [unclosed\n"))], ["bad.yaml", "not valid YAML"]),
    "a yaml list as the first --config": lambda b: Case(
        "main", ["--config", str(write(b.tmp / "list.yaml", "- a\n- b\n"))], ["list.yaml", "mapping"]),
    "savedir is a file": lambda b: Case(
        "main", train(b, "DEFAULT.exp_name", "x", datadir=nowhere(b), savedir=write(b.tmp / "file", "x")),
        ["DEFAULT.savedir", "not a folder"]),
    "evaluate --out an existing file": lambda b: Case(
        "evaluate", [str(b.folder), "--out", str(write(b.tmp / "out.txt", "x"))], ["--out", "not a folder"]),
    "a truncated CIFAR file": lambda b: Case("main", train(b, "DEFAULT.exp_name", "x", datadir=damaged_cifar(b, "cut")),
                                             ["data_batch_1", "damaged"]),
    "an empty CIFAR file": lambda b: Case("main", train(b, "DEFAULT.exp_name", "x", datadir=damaged_cifar(b, "empty")),
                                          ["data_batch_1", "damaged"]),
    "a CIFAR file without its keys": lambda b: Case(
        "main", train(b, "DEFAULT.exp_name", "x", datadir=damaged_cifar(b, "keys")), ["data_batch_1", "damaged"]),
    # 4. nonsense
    "exp_name escapes savedir": lambda b: Case("main", train(b, "DEFAULT.exp_name", "../../../../x", datadir=nowhere(b)),
                                               ["DEFAULT.exp_name", "one folder name"]),
    "exp_name absolute": lambda b: Case("main", train(b, "DEFAULT.exp_name", str(b.tmp / "abs"), datadir=nowhere(b)),
                                        ["DEFAULT.exp_name", "one folder name"]),
    "exp_name empty": lambda b: Case("main", train(b, "DEFAULT.exp_name", "''", datadir=nowhere(b)),
                                     ["DEFAULT.exp_name", "one folder name"]),
    "a list line with an absolute path": lambda b: Case(
        "main", list_run(b, bad_list(b, lambda line: f"{b.lists}/{line}")), ["ImageNet_LT_train.txt:1", "relative"]),
    "a list line with ..": lambda b: Case(
        "main", list_run(b, bad_list(b, lambda line: f"../lists/{line}")), ["ImageNet_LT_train.txt:1", "relative"]),
    "a negative label": lambda b: Case(
        "main", list_run(b, bad_list(b, lambda line: line.rsplit(" ", 1)[0] + " -1")),
        ["ImageNet_LT_train.txt:1", "-1"]),
    "lr nan": lambda b: Case("main", train(b, "OPTIMIZER.lr", "nan", datadir=nowhere(b)), ["OPTIMIZER.lr", "> 0"]),
    "lr inf": lambda b: Case("main", train(b, "OPTIMIZER.lr", "inf", datadir=nowhere(b)), ["OPTIMIZER.lr", "> 0"]),
    "run.sh SEEDS=''": lambda b: run_sh(b, SEEDS="")._replace(expected=["SEEDS"]),
    "run.sh DATASETS=CIFAR10": lambda b: run_sh(b, DATASETS="CIFAR10")._replace(expected=["DATASETS", "CIFAR10LT"]),
    "run.sh FACTORS=0.5": lambda b: run_sh(b, FACTORS="10 0.5")._replace(expected=["FACTORS", "0.5"]),
    "run.sh FACTORS=ten": lambda b: run_sh(b, FACTORS="ten")._replace(expected=["FACTORS", "ten"]),
    "run.sh LOSSES=CE": lambda b: run_sh(b, LOSSES="CE")._replace(expected=["LOSSES", "BalancedSoftmax"]),
    # 5. misleading messages
    "a text file as a checkpoint to evaluate": lambda b: Case(
        "evaluate", [str(write(b.tmp / "notes.pt", "some text\n"))], ["notes.pt", "not a checkpoint"]),
    "a truncated checkpoint to evaluate": lambda b: Case(
        "evaluate", [str(cut_copy(b, "model-seed0-best.pt"))], ["model-seed0-best.pt", "damaged"]),
    "a JSON file as a checkpoint to evaluate": lambda b: Case(
        "evaluate", [str(shutil.copy(b.folder / "results-seed0.json", b.tmp / "scores.json"))],
        ["scores.json", "not a checkpoint"]),
    "a folder as --config": lambda b: Case("main", ["--config", str(b.tmp)], [str(b.tmp), "is a folder"]),
    "a CIFAR file of the wrong shape": lambda b: Case(
        "main", train(b, "DEFAULT.exp_name", "x", datadir=damaged_cifar(b, "shape")),
        ["cifar/cifar-10-batches-py is damaged", "torchvision's CIFAR format"]),
    "an exp_name too long for the file system": lambda b: Case(
        "main", train(b, "DEFAULT.exp_name", "x" * 300, datadir=nowhere(b)),
        ["DEFAULT.exp_name", "longer than the file system allows"]),
    "a text file as TRAIN.stage2_from": lambda b: Case(
        "main", train(b, "DEFAULT.exp_name", "s2", "TRAIN.stage2_from", str(write(b.tmp / "notes.pt", "text\n"))),
        ["notes.pt", "not a checkpoint"]),
    "another process trains the run": case_another_process_trains_the_run,
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cut_copy(b: Bench, name: str) -> Path:
    path = b.tmp / name
    shutil.copy(b.folder / name, path)
    truncate(path)
    return path


def damaged_cifar(b: Bench, how: str) -> Path:
    """A copy of the generated CIFAR-10 whose first training file is damaged, its md5 accepted as a copy converted
    by hand would be."""
    import pickle

    datadir = b.tmp / "cifar"
    shutil.copytree(b.data, datadir)
    path = datadir / "cifar-10-batches-py" / "data_batch_1"
    if how == "cut":
        truncate(path)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "shape":  # every key there, the images not 3 x 32 x 32
        path.write_bytes(pickle.dumps({"data": np.zeros((5, 10), dtype=np.uint8), "labels": [0] * 5}))
    else:
        path.write_bytes(pickle.dumps({"pixels": []}))
    accept_files_in(datadir)
    return datadir


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_ends_in_one_line_and_changes_no_run(bench, name, capsys):
    case = CASES[name](bench)
    watched = [bench.folder, *case.watched]
    before = [digest(folder) for folder in watched]
    if case.script == "run.sh":
        proc = subprocess.run(["bash", "run.sh"], cwd=ROOT, env={**os.environ, **case.env}, capture_output=True,
                              text=True, timeout=60)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        assert not Path(case.env["SAVEDIR"]).exists(), "run.sh started before refusing"
    else:
        code, out, err = call(case.script, case.argv, capsys)
    line = last_line(err)
    assert code in (1, 2), f"exit {code}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert line.startswith("error:"), f"closing line {line!r}\nstderr:\n{err[-2000:]}"
    for fragment in case.expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert [digest(folder) for folder in watched] == before


# Damaged files the rest of the folder can replace, moved run folders, starting over, the run folder's name ---------

def finished_but_unreported(b: Bench) -> Path:
    """A copy of the finished run as a crash in its final test leaves it: every epoch trained, no results yet."""
    folder = copy_run(b)
    for name in ("results-seed0.json", "results-seed0-per-class.json"):
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize("name", ["model-seed0-best.pt", "results-seed0-best.json"])
def test_a_damaged_best_file_the_last_checkpoint_holds_is_kept_aside_and_written_again(bench, name, capsys):
    folder = finished_but_unreported(bench)
    (folder / name).write_bytes((folder / name).read_bytes()[:50])
    damaged = (folder / name).read_bytes()
    code, out, err = call("main", train(bench, "DEFAULT.exp_name", "copy", savedir=bench.tmp / "results"), capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    lines = [line for line in out.splitlines() if "cannot be read" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{name} cannot be read (damaged")
    assert lines[0].endswith(f"): kept as {name}.damaged; written again from model-seed0.pt")
    assert (folder / f"{name}.damaged").read_bytes() == damaged  # nothing the user had is lost
    assert (folder / name).read_bytes() == (bench.folder / name).read_bytes() or name.endswith(".pt")
    assert torch.load(folder / "model-seed0-best.pt", map_location="cpu")["epoch"] == 1
    assert read(folder / "results-seed0.json")["test"] == read(bench.folder / "results-seed0.json")["test"]


def test_a_damaged_results_file_of_a_finished_run_is_kept_aside_and_written_again(bench, capsys):
    folder = copy_run(bench)
    (folder / "results-seed0.json").write_text('{"test": ')
    code, out, err = call("main", train(bench, "DEFAULT.exp_name", "copy", savedir=bench.tmp / "results"), capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "results-seed0.json cannot be read" in out and "kept as results-seed0.json.damaged" in out
    assert (folder / "results-seed0.json.damaged").read_text() == '{"test": '
    assert read(folder / "results-seed0.json")["test"] == read(bench.folder / "results-seed0.json")["test"]
    assert "epoch 1/1 |" not in out  # only the final test ran


def test_a_run_folder_copied_to_another_savedir_resumes_there(bench, capsys):
    folder = copy_run(bench, "done")
    before = digest(folder)
    code, out, err = call("main", train(bench, savedir=bench.tmp / "results"), capsys)
    assert code == 0, err[-2000:]
    assert "shows this run finished; nothing to do" in out
    assert digest(folder) == before


def test_overwrite_trains_a_seed_again_on_purpose(bench, capsys):
    folder = copy_run(bench)
    code, out, err = call("main", train(bench, "DEFAULT.exp_name", "copy", "LOSS.name", "BalancedSoftmax",
                                        "DEFAULT.overwrite", "true", savedir=bench.tmp / "results"), capsys)
    assert code == 0, err[-2000:]
    assert "DEFAULT.overwrite true: removed seed 0's" in out and "epoch 1/1 |" in out
    assert read(folder / "results-seed0.json")["config"]["LOSS"]["name"] == "BalancedSoftmax"
    assert not list(folder.glob(".seed0.lock"))


def test_a_run_stopped_in_its_first_epoch_starts_again_with_the_same_settings(bench, capsys):
    folder = bench.tmp / "results" / "CIFAR10LT" / "resnet32" / "copy"
    folder.mkdir(parents=True)
    for name in ("configs-seed0.yaml", "class-counts-seed0.json"):
        shutil.copy(bench.folder / name, folder)
    code, out, err = call("main", train(bench, "DEFAULT.exp_name", "copy", savedir=bench.tmp / "results"), capsys)
    assert code == 0, err[-2000:]
    assert read(folder / "results-seed0.json")["test"] == read(bench.folder / "results-seed0.json")["test"]


def test_without_exp_name_ce_and_bs_runs_get_folders_of_their_own(bench, capsys):
    """The README's CE and Balanced Softmax commands set no DEFAULT.exp_name: each names its own folder from the
    loss, the imbalance and the recipe, as run.sh does."""
    savedir = bench.tmp / "results"
    base = ["--config", CONFIG, *main_args(bench.data, savedir, *RUN)]
    for overrides in ([], ["LOSS.name", "BalancedSoftmax", "DATASET.imbalance_type", "exp",
                           "DATASET.imbalance_factor", "5"]):
        code, out, err = call("main", base + overrides, capsys)
        assert code == 0, err[-2000:]
    runs = savedir / "CIFAR10LT" / "resnet32"
    assert sorted(p.name for p in runs.iterdir()) == ["BalancedSoftmax-IF_5", "CrossEntropyLoss-IF_1"]
    assert read(runs / "BalancedSoftmax-IF_5" / "results-seed0.json")["config"]["DEFAULT"]["exp_name"] == \
        "BalancedSoftmax-IF_5"


@pytest.mark.parametrize("overrides, configs, name", [
    ([], [], "CrossEntropyLoss-IF_1"),
    (["LOSS.name", "BalancedSoftmax", "DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "100"], [],
     "BalancedSoftmax-IF_100"),
    (["DATASET.imbalance_type", "step", "DATASET.imbalance_factor", "12.5"], [], "CrossEntropyLoss-step_IF_12.5"),
    (["DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "100"], ["recipes/ldam_200ep.yaml"],
     "CrossEntropyLoss-IF_100-ldam_200ep"),
    (["DATASET.name", "ImageNetLT"], ["recipes/imagenet_lt_resnet10.yaml"], "CrossEntropyLoss-imagenet_lt_resnet10"),
])
def test_the_default_run_folder_is_named_as_run_sh_names_it(overrides, configs, name):
    from config import load_config
    from run_folder import default_exp_name

    cfg = load_config([CONFIG, *(str(ROOT / c) for c in configs)], overrides)
    assert cfg.DEFAULT.exp_name is None and default_exp_name(cfg, configs) == name


def test_report_tells_a_run_training_now_from_one_that_stopped(bench):
    from reporting.runs import folder_runs
    from run_folder import RunLock

    folder = copy_run(bench)
    seed_state(bench, folder, epoch=0, epochs=1)
    (folder / "results-seed0.json").unlink()
    assert folder_runs(folder)[0].note == "stopped mid-training: rerun the same command to resume it"
    with RunLock(folder, 0):
        note = folder_runs(folder)[0].note
    assert note.startswith(f"training now (pid {os.getpid()} on ") and note.endswith(")")
    assert not (folder / ".seed0.lock").exists()
    # every epoch trained, the results not yet written: in its final test while the lock is held, stopped after
    seed_state(bench, folder, epoch=1, epochs=1)
    with RunLock(folder, 0):
        assert folder_runs(folder)[0].note.startswith("in its final test now (pid ")
    assert folder_runs(folder)[0].note.startswith("trained every epoch, but stopped")
    # in its first epoch: the config written, no checkpoint yet, the lock held
    (folder / "model-seed0.pt").unlink()
    assert folder_runs(folder)[0].note == "no checkpoint: stopped during its first epoch"
    with RunLock(folder, 0):
        assert folder_runs(folder)[0].note.startswith(f"training now (pid {os.getpid()} on ")


def test_a_savedir_that_cannot_be_written_is_refused_before_any_work(bench, capsys, monkeypatch):
    import run_folder

    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: False)  # as for a user without rights
    code, _, err = call("main", train(bench, "DEFAULT.exp_name", "x", datadir=nowhere(bench),
                                      savedir=bench.tmp / "ro" / "results"), capsys)
    assert code == 1 and "Traceback" not in err
    assert last_line(err) == f"error: DEFAULT.savedir {bench.tmp / 'ro' / 'results' / 'CIFAR10LT' / 'resnet32' / 'x'}: " \
                             f"{bench.tmp} is not writable: pick a folder you can write to"


def test_a_list_file_with_a_bom_reads_as_without(tmp_path):
    from datasets.lists import read_list

    path = tmp_path / "ImageNet_LT_train.txt"
    path.write_text("\ufefftrain/a/1.jpg 0\ntrain/b/2.jpg 1\n", encoding="utf-8")
    assert read_list(path) == (["train/a/1.jpg", "train/b/2.jpg"], [0, 1])
