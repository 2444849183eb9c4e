"""run.sh's sweep: which runs it launches, with which arguments and interpreter, how it shares them among JOBS
and SLURM array tasks, and how it reports failures. The sweep that really trains and writes a report is
tests/test_report.py's `sweep` fixture."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "OMP_NUM_THREADS")


def run_sh(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in SLURM}
    environment.update({"SAVEDIR": str(tmp_path / "results"), "PYTHON": sys.executable, **env})
    return subprocess.run(["bash", "run.sh", *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=120)


def parse(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """The --config files and the KEY VALUE overrides of one main.py command line (after `main.py`)."""
    configs = []
    while words[:1] == ["--config"]:
        configs.append(words[1])
        words = words[2:]
    return configs, dict(zip(words[::2], words[1::2]))


def launched(stdout: str, configs: list[str] = ("configs.yaml",)) -> list[dict[str, str]]:
    """The KEY VALUE overrides of each main.py command that LAUNCH=echo printed."""
    runs = []
    for line in stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["main.py"]:
            given, overrides = parse(words[1:])
            assert given == list(configs)
            runs.append(overrides)
    return runs


def recorder(tmp_path, fail_on: str = "") -> str:
    """A LAUNCH (or PYTHON) that appends OMP_NUM_THREADS and its arguments to tmp_path/calls, counts how many of
    its copies run at once into tmp_path/concurrency, and fails when its arguments contain `fail_on`."""
    script = tmp_path / "record"
    script.write_text(f"""#!/usr/bin/env bash
echo "${{OMP_NUM_THREADS:-unset}} $*" >> {tmp_path}/calls
touch {tmp_path}/running.$$
sleep 0.5
ls {tmp_path}/running.* | wc -l >> {tmp_path}/concurrency
rm {tmp_path}/running.$$
{f'[[ "$*" != *{fail_on}* ]]' if fail_on else 'true'}
""")
    script.chmod(0o755)
    return str(script)


def recorded_runs(tmp_path) -> list[tuple[str, tuple]]:
    """(OMP_NUM_THREADS, cell) of each main.py call the recorder saw."""
    runs = []
    for line in (tmp_path / "calls").read_text().splitlines():
        threads, script, *words = shlex.split(line)
        if script == "main.py":
            _, r = parse(words)
            runs.append((threads, cell(r)))
    return runs


def sweep(seeds=("0",), datasets=("CIFAR10LT", "CIFAR100LT"), factors=("1", "10", "50", "100", "200")) -> list[tuple]:
    """The (seed, data set, imbalance factor, loss) of every run of run.sh's sweep."""
    return sorted((seed, data, factor, loss) for seed in seeds for data in datasets for factor in factors
                  for loss in ("CrossEntropyLoss", "BalancedSoftmax")
                  if not (factor == "1" and loss == "BalancedSoftmax"))


def cell(run: dict[str, str]) -> tuple:
    return run["DEFAULT.seed"], run["DATASET.name"], run["DATASET.imbalance_factor"], run["LOSS.name"]


def test_sweep_covers_seeds_datasets_factors_and_losses_but_bs_at_if_1(tmp_path):
    done = run_sh(tmp_path, "TRAIN.epochs", "1", LAUNCH="echo", SEEDS="3 4", FACTORS="1 100")
    runs = launched(done.stdout)
    assert sorted(map(cell, runs)) == sweep(("3", "4"), factors=("1", "100"))
    for r in runs:
        assert r["DEFAULT.exp_name"] == f"{r['LOSS.name']}-IF_{r['DATASET.imbalance_factor']}"
        assert r["DATASET.imbalance_type"] == "exp" and r["DEFAULT.savedir"] == str(tmp_path / "results")
        assert r["TRAIN.epochs"] == "1"  # extra arguments reach every run, after run.sh's own
    # nothing trained, so report.py finds no runs and the sweep says so and fails
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"failed: report.py {tmp_path / 'results'}"


def test_cifar_runs_follow_the_tables_protocol_unless_told_otherwise(tmp_path):
    # LDAM-DRW's draw and a validation split, as the README's table was made; the list benchmarks keep their lists
    runs = launched(run_sh(tmp_path, LAUNCH="echo", FACTORS="100", PYTHON=recorder(tmp_path)).stdout)
    assert [(r["DATASET.draw"], r["DATASET.val_per_class"]) for r in runs] == [("ldam", "50")] * 4
    listed = run_sh(tmp_path, LAUNCH="echo", DATASETS="ImageNetLT", PYTHON=recorder(tmp_path)).stdout
    assert "DATASET.draw" not in listed and "DATASET.val_per_class" not in listed
    test_selected = run_sh(tmp_path, "DATASET.val_per_class", "0", LAUNCH="echo", FACTORS="100",
                           PYTHON=recorder(tmp_path)).stdout
    words = shlex.split(test_selected.splitlines()[1])  # the first run: the user's pair comes last, and wins
    assert words[-2:] == ["DATASET.val_per_class", "0"]
    from config import load_config

    configs, overrides = parse(words[1:])
    cfg = load_config([ROOT / name for name in configs], [word for pair in overrides.items() for word in pair])
    assert (cfg.DATASET.draw, cfg.DATASET.val_per_class) == ("ldam", 0)


def test_failed_runs_are_listed_and_the_exit_status_is_1(tmp_path):
    done = run_sh(tmp_path, LAUNCH="false", DATASETS="CIFAR100LT", FACTORS="50")
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == ["failed: CIFAR100LT CrossEntropyLoss IF 50 seed 0",
                      "failed: CIFAR100LT BalancedSoftmax IF 50 seed 0",
                      f"failed: report.py {tmp_path / 'results'}"]


def test_a_recipe_is_a_second_config_file(tmp_path):
    done = run_sh(tmp_path, LAUNCH="echo", RECIPE="recipes/balms.yaml", DATASETS="CIFAR10LT", FACTORS="10",
                  PYTHON=recorder(tmp_path))  # a quick stand-in for report.py
    assert len(launched(done.stdout, ["configs.yaml", "recipes/balms.yaml"])) == 2


def test_each_recipe_sweeps_into_run_folders_of_its_own(tmp_path):
    # ldam_200ep and balms both train ResNet-32: in one folder per cell, the second sweep would find the first's
    # runs there and stop on each ("holds a run with other settings")
    folders = {}
    for recipe in ("", "recipes/ldam_200ep.yaml", "recipes/balms.yaml"):
        done = run_sh(tmp_path, LAUNCH="echo", RECIPE=recipe, FACTORS="10 100", PYTHON=recorder(tmp_path))
        runs = launched(done.stdout, ["configs.yaml", recipe] if recipe else ["configs.yaml"])
        assert len(runs) == 8
        folders[recipe] = {(r["DATASET.name"], r["DEFAULT.exp_name"]) for r in runs}
        assert len(folders[recipe]) == 8  # every cell of a sweep has its own folder
    assert {name for _, name in folders[""]} == {f"{loss}-IF_{k}" for loss in ("CrossEntropyLoss", "BalancedSoftmax")
                                                 for k in (10, 100)}  # as before recipes had names of their own
    for recipe, suffix in (("recipes/ldam_200ep.yaml", "-ldam_200ep"), ("recipes/balms.yaml", "-balms")):
        assert folders[recipe] == {(data, name + suffix) for data, name in folders[""]}


def test_jobs_logs_of_a_recipe_are_named_for_its_run_folders(tmp_path):
    launch = recorder(tmp_path)
    run_sh(tmp_path, LAUNCH=launch, PYTHON=launch, JOBS="2", RECIPE="recipes/balms.yaml", DATASETS="CIFAR10LT",
           FACTORS="10")
    logs = sorted(path.name for path in (tmp_path / "results" / "logs").iterdir())
    assert logs == ["CIFAR10LT-BalancedSoftmax-IF_10-balms-seed0.log", "CIFAR10LT-CrossEntropyLoss-IF_10-balms-seed0.log"]


def test_python_runs_main_py_and_report_py(tmp_path):
    # one interpreter everywhere: a python first on PATH that lacks the packages must not run the report
    done = run_sh(tmp_path, PYTHON=recorder(tmp_path), DATASETS="CIFAR10LT", FACTORS="10")
    assert done.returncode == 0, done.stderr
    calls = [shlex.split(line)[1:] for line in (tmp_path / "calls").read_text().splitlines()]
    assert [words[0] for words in calls] == ["main.py", "main.py", "report.py"]
    assert calls[-1] == ["report.py", str(tmp_path / "results")]


@pytest.mark.parametrize("tasks", [1, 3, 4])
def test_slurm_array_tasks_share_the_sweep_each_run_once(tmp_path, tasks):
    runs = []
    for task in range(tasks):
        done = run_sh(tmp_path, LAUNCH="echo", SEEDS="0 1", SLURM_ARRAY_TASK_ID=str(task + 5),
                      SLURM_ARRAY_TASK_MIN="5", SLURM_ARRAY_TASK_COUNT=str(tasks))
        assert done.returncode == 0, done.stderr
        share = launched(done.stdout)
        assert len(share) in (36 // tasks, 36 // tasks + 1)  # 2 seeds x 18 runs, dealt like cards
        runs += share
        # no task knows when the others end: none reports, each says how to
        assert "report.py" in done.stdout and not (tmp_path / "results" / "report.md").exists()
    assert sorted(map(cell, runs)) == sweep(("0", "1"))


def test_an_array_id_outside_the_array_is_refused(tmp_path):
    done = run_sh(tmp_path, LAUNCH="echo", SLURM_ARRAY_TASK_ID="4", SLURM_ARRAY_TASK_COUNT="4")
    assert done.returncode == 2 and "--array=0-K" in done.stderr and "main.py" not in done.stdout


def test_jobs_run_at_once_each_run_once_and_failures_are_listed(tmp_path):
    launch = recorder(tmp_path, fail_on="IF_50")
    done = run_sh(tmp_path, LAUNCH=launch, PYTHON=launch, JOBS="3", FACTORS="10 50")
    runs = recorded_runs(tmp_path)
    assert sorted(cell for _, cell in runs) == sweep(factors=("10", "50"))
    concurrency = [int(n) for n in (tmp_path / "concurrency").read_text().split()]
    assert 2 <= max(concurrency) <= 3
    # each job gets its share of the cores
    assert {threads for threads, _ in runs} == {str(max(1, len(os.sched_getaffinity(0)) // 3))}
    failed = sorted(line for line in done.stderr.splitlines() if line.startswith("failed: "))
    assert failed == sorted(f"failed: {data} {loss} IF 50 seed 0" for data in ("CIFAR10LT", "CIFAR100LT")
                            for loss in ("CrossEntropyLoss", "BalancedSoftmax"))
    assert done.returncode == 1
    logs = sorted(path.name for path in (tmp_path / "results" / "logs").iterdir())
    assert logs == sorted(f"{data}-{loss}-IF_{k}-seed0.log" for _, (_, data, k, loss) in runs)


def test_jobs_keep_a_thread_count_the_user_set(tmp_path):
    launch = recorder(tmp_path)
    run_sh(tmp_path, LAUNCH=launch, PYTHON=launch, JOBS="2", DATASETS="CIFAR10LT", FACTORS="10", OMP_NUM_THREADS="5")
    assert [threads for threads, _ in recorded_runs(tmp_path)] == ["5", "5"]


def test_jobs_must_be_a_count(tmp_path):
    done = run_sh(tmp_path, LAUNCH="echo", JOBS="many")
    assert done.returncode == 2 and "JOBS" in done.stderr


@pytest.mark.parametrize("dataset, recipe", [("ImageNetLT", "imagenet_lt_resnet10"), ("PlacesLT", "places_lt_stage1"),
                                             ("iNat2018", "inat2018_resnet50")])
def test_a_list_benchmark_sweeps_ce_and_bs_once_over_its_recipe(tmp_path, dataset, recipe):
    # FACTORS does not apply: the train list has one imbalance, and no imbalance setting is passed
    done = run_sh(tmp_path, "DATASET.datadir", "/data", LAUNCH="echo", DATASETS=dataset, FACTORS="1 10 100",
                  SEEDS="0 1", PYTHON=recorder(tmp_path))
    runs = launched(done.stdout, ["configs.yaml", f"recipes/{recipe}.yaml"])
    assert sorted((r["DEFAULT.seed"], r["LOSS.name"]) for r in runs) == [
        (seed, loss) for seed in ("0", "1") for loss in ("BalancedSoftmax", "CrossEntropyLoss")]
    for r in runs:
        assert r["DEFAULT.exp_name"] == f"{r['LOSS.name']}-{recipe}" and r["DATASET.name"] == dataset
        assert not any(key.startswith("DATASET.imbalance") for key in r) and r["DATASET.datadir"] == "/data"
    assert f"== dataset: {dataset}, loss: BalancedSoftmax, seed: 1" in done.stdout


def test_a_given_recipe_replaces_a_list_benchmarks_own(tmp_path):
    done = run_sh(tmp_path, LAUNCH="echo", DATASETS="ImageNetLT", RECIPE="recipes/my_imagenet.yaml",
                  PYTHON=recorder(tmp_path))
    assert [r["DEFAULT.exp_name"] for r in launched(done.stdout, ["configs.yaml", "recipes/my_imagenet.yaml"])] == [
        "CrossEntropyLoss-my_imagenet", "BalancedSoftmax-my_imagenet"]


@pytest.mark.parametrize("recipe, loss", [("recipes/ldam_drw.yaml", "LDAM"), ("recipes/la_loss.yaml", "LogitAdjusted"),
                                          ("recipes/bs_mixup_400ep.yaml", "BalancedSoftmax"),
                                          ("recipes/ldam_200ep.yaml", "Focal")])
def test_the_methods_run_from_losses_and_a_recipe(tmp_path, recipe, loss):
    from config import check, load_config

    done = run_sh(tmp_path, LAUNCH="echo", RECIPE=recipe, LOSSES=loss, FACTORS="100", PYTHON=recorder(tmp_path))
    runs = launched(done.stdout, ["configs.yaml", recipe])
    assert [(r["DATASET.name"], r["LOSS.name"]) for r in runs] == [("CIFAR10LT", loss), ("CIFAR100LT", loss)]
    for run in runs:  # each command line's config passes main.py's checks
        check(load_config([ROOT / "configs.yaml", ROOT / recipe], [word for pair in run.items() for word in pair]))
