"""Every shipped recipe (recipes/*.yaml) merges over configs.yaml, passes check() and gives its source's learning
rate at chosen epochs or iterations."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from config import check, load_config
from datasets import AUGMENTATIONS
from optim import build_optimizer, build_scheduler, run_length

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

# recipe -> (optimizer steps per epoch to assume, {epoch or iteration (the schedule's unit): learning rate})
EXPECTED = {
    # LDAM-DRW's adjust_learning_rate: lr x (e + 1) / 5 for epochs 0-4, then 0.1, x0.01 from 160, x1e-4 from 180
    "ldam_200ep": (97, {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 159: 0.1, 160: 1e-3, 179: 1e-3, 180: 1e-5, 199: 1e-5}),
    # BALMS: 0.05 -> 0.1 over 800 iterations, then a cosine to 0 at iteration 13,000 (midpoint 6,900)
    "balms": (25, {0: 0.05, 400: 0.075, 799: 0.05 + 0.05 * 799 / 800, 800: 0.1, 6900: 0.05, 12999: 0.0}),
}


def test_every_recipe_has_expected_learning_rates():
    assert sorted(path.stem for path in RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_merges_over_configs_yaml_and_names_its_source(path):
    cfg = load_config([ROOT / "configs.yaml", path], [])
    assert cfg.MODEL.name == "resnet32"
    assert "github.com/" in path.read_text().split("\n\n")[0], "the opening comment names the recipe's source"
    if "Cutout" in cfg.DATASET.aug_info and "Cutout" not in AUGMENTATIONS:
        pytest.skip("Cutout is not in datasets.AUGMENTATIONS yet (it comes with the fast loader's augmentations)")
    check(cfg)


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_schedule_gives_the_sources_learning_rates(path):
    cfg = load_config([ROOT / "configs.yaml", path], [])
    steps_per_epoch, expected = EXPECTED[path.stem]
    epochs, length = run_length(cfg, steps_per_epoch)
    optimizer = build_optimizer(cfg.OPTIMIZER, nn.Linear(2, 2))
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, length)
    seen = {}
    for t in range(length):  # main.py's order: train the epoch or step at this lr, then step the schedule
        seen[t] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert {t: seen[t] for t in expected} == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert epochs * (steps_per_epoch if cfg.SCHEDULER.interval == "step" else 1) >= length


def test_balms_runs_13000_iterations_in_whole_epochs():
    cfg = load_config([ROOT / "configs.yaml", ROOT / "recipes" / "balms.yaml"], [])
    # CIFAR-10-LT IF 100: 12,406 images, batches of 512 -> 25 steps per epoch; IF 200: 11,203 images -> 23 (the
    # fast loader keeps the last partial batch)
    assert tuple(run_length(cfg, 25)) == (520, 13000)
    assert tuple(run_length(cfg, 23)) == (566, 13000)
    # the recipe keeps configs.yaml's optimizer
    assert cfg.OPTIMIZER.name == "SGD" and cfg.OPTIMIZER.params.momentum == 0.9 and cfg.OPTIMIZER.weight_decay == 5e-4
