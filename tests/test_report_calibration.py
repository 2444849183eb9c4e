"""report.py's reliability diagrams and shifted-accuracy figure: drawn for 8 runs, evaluations among them, from the
results that main.py and evaluate.py write; runs from before those results existed are left out of them."""
from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from calibration import reliability_bins, top_confidence
from conftest import ROOT
from config import load_config
from metrics import summarize
from report import report
from reporting.calibration_figures import calibration_figures
from reporting.runs import Run
from shifted import model_log_prior, shifted_report
from test_report import assert_png

COUNTS = [500, 300, 180, 100, 60, 36, 21, 13, 8, 5]


CONFIGS = {loss: load_config([str(ROOT / "configs.yaml")], ["LOSS.name", loss, "MODEL.name", "resnet32"])
           for loss in ("CrossEntropyLoss", "BalancedSoftmax")}


def _results(loss: str, seed: int, evaluation: bool = False) -> dict:
    cfg = CONFIGS[loss]
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(10).repeat_interleave(30)
    logits = torch.randn(300, 10, generator=generator) * (1 + seed) + 3 * torch.nn.functional.one_hot(targets)
    found = {"test": summarize(logits, targets, COUNTS), "num_per_cls": COUNTS,
             "config": OmegaConf.to_container(cfg), "selected_by": "val bcr",
             "calibration": {"reliability": reliability_bins(*top_confidence(logits, targets))},
             "shifted": shifted_report(logits, targets, targets.tolist(), COUNTS, *model_log_prior(cfg, COUNTS))}
    return found | ({"checkpoint": f"/weights/{loss}-{seed}.pt"} if evaluation else {})


def test_the_figures_draw_eight_runs_evaluations_among_them(tmp_path):
    runs = []
    for k in range(8):
        loss = ("CrossEntropyLoss", "BalancedSoftmax")[k % 2]
        folder = tmp_path / "CIFAR10LT" / "resnet32" / f"{loss}-IF_100-ldam_200ep-{k // 2}"
        folder = folder / "evaluation" if k >= 6 else folder
        found = _results(loss, k, evaluation=k >= 6)
        runs.append(Run(folder, k, found["config"], "re-evaluation" if k >= 6 else "complete", found))
    written, notes = calibration_figures(tmp_path, runs, tmp_path)
    assert written == ["reliability.png", "shifted_accuracy.png"] and notes == []
    for name in written:
        assert_png(tmp_path / name)


def test_the_report_draws_them_from_the_runs_that_hold_them(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results-seed0.json").write_text(json.dumps(_results("BalancedSoftmax", 0)))
    older = _results("CrossEntropyLoss", 1)
    del older["calibration"], older["shifted"]  # written before main.py reported them
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "results-seed1.json").write_text(json.dumps(older))
    written = report(tmp_path)
    for name in ("reliability.png", "shifted_accuracy.png"):
        assert tmp_path / name in written
        assert_png(tmp_path / name)
    markdown = (tmp_path / "report.md").read_text()
    assert "![reliability.png](reliability.png)" in markdown and "![shifted_accuracy.png]" in markdown


def test_without_any_such_results_the_report_notes_it(tmp_path):
    older = _results("CrossEntropyLoss", 0)
    del older["calibration"], older["shifted"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results-seed0.json").write_text(json.dumps(older))
    written = report(tmp_path)
    assert not (tmp_path / "reliability.png").exists() and tmp_path / "shifted_accuracy.png" not in written
    assert "shifted_accuracy.png: no run's results hold what it draws" in (tmp_path / "report.md").read_text()
