"""bench.py on a tiny setting: it finishes, its JSON figures mean what they say, and it times train.py's own step.
No speed is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import bench
import train
from conftest import ROOT

STEPS = 2
TINY = ["--model", "resnet32", "--steps", str(STEPS), "--warmup", "1", "--batch-size", "8", "--ref-batch-size", "8",
        "--test-batch-size", "16", "--images", "64", "--device", "cpu"]
RATES = ("baseline_img_s", "ours_img_s", "data_ref_img_s", "data_ours_img_s", "eval_ref_img_s", "eval_ours_img_s")
RATIOS = ("speedup", "data_speedup", "eval_speedup")
MEASUREMENTS = ("ref_train", "ref_data", "ref_eval", "ours_train", "ours_data", "ours_eval")


@pytest.mark.slow
def test_bench_runs_and_reports_json():
    # both pipelines also run the paper's augmentations, so that --aug is covered too
    done = subprocess.run([sys.executable, str(ROOT / "bench.py"), *TINY, "--num-workers", "1", "--aug", "AutoAugment,Cutout"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (*RATES, *RATIOS, "split_ours", "split_ref", "steps", "device_name", "cpu", "wall_s"):
        assert key in report, key
    for key in (*RATES, *RATIOS):
        assert report[key] > 0, key
    # --steps fixes every measurement's length: each timed exactly the steps asked for
    assert report["steps"] == dict.fromkeys(MEASUREMENTS, STEPS)
    for key in ("split_ours", "split_ref"):
        split = report[key]
        assert split["data_s_per_step"] > 0 and split["compute_s_per_step"] > 0, key
        assert 0 < split["data_fraction"] < 1, key
    assert report["model"] == "resnet32" and report["batch_size"] == 8 and report["ref_batch_size"] == 8
    assert report["device"] == "cpu" and report["precision"] in ("no", "bf16") and report["fixed_steps"] == STEPS
    assert "images/s" in done.stdout  # the readable table came before the JSON
    assert report["aug"] == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "Cutout"]


def test_bench_times_the_step_that_train_py_runs(fresh_accelerate, monkeypatch):
    assert bench.train_step is train.train_step
    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[2]))  # the batch's targets
        return train.train_step(*args, **kwargs)
    monkeypatch.setattr(bench, "train_step", counted)
    bench.main([*TINY, "--num-workers", "0"])
    assert calls == [8] * (1 + STEPS)  # the warm-up step and the timed ones, each of --batch-size images


def test_bench_times_k_stacked_models_with_the_same_step(fresh_accelerate, monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[2]))
        return train.train_step(*args, **kwargs)
    monkeypatch.setattr(bench, "train_step", counted)
    report = bench.main([*TINY, "--num-workers", "0", "--stack", "1,2"])
    # ours, then 1 and 2 stacked models: a warm-up step and the timed ones, each of K x --batch-size images
    assert calls == [8] * (1 + STEPS) + [8] * (1 + STEPS) + [16] * (1 + STEPS)
    assert [figures["models"] for figures in report["stacked"]] == [1, 2]
    assert report["steps"]["stack1_train"] == report["steps"]["stack2_train"] == STEPS
    for figures in report["stacked"]:
        assert figures["batch_per_model"] == 8 and figures["img_s"] > 0
        assert figures["over_one_model"] == figures["img_s"] / report["ours_img_s"]


@pytest.mark.parametrize("args", [["--stack", "2", "--model", "resnet18"], ["--stack", "16"], ["--stack", "0"],
                                  ["--stack", "two"]])
def test_bench_refuses_a_stack_it_cannot_time(args, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([*TINY, *args])
    assert "--stack" in capsys.readouterr().err
