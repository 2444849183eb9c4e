"""report.py: tables, CSV and figures from real main.py runs, and its pooling and bold logic on synthetic results."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import report
from conftest import FAST_RUN, ROOT, check_ok, run_main
from fake_cifar import make_cifar
from reporting import pooling, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOSSES = ("CrossEntropyLoss", "BalancedSoftmax")


def table(markdown: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first markdown table whose first column is `first_header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [cell.strip() for cell in lines[start].strip("|").split("|")], rows


def expected_cell(values: list[float]) -> str:
    """The cell text recomputed here: percentages, sample std, seed count."""
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000, f"{path} looks empty"


# ---------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, str]:
    """`bash run.sh` itself, cut down to CE and BS at IF 10, seeds 0 and 1, one epoch each on a CIFAR-10 of 40
    training and 10 test images per class: its output, and the report.md it wrote at its end."""
    datadir, savedir = tmp_path_factory.mktemp("report_data"), tmp_path_factory.mktemp("report_runs")
    make_cifar(datadir, 10, train_per_class=40, test_per_class=10)
    env = {**os.environ, "SEEDS": "0 1", "DATASETS": "CIFAR10LT", "FACTORS": "10", "SAVEDIR": str(savedir),
           "LAUNCH": f"{sys.executable} tests/fake_cifar.py {datadir}", "PYTHON": sys.executable,
           "WANDB_SILENT": "true"}
    # run.sh's validation split (50 a class) would not fit 40 images a class: select on the test set, as before
    done = subprocess.run(["bash", "run.sh", "TRAIN.epochs", "1", "DATASET.datadir", str(datadir), *FAST_RUN,
                           "DATASET.draw", "torch", "DATASET.val_per_class", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return savedir, done, (savedir / "report.md").read_text()


@pytest.fixture(scope="module")
def results(sweep) -> Path:
    """The sweep's runs plus a copy of the CE folder two levels deeper whose results files were deleted, as a run
    that crashed would leave it."""
    savedir = sweep[0]
    crashed = savedir / "old" / "sweep" / "CE-crashed"
    shutil.copytree(savedir / "CIFAR10LT" / "resnet32" / "CrossEntropyLoss-IF_10", crashed)
    for path in crashed.glob("results-seed*"):
        path.unlink()
    return savedir


@pytest.fixture(scope="module")
def written(results) -> tuple[Path, str]:
    report.main([str(results)])
    return results, (results / "report.md").read_text()


def seed_results(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("results-seed*.json"))
            if re.fullmatch(r"results-seed[0-9]+\.json", path.name)]


@pytest.mark.slow
def test_run_sh_trains_each_cell_and_writes_the_report(sweep):
    savedir, done, markdown = sweep
    assert done.stdout.count("== dataset: CIFAR10LT") == 4
    for loss in LOSSES:
        folder = savedir / "CIFAR10LT" / "resnet32" / f"{loss}-IF_10"
        assert len(seed_results(folder)) == 2, f"{folder} lacks a seed's results"
    header, rows = table(markdown, "loss")
    assert header == ["loss", "CIFAR10LT IF 10"] and [row[0] for row in rows] == list(LOSSES)
    assert all(row[1].strip("*").endswith("(n=2)") for row in rows)
    assert "## Incomplete or crashed runs\n\nNone" in markdown
    for name in ("bcr_vs_imbalance.png", "per_class_CIFAR10LT_IF10.png", "confusion_CIFAR10LT_IF10.png",
                 "curves_CIFAR10LT_IF10.png"):
        assert_png(savedir / name)


@pytest.mark.slow
def test_a_recipe_sweeps_beside_an_earlier_sweep_into_folders_of_its_own(sweep, tmp_path):
    """run.sh with a RECIPE over a results folder that holds an earlier sweep (folders named <loss>-IF_<k>, as before
    recipes had folders of their own): the recipe's run trains in a folder of its own instead of stopping on the
    earlier run's, and the report reads the old folders and the new side by side."""
    savedir = tmp_path / "results"
    shutil.copytree(sweep[0], savedir)
    earlier = savedir / "CIFAR10LT" / "resnet32" / "CrossEntropyLoss-IF_10"
    datadir = yaml.safe_load((earlier / "configs-seed0.yaml").read_text())["DATASET"]["datadir"]
    recipe = tmp_path / "lr005.yaml"
    recipe.write_text("OPTIMIZER:\n  lr: 0.05\n")
    env = {**os.environ, "SEEDS": "0", "DATASETS": "CIFAR10LT", "FACTORS": "10", "LOSSES": "CrossEntropyLoss",
           "RECIPE": str(recipe), "SAVEDIR": str(savedir), "LAUNCH": f"{sys.executable} tests/fake_cifar.py {datadir}",
           "PYTHON": sys.executable, "WANDB_SILENT": "true"}
    # as the earlier sweep ran: 40 images a class leave no room for run.sh's 50 validation images a class
    done = subprocess.run(["bash", "run.sh", "TRAIN.epochs", "1", "DATASET.datadir", datadir, *FAST_RUN,
                           "DATASET.draw", "torch", "DATASET.val_per_class", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(seed_results(earlier.with_name("CrossEntropyLoss-IF_10-lr005"))) == 1
    assert len(seed_results(earlier)) == 2
    _, rows = table((savedir / "report.md").read_text(), "loss")
    assert sorted((row[0], row[1].strip("*").split("(")[-1]) for row in rows) == [
        ("BalancedSoftmax [OPTIMIZER.lr=0.1]", "n=2)"), ("CrossEntropyLoss [OPTIMIZER.lr=0.05]", "n=1)"),
        ("CrossEntropyLoss [OPTIMIZER.lr=0.1]", "n=2)")]


@pytest.mark.slow
def test_table1_has_a_row_per_loss_and_recomputed_cells(written):
    root, markdown = written
    header, rows = table(markdown, "loss")
    assert header == ["loss", "CIFAR10LT IF 10"]
    assert [row[0] for row in rows] == list(LOSSES)
    for loss, row in zip(LOSSES, rows):
        bcrs = [r["test"]["bcr"] for r in seed_results(root / "CIFAR10LT" / "resnet32" / f"{loss}-IF_10")]
        assert len(bcrs) == 2
        assert row[1].strip("*") == expected_cell(bcrs)


@pytest.mark.slow
def test_bold_cell_is_the_column_maximum(written):
    _, markdown = written
    _, rows = table(markdown, "loss")
    means = [float(row[1].strip("*").split()[0]) for row in rows]
    bold = [row[1].startswith("**") for row in rows]
    if means[0] == means[1]:
        assert all(bold)
    else:
        assert bold == [m == max(means) for m in means]


@pytest.mark.slow
def test_selection_groups_and_incomplete_runs(written):
    root, markdown = written
    selected_by = seed_results(root / "CIFAR10LT" / "resnet32" / "BalancedSoftmax-IF_10")[0]["selected_by"]
    assert f"Checkpoint selection: {selected_by}" in markdown
    header, rows = table(markdown, "imbalance")
    assert header[:5] == ["imbalance", "loss", "n", "bcr", "bcr (last epoch)"] and "worst class" in header
    assert all(row[header.index("many")] == "–" for row in rows)  # 40 images in the largest class: none > 100
    section = markdown.split("## Incomplete or crashed runs")[1].split("## ")[0]
    _, incomplete = table(section, "run")
    assert sorted((row[0], row[1]) for row in incomplete) == [("old/sweep/CE-crashed", "0"),
                                                             ("old/sweep/CE-crashed", "1")]
    assert all(row[6] == "1 of 1" for row in incomplete)


@pytest.mark.slow
def test_csv_rows(written):
    root, _ = written
    with open(root / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert sorted(row["status"] for row in rows) == ["complete"] * 4 + ["incomplete"] * 2
    for row in rows:
        if row["status"] == "complete":
            folder = root / row["run"]
            stored = json.loads((folder / f"results-seed{row['seed']}.json").read_text())
            assert float(row["test_bcr"]) == pytest.approx(stored["test"]["bcr"])
            assert row["test_many_acc"] == ""  # None is an empty field, NaN in pandas
            assert (row["dataset"], row["imbalance_factor"], row["model"]) == ("CIFAR10LT", "10", "resnet32")
    with open(root / "report_cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert sorted(row["loss"] for row in cells) == sorted(LOSSES)
    assert all(row["bcr_n"] == "2" and row["seeds"] == "0 1" for row in cells)


@pytest.mark.slow
def test_figures_are_pngs(written):
    root, markdown = written
    for name in ("bcr_vs_imbalance.png", "per_class_CIFAR10LT_IF10.png", "confusion_CIFAR10LT_IF10.png",
                 "curves_CIFAR10LT_IF10.png"):
        assert_png(root / name)
        assert f"]({name})" in markdown


@pytest.mark.slow
def test_single_run_folder(written, tmp_path, capsys):
    root, _ = written
    single = tmp_path / "one"
    single.mkdir()
    source = root / "CIFAR10LT" / "resnet32" / "BalancedSoftmax-IF_10"
    for path in source.iterdir():
        if "seed0" in path.name or path.name == "configs.yaml":
            shutil.copy(path, single / path.name)
    report.main([str(single)])
    assert str(single / "report.md") in capsys.readouterr().out
    markdown = (single / "report.md").read_text()
    _, rows = table(markdown, "loss")
    bcr = json.loads((single / "results-seed0.json").read_text())["test"]["bcr"]
    assert rows == [["BalancedSoftmax", expected_cell([bcr])]]  # one cell: nothing to be best against
    assert_png(single / "bcr_vs_imbalance.png")
    assert not list(single.glob("per_class_*.png"))
    assert "no per-class or confusion figure" in markdown


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_no_runs_is_a_one_line_error(tmp_path, capsys, kind):
    folder = tmp_path / "nothing"
    if kind == "empty":
        folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---------------------------------------------------------------- synthetic results

def fake_config(root: Path, loss: str, seed: int, factor: int = 10, lr: float = 0.1, dataset: str = "CIFAR10LT",
                iterations: int | None = None) -> dict:
    """The parts of a saved config that report.py reads; TRAIN.epochs is configs.yaml's 50 under TRAIN.iterations."""
    return {"DEFAULT": {"seed": seed, "savedir": str(root), "exp_name": f"{loss}-IF_{factor}", "data_seed": None},
            "DATASET": {"name": dataset, "imbalance_type": "exp", "imbalance_factor": factor, "datadir": "/x"},
            "LOSS": {"name": loss}, "MODEL": {"name": "resnet32"}, "OPTIMIZER": {"name": "SGD", "lr": lr},
            "TRAIN": {"epochs": 50 if iterations else 3, "iterations": iterations, "wandb": {"use": False}}}


def fake_result(root: Path, loss: str, seed: int, bcr: float, factor: int = 10, lr: float = 0.1,
                dataset: str = "CIFAR10LT", folder: str | None = None, iterations: int | None = None, epochs: int = 3,
                **test) -> Path:
    """A results-seed file as main.py writes it (no checkpoint or per-class file): enough for the tables."""
    config = fake_config(root, loss, seed, factor, lr, dataset, iterations)
    scores = {"bcr": bcr, "acc": bcr, "many_acc": None, "medium_acc": 0.5, "few_acc": 0.1, "head_acc": 0.6,
              "mid_acc": 0.3, "tail_acc": 0.1, "worst_class_acc": 0.0, **test}
    path = root / dataset / "resnet32" / (folder or f"{loss}-IF_{factor}") / f"results-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"selected_by": "val bcr", "best_epoch": 2, "epochs": epochs, "test": scores,
                                "test_last_epoch": {**scores, "bcr": bcr - 0.01}, "config": config}))
    return path


def shared_line(markdown: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("Settings shared by every cell: "))


def test_the_headline_and_csv_give_the_epochs_runs_by_iterations_trained(tmp_path):
    # BALMS' 13,000 iterations at batch 512 last 520 epochs of CIFAR-10-LT at IF 100 and 591 at IF 200, not the
    # TRAIN.epochs 50 their configs still hold
    fake_result(tmp_path, "BalancedSoftmax", 0, 0.8, factor=100, iterations=13000, epochs=520)
    fake_result(tmp_path, "BalancedSoftmax", 0, 0.7, factor=200, iterations=13000, epochs=591)
    report.main([str(tmp_path)])
    line = shared_line((tmp_path / "report.md").read_text())
    assert line.startswith("Settings shared by every cell: epochs 520-591, TRAIN.iterations 13000, ")
    assert "50" not in line
    with open(tmp_path / "report.csv", newline="") as f:
        assert sorted(row["epochs"] for row in csv.DictReader(f)) == ["520", "591"]


def test_the_headline_of_runs_by_epochs_gives_their_epochs(tmp_path):
    fake_result(tmp_path, "CrossEntropyLoss", 0, 0.4)
    fake_result(tmp_path, "BalancedSoftmax", 0, 0.5)
    report.main([str(tmp_path)])
    line = shared_line((tmp_path / "report.md").read_text())
    assert line.startswith("Settings shared by every cell: epochs 3, ") and "TRAIN.iterations" not in line


def stopped_run(root: Path, epoch: int, iterations: int | None, epochs: int | None) -> None:
    """The last checkpoint of a run stopped after `epoch` epochs, with no results: `epochs` is the run's length as
    main.py saves it, None for a checkpoint from before it saved it."""
    folder = root / "CIFAR10LT" / "resnet32" / "BalancedSoftmax-IF_200"
    folder.mkdir(parents=True)
    state = {"epoch": epoch, "config": fake_config(root, "BalancedSoftmax", 0, 200, iterations=iterations)}
    torch.save(state if epochs is None else {**state, "epochs": epochs}, folder / "model-seed0.pt")


@pytest.mark.parametrize("epoch, iterations, epochs, finished, note", [
    (50, 13000, 591, "50 of 591", "stopped mid-training"),
    (591, 13000, 591, "591 of 591", "trained every epoch, but stopped before writing its results"),
    (50, 13000, None, "50 of ?", "stopped mid-training"),  # its length depends on the data: not in the checkpoint
    (3, None, None, "3 of 3", "trained every epoch, but stopped before writing its results"),  # TRAIN.epochs 3
    (2, None, 3, "2 of 3", "stopped mid-training"),
])
def test_an_unfinished_run_counts_the_epochs_it_trains(tmp_path, epoch, iterations, epochs, finished, note):
    stopped_run(tmp_path, epoch, iterations, epochs)
    report.main([str(tmp_path)])
    section = (tmp_path / "report.md").read_text().split("## Incomplete or crashed runs")[1]
    header, rows = table(section, "run")
    assert len(rows) == 1
    row = dict(zip(header, rows[0]))
    assert row["epochs finished"] == finished and row["note"].startswith(note)
    with open(tmp_path / "report.csv", newline="") as f:
        assert [row["epochs"] for row in csv.DictReader(f)] == [finished.split(" of ")[1].replace("?", "")]


@pytest.mark.slow
def test_a_run_by_iterations_that_stopped_before_its_results_is_reported_so(tmp_path):
    """main.py by TRAIN.iterations, then its results file deleted, as a crash in the final test would leave it: the
    report finds every epoch trained, counted from the last checkpoint."""
    datadir = tmp_path / "data"
    make_cifar(datadir, 10, train_per_class=20, test_per_class=5)
    # 200 images in batches of 32: 7 steps an epoch, so 10 iterations take 2 epochs (configs.yaml says 50)
    done = run_main(datadir, tmp_path / "runs", "TRAIN.iterations", "10", env={"OMP_NUM_THREADS": "1"})
    check_ok(done)
    folder = tmp_path / "runs" / "CIFAR10LT" / "resnet32" / "CrossEntropyLoss-IF_1"
    results = json.loads((folder / "results-seed0.json").read_text())
    assert results["epochs"] == 2
    assert torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)["epochs"] == 2
    (folder / "results-seed0.json").unlink()
    report.main([str(tmp_path / "runs")])
    section = (tmp_path / "runs" / "report.md").read_text().split("## Incomplete or crashed runs")[1]
    header, rows = table(section, "run")
    row = dict(zip(header, rows[0]))
    assert row["epochs finished"] == "2 of 2" and row["note"].startswith("trained every epoch")


def test_pooling_bold_and_separate_settings(tmp_path, capsys):
    for seed, bcr in enumerate([0.40, 0.42, 0.44]):
        fake_result(tmp_path, "CrossEntropyLoss", seed, bcr)
    for seed, bcr in enumerate([0.50, 0.52]):
        fake_result(tmp_path, "BalancedSoftmax", seed, bcr)
    fake_result(tmp_path, "BalancedSoftmax", 0, 0.30, factor=100)
    # same cell, other learning rate: must get a row of its own, never pooled with lr 0.1
    fake_result(tmp_path, "BalancedSoftmax", 0, 0.90, lr=0.05, folder="BS-lr")
    report.main([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    header, rows = table(markdown, "loss")
    assert header == ["loss", "CIFAR10LT IF 10", "CIFAR10LT IF 100"]
    assert rows == [
        ["CrossEntropyLoss [OPTIMIZER.lr=0.1]", "42.00 ± 2.00 (n=3)", ""],
        ["BalancedSoftmax [OPTIMIZER.lr=0.05]", "**90.00 (n=1)**", ""],
        ["BalancedSoftmax [OPTIMIZER.lr=0.1]", "51.00 ± 1.41 (n=2)", "30.00 (n=1)"],
    ]
    assert "Checkpoint selection: val bcr (7 run(s))" in markdown
    _, groups = table(markdown, "imbalance")
    assert groups[0][:6] == ["IF 10", "CrossEntropyLoss [OPTIMIZER.lr=0.1]", "3", "42.00 ± 2.00", "41.00 ± 2.00",
                             "–"]
    # no per-class files: the comparison figures are skipped with a note, the line plot is still drawn
    assert "no per-class or confusion figure" in markdown
    assert_png(tmp_path / "bcr_vs_imbalance.png")
    assert "## Incomplete or crashed runs\n\nNone" in markdown


def test_reevaluations_and_repeated_seeds_are_not_silently_pooled(tmp_path):
    fake_result(tmp_path, "CrossEntropyLoss", 0, 0.40)
    fake_result(tmp_path, "CrossEntropyLoss", 0, 0.60, folder="rerun")
    evaluation = fake_result(tmp_path, "CrossEntropyLoss", 1, 0.99, folder="CrossEntropyLoss-IF_10/evaluation")
    data = json.loads(evaluation.read_text())
    evaluation.write_text(json.dumps({"checkpoint": "/x/model-seed1-best.pt", "epoch": 2, "test": data["test"],
                                      "config": data["config"]}))
    report.main([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    _, rows = table(markdown, "loss")
    assert rows == [["CrossEntropyLoss", "50.00 ± 14.14 (n=2)"]]  # the re-evaluation is not a third seed
    assert "seed 0 appears in 2 folders" in markdown
    assert "## Re-evaluations (evaluate.py)" in markdown


def test_several_folders_are_merged_into_one_report(tmp_path, capsys):
    # the results of two machines or SLURM array tasks, each with its own savedir
    first, second, out = tmp_path / "task0", tmp_path / "task1", tmp_path / "merged"
    fake_result(first, "CrossEntropyLoss", 0, 0.40)
    fake_result(second, "CrossEntropyLoss", 1, 0.44)
    fake_result(second, "BalancedSoftmax", 0, 0.50)
    report.main([str(first), str(second), "--out", str(out)])
    assert str(out / "report.md") in capsys.readouterr().out
    _, rows = table((out / "report.md").read_text(), "loss")
    assert rows == [["CrossEntropyLoss", expected_cell([0.40, 0.44])], ["BalancedSoftmax", "**50.00 (n=1)**"]]
    with open(out / "report.csv", newline="") as f:
        folders = sorted(row["run"] for row in csv.DictReader(f))
    assert folders == [f"task{task}/CIFAR10LT/resnet32/{loss}-IF_10" for task, loss in
                       ((0, "CrossEntropyLoss"), (1, "BalancedSoftmax"), (1, "CrossEntropyLoss"))]
    # without --out the report goes into the first folder; a folder inside another is not counted twice
    report.main([str(first), str(first / "CIFAR10LT"), str(second)])
    _, rows = table((first / "report.md").read_text(), "loss")
    assert rows[0] == ["CrossEntropyLoss", expected_cell([0.40, 0.44])]


def test_aggregation_helpers():
    assert pooling.mean_std([0.1, None, 0.3]) == (pytest.approx(0.2), pytest.approx(statistics.stdev([0.1, 0.3])), 2)
    assert pooling.fmt([None, None]) == "–"
    assert pooling.fmt([0.5]) == "50.00 (n=1)"
    assert tables.best_rows({"a": 0.5}) == set()
    assert tables.best_rows({"a": 0.5, "b": 0.7, "c": 0.70001}) == {"b", "c"}  # equal as printed


def test_a_list_benchmark_is_labelled_by_its_train_lists_imbalance(tmp_path):
    # its config holds no imbalance (null type, factor 1): it must not be reported as balanced
    for loss, bcr in (("CrossEntropyLoss", 0.3), ("BalancedSoftmax", 0.4)):
        path = fake_result(tmp_path, loss, 0, bcr, dataset="ImageNetLT", folder=f"{loss}-imagenet_lt_resnet10")
        saved = json.loads(path.read_text())
        saved["config"]["DATASET"].update(imbalance_type=None, imbalance_factor=1)
        saved["num_per_cls"] = [1280, 600, 40, 5]
        path.write_text(json.dumps(saved))
    report.main([str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert "IF 256 (train list)" in text and "balanced (IF 1)" not in text


def test_a_train_subset_run_is_labelled_by_its_subsets_imbalance(tmp_path):
    # DATASET.train_subset trains on a file's images with a null imbalance type: not a balanced run either
    for loss, bcr in (("CrossEntropyLoss", 0.3), ("BalancedSoftmax", 0.4)):
        path = fake_result(tmp_path, loss, 0, bcr, folder=f"{loss}-subset")
        saved = json.loads(path.read_text())
        saved["config"]["DATASET"].update(imbalance_type=None, imbalance_factor=1, train_subset="subset0.txt")
        saved["num_per_cls"] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
        path.write_text(json.dumps(saved))
    report.main([str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert "IF 100 (train subset)" in text and "balanced (IF 1)" not in text


def stage2_result(root: Path, stage1_loss: str, classifier: str, sampler: str, loss: str, seed: int, bcr: float,
                  folder: str) -> None:
    """A stage-2 run's results, as main.py writes them: its own schedule, and the stage-1 checkpoint it began from."""
    path = fake_result(root, loss, seed, bcr, lr=0.2, folder=folder, epochs=10)
    data = json.loads(path.read_text())
    data["config"]["TRAIN"].update(stage2_from=f"/runs/{stage1_loss}", stage2_classifier=classifier, epochs=10)
    data["config"]["DATASET"]["sampler"] = sampler
    data["stage1"] = {"checkpoint": f"/runs/{stage1_loss}/model-seed{seed}-best.pt", "loss": stage1_loss, "epoch": 3}
    path.write_text(json.dumps(data))


def test_post_hoc_and_stage2_rows_sit_beside_their_loss(tmp_path):
    for seed in (0, 1):
        fake_result(tmp_path, "CrossEntropyLoss", seed, 0.40 + seed / 100)
        fake_result(tmp_path, "BalancedSoftmax", seed, 0.50 + seed / 100)
        adjusted = fake_result(tmp_path, "CrossEntropyLoss", seed, 0.48, folder="CrossEntropyLoss-IF_10/evaluation/logit_adjust")
        data = json.loads(adjusted.read_text())
        adjusted.write_text(json.dumps({"checkpoint": f"/x/model-seed{seed}-best.pt", "selected_by": "val bcr",
                                        "test": data["test"], "config": data["config"], "stage1": None,
                                        "post_hoc": {"method": "logit_adjust", "tau": 1.0 + seed, "chosen_on": "val bcr"}}))
        stage2_result(tmp_path, "CrossEntropyLoss", "retrain", "class_balanced", "CrossEntropyLoss", seed, 0.46, "CE-cRT")
        stage2_result(tmp_path, "CrossEntropyLoss", "lws", "class_balanced", "CrossEntropyLoss", seed, 0.45, "CE-LWS")
        stage2_result(tmp_path, "CrossEntropyLoss", "retrain", "instance", "BalancedSoftmax", seed, 0.47, "CE-BSrt")
        stage2_result(tmp_path, "BalancedSoftmax", "retrain", "class_balanced", "CrossEntropyLoss", seed, 0.49, "BS-cRT")
    report.main([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    _, rows = table(markdown, "loss")
    # the stage-2 runs' own schedule (lr 0.2, 10 epochs) labels no row; each tau-per-seed choice pools as one row
    assert [row[0] for row in rows] == [
        "CrossEntropyLoss", "CrossEntropyLoss + logit adjustment (tau on val)", "CrossEntropyLoss then BS re-training",
        "CrossEntropyLoss then LWS", "CrossEntropyLoss then cRT", "BalancedSoftmax", "BalancedSoftmax then cRT"]
    assert rows[1][1] == "48.00 ± 0.00 (n=2)" and rows[4][1] == "46.00 ± 0.00 (n=2)"
    _, groups = table(markdown, "imbalance")
    assert [row[1] for row in groups] == [row[0] for row in rows] and all(row[2] == "2" for row in groups)
    assert "## Re-evaluations" not in markdown


def test_out_may_stand_between_the_folders(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(report, "report", lambda roots, factor, out: seen.update(roots=roots, out=out) or [])
    report.main([str(tmp_path / "a"), "--out", str(tmp_path / "o"), str(tmp_path / "b")])
    assert seen == {"roots": [tmp_path / "a", tmp_path / "b"], "out": tmp_path / "o"}


def method_result(root: Path, folder: str, seed: int, bcr: float, loss: str, **sections) -> None:
    """A stage-1 run of one of the long-tail methods: `sections` maps "SECTION.key" to its value."""
    path = fake_result(root, loss, seed, bcr, folder=folder)
    data = json.loads(path.read_text())
    for key, value in sections.items():
        section, name = key.split("__")
        data["config"].setdefault(section, {})[name] = value
    path.write_text(json.dumps(data))


def test_each_methods_rows_are_named_for_it(tmp_path):
    for seed in (0, 1):
        fake_result(tmp_path, "CrossEntropyLoss", seed, 0.40)  # an older run: no key of the methods, all at defaults
        method_result(tmp_path, "LDAM-DRW", seed, 0.50, "LDAM", LOSS__reweight="drw", MODEL__classifier="normed")
        method_result(tmp_path, "CE-CB", seed, 0.41, "CrossEntropyLoss", LOSS__reweight="class_balanced")
        method_result(tmp_path, "Focal-CB", seed, 0.42, "Focal", LOSS__reweight="class_balanced", LOSS__gamma=2.0)
        method_result(tmp_path, "BS-mixup", seed, 0.55, "BalancedSoftmax", TRAIN__mixup=True)
        method_result(tmp_path, "BS-remix", seed, 0.56, "BalancedSoftmax", TRAIN__mixup=True, TRAIN__remix=True)
        method_result(tmp_path, "CE-sqrt", seed, 0.43, "CrossEntropyLoss", DATASET__sampler="sqrt")
        method_result(tmp_path, "CE-progressive", seed, 0.44, "CrossEntropyLoss", DATASET__sampler="progressive",
                      TRAIN__mixup=True)
        method_result(tmp_path, "CE-normed", seed, 0.30, "CrossEntropyLoss", MODEL__classifier="normed")
        method_result(tmp_path, "LA", seed, 0.52, "LogitAdjusted", LOSS__tau=0.5)
    report.main([str(tmp_path)])
    _, rows = table((tmp_path / "report.md").read_text(), "loss")
    # the settings that the names say label nothing, and a loss's own setting (LOSS.gamma, LOSS.tau) labels nothing
    # where another loss leaves it unread
    assert [row[0] for row in rows] == [
        "CrossEntropyLoss", "CrossEntropyLoss + class-balanced weights", "CrossEntropyLoss + mixup + progressive sampling",
        "CrossEntropyLoss + normed head", "CrossEntropyLoss + sqrt sampling", "BalancedSoftmax + mixup",
        "BalancedSoftmax + remix",
        "LogitAdjusted", "Focal + class-balanced weights", "LDAM + DRW"]
    assert all("(n=2)" in row[1] for row in rows)


def test_a_losss_own_setting_labels_rows_of_that_loss(tmp_path):
    for seed in (0, 1):
        for tau in (0.5, 1.0):
            method_result(tmp_path, f"LA-{tau}", seed, 0.5, "LogitAdjusted", LOSS__tau=tau)
        method_result(tmp_path, "CE-tau", seed, 0.4, "CrossEntropyLoss", LOSS__tau=2.0)  # unread: pools with CE
        fake_result(tmp_path, "CrossEntropyLoss", seed, 0.4)
    report.main([str(tmp_path)])
    _, rows = table((tmp_path / "report.md").read_text(), "loss")
    assert [(row[0], row[1].strip("*")) for row in rows] == [
        ("CrossEntropyLoss", "40.00 ± 0.00 (n=4)"), ("LogitAdjusted [LOSS.tau=0.5]", "50.00 ± 0.00 (n=2)"),
        ("LogitAdjusted [LOSS.tau=1.0]", "50.00 ± 0.00 (n=2)")]


def test_a_meta_sampler_run_that_learnt_on_val_is_labelled_by_its_last_epoch(tmp_path):
    """Its results say so (meta_sampler.LEARNS_ON_VAL), and the report's selection line and its row's settings
    name the last epoch, never val."""
    from meta_sampler import LEARNS_ON_VAL

    path = fake_result(tmp_path, "BalancedSoftmax", 0, 0.5, dataset="ImageNetLT")
    results = json.loads(path.read_text())
    path.write_text(json.dumps({**results, "selected_by": LEARNS_ON_VAL, "best_epoch": 3}))
    fake_result(tmp_path, "CrossEntropyLoss", 0, 0.4, dataset="ImageNetLT")
    report.report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert (f"Checkpoint selection: {LEARNS_ON_VAL} (1 run(s)), val bcr (1 run(s))." in markdown
            or f"Checkpoint selection: val bcr (1 run(s)), {LEARNS_ON_VAL} (1 run(s))." in markdown)
    rows = [line for line in (tmp_path / "report.csv").read_text().splitlines() if "BalancedSoftmax" in line]
    assert len(rows) == 1 and LEARNS_ON_VAL in rows[0] and "val bcr" not in rows[0]


@pytest.mark.parametrize("change, note", [("replace", "is another file now"), ("remove", "is gone"), (None, None)])
def test_evaluation_rows_of_a_checkpoint_since_replaced_are_left_out_in_one_line(tmp_path, change, note):
    """evaluate.py's results record the sha256 of the checkpoint they scored; a run trained again over it
    (DEFAULT.overwrite true) leaves other weights there, and its old evaluations are no rows of them."""
    from checkpoint import sha256

    folder = fake_result(tmp_path, "CrossEntropyLoss", 0, 0.40).parent
    checkpoint = folder / "model-seed0-best.pt"
    torch.save({"model": {"fc.weight": torch.zeros(10, 4)}}, checkpoint)  # a checkpoint whole enough to be read
    for where, method in ((folder / "evaluation", None), (folder / "evaluation" / "logit_adjust", "logit_adjust")):
        evaluated = fake_result(tmp_path, "CrossEntropyLoss", 0, 0.48, folder=str(where.relative_to(folder.parent)))
        data = json.loads(evaluated.read_text())
        post_hoc = {"post_hoc": {"method": method, "tau": 1.0, "chosen_on": "val bcr"},
                    "selected_by": "val bcr"} if method else {}
        evaluated.write_text(json.dumps({"checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint),
                                         "epoch": 2, "test": data["test"], "config": data["config"], **post_hoc}))
    if change == "replace":
        torch.save({"model": {"fc.weight": torch.ones(10, 4)}}, checkpoint)
    elif change == "remove":
        checkpoint.unlink()
    report.main([str(tmp_path)])
    markdown = (tmp_path / "report.md").read_text()
    _, rows = table(markdown, "loss")
    left_out = [line for line in markdown.splitlines() if line.startswith("Left out:")]
    csv_rows = (tmp_path / "report.csv").read_text().splitlines()[1:]
    if change is None:
        assert [row[0] for row in rows] == ["CrossEntropyLoss", "CrossEntropyLoss + logit adjustment (tau on val)"]
        assert "## Re-evaluations" in markdown and not left_out and len(csv_rows) == 3
        return
    assert [row[0] for row in rows] == ["CrossEntropyLoss"] and "## Re-evaluations" not in markdown
    assert len(left_out) == 1 and left_out[0].startswith("Left out: 2 evaluation result(s) of a checkpoint since")
    assert left_out[0].count(note) == 2 and len(csv_rows) == 1
