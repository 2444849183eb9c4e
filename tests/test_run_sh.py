"""run.sh's sweep: which runs it launches, with which arguments, and how it reports failures. The sweep that
really trains and writes a report is tests/test_report.py's `sweep` fixture."""
from __future__ import annotations

import os
import shlex
import subprocess

from conftest import ROOT


def run_sh(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "SAVEDIR": str(tmp_path / "results"), **env}
    return subprocess.run(["bash", "run.sh", *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=120)


def launched(stdout: str) -> list[dict[str, str]]:
    """The KEY VALUE overrides of each main.py command that LAUNCH=echo printed."""
    runs = []
    for line in stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["main.py"]:
            assert words[1:3] == ["--config", "configs.yaml"]
            runs.append(dict(zip(words[3::2], words[4::2])))
    return runs


def test_sweep_covers_seeds_datasets_factors_and_losses_but_bs_at_if_1(tmp_path):
    done = run_sh(tmp_path, "TRAIN.epochs", "1", LAUNCH="echo", SEEDS="3 4", FACTORS="1 100")
    runs = launched(done.stdout)
    cells = sorted((r["DEFAULT.seed"], r["DATASET.name"], r["DATASET.imbalance_factor"], r["LOSS.name"])
                   for r in runs)
    expected = sorted((seed, data, factor, loss) for seed in ("3", "4") for data in ("CIFAR10LT", "CIFAR100LT")
                      for factor in ("1", "100") for loss in ("CrossEntropyLoss", "BalancedSoftmax")
                      if not (factor == "1" and loss == "BalancedSoftmax"))
    assert cells == expected
    for r in runs:
        assert r["DEFAULT.exp_name"] == f"{r['LOSS.name']}-IF_{r['DATASET.imbalance_factor']}"
        assert r["DATASET.imbalance_type"] == "exp" and r["DEFAULT.savedir"] == str(tmp_path / "results")
        assert r["TRAIN.epochs"] == "1"  # extra arguments reach every run, after run.sh's own
    # nothing trained, so report.py finds no runs and the sweep says so and fails
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"failed: report.py {tmp_path / 'results'}"


def test_failed_runs_are_listed_and_the_exit_status_is_1(tmp_path):
    done = run_sh(tmp_path, LAUNCH="false", DATASETS="CIFAR100LT", FACTORS="50")
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == ["failed: CIFAR100LT CrossEntropyLoss IF 50 seed 0",
                      "failed: CIFAR100LT BalancedSoftmax IF 50 seed 0",
                      f"failed: report.py {tmp_path / 'results'}"]
