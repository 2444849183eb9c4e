"""Smoke test of bench.py: a tiny run finishes and ends with its JSON summary. No timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TINY = ["--model", "resnet32", "--steps", "2", "--warmup", "1", "--batch-size", "8", "--ref-batch-size", "8",
        "--test-batch-size", "16", "--images", "64", "--num-workers", "1", "--device", "cpu"]


def test_bench_runs_and_reports_json():
    # both pipelines also run the paper's augmentations, so that --aug is covered too
    done = subprocess.run([sys.executable, str(ROOT / "bench.py"), *TINY, "--aug", "AutoAugment,Cutout"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["baseline_img_s"] > 0 and report["ours_img_s"] > 0
    assert report["speedup"] == pytest.approx(report["ours_img_s"] / report["baseline_img_s"], rel=1e-6)
    for key in ("data_ref_img_s", "data_ours_img_s", "eval_ref_img_s", "eval_ours_img_s"):
        assert report[key] > 0
    assert report["model"] == "resnet32" and report["batch_size"] == 8 and report["ref_batch_size"] == 8
    assert report["device"] == "cpu" and report["precision"] in ("no", "bf16")
    assert report["steps"]["ours_train"] == 2 and report["steps"]["ref_train"] == 2
    assert "images/s" in done.stdout  # the readable table came before the JSON
    assert report["aug"] == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "Cutout"]
