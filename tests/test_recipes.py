"""Every shipped recipe (recipes/*.yaml) merges over configs.yaml, passes check() and gives its source's learning
rate at chosen epochs or iterations, over as many optimizer steps per epoch as its training loader gives."""
from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from config import LIST_BENCHMARKS, check, load_config
from datasets import build_loaders, long_tail_counts
from optim import build_optimizer, build_scheduler, run_length

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

# recipe -> {epoch or iteration (the schedule's unit): learning rate}, on CIFAR-10-LT IF 100
EXPECTED = {
    # LDAM-DRW's adjust_learning_rate: lr x (e + 1) / 5 for epochs 0-4, then 0.1, x0.01 from 160, x1e-4 from 180
    "ldam_200ep": {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 159: 0.1, 160: 1e-3, 179: 1e-3, 180: 1e-5, 199: 1e-5},
    # BALMS: 0.05 -> 0.1 over 800 iterations, then a cosine to 0 at iteration 13,000 (midpoint 6,900)
    "balms": {0: 0.05, 400: 0.075, 799: 0.05 + 0.05 * 799 / 800, 800: 0.1, 6900: 0.05, 12999: 0.0},
    # stage 2, a cosine per epoch from the lr to 0: cRT 10 epochs from 0.2, LWS 5 from 0.2, BS re-training from 0.1
    # over the 80 epochs (of 25 steps) that cover 2,000 iterations
    "crt": {0: 0.2, 5: 0.1, 9: 0.1 * (1 + math.cos(math.pi * 9 / 10))},
    "lws": {0: 0.2, 4: 0.1 * (1 + math.cos(math.pi * 4 / 5))},
    "bs_retrain": {0: 0.1, 40: 0.05, 79: 0.05 * (1 + math.cos(math.pi * 79 / 80))},
    "balms_meta": {0: 0.1, 40: 0.05, 79: 0.05 * (1 + math.cos(math.pi * 79 / 80))},  # BALMS's meta stage, the same
    # BALMS's meta stage on the list benchmarks (epochs): a cosine to 0, ImageNet-LT 20 epochs from 0.5, Places-LT
    # 10 from 0.02
    "balms_meta_imagenet_lt": {0: 0.5, 10: 0.25, 19: 0.25 * (1 + math.cos(math.pi * 19 / 20))},
    "balms_meta_places_lt": {0: 0.02, 5: 0.01, 9: 0.01 * (1 + math.cos(math.pi * 9 / 10))},
    # the list benchmarks (epochs): BALMS's and the decoupling code's cosine from 0.2 to 0 over 90 epochs
    "imagenet_lt_resnet10": {0: 0.2, 45: 0.1, 89: 0.1 * (1 + np.cos(np.pi * 89 / 90))},
    "inat2018_resnet50": {0: 0.2, 45: 0.1, 89: 0.1 * (1 + np.cos(np.pi * 89 / 90))},
    # OLTR's Places-LT stage 1: x0.1 every 10 epochs (the backbone's lr 0.001)
    "places_lt_stage1": {0: 1e-3, 9: 1e-3, 10: 1e-4, 19: 1e-4, 20: 1e-5, 29: 1e-5},
    # LDAM-DRW: ldam_200ep's schedule (the same cifar_train.py)
    "ldam_drw": {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 159: 0.1, 160: 1e-3, 179: 1e-3, 180: 1e-5, 199: 1e-5},
    # google-research logit_adjustment, cifar10-lt: to 0.1 over 20 epochs, x0.1 at 604, x0.01 at 926, x0.001 at 1128
    "la_loss": {0: 0.005, 10: 0.005 + 0.095 * 10 / 20, 20: 0.1, 603: 0.1, 604: 0.01, 926: 1e-3, 1128: 1e-4,
                1240: 1e-4},
    # BagofTricks-LT's WarmupMultiStepLR: lr x (1/3 (1 - e/5) + e/5) for e < 5, then x0.01 at 320, x0.0001 at 360
    "bs_mixup_400ep": {0: 0.1 / 3, 2: 0.1 * (1 / 3 * 0.6 + 0.4), 4: 0.1 * (1 / 3 * 0.2 + 0.8), 5: 0.1, 319: 0.1,
                       320: 1e-3, 359: 1e-3, 360: 1e-5, 399: 1e-5},
}
# what each method's recipe trains: (LOSS.name, LOSS.reweight, MODEL.classifier, TRAIN.mixup, TRAIN.epochs)
METHOD_RECIPES = {"ldam_drw": ("LDAM", "drw", "normed", False, 200),
                  "la_loss": ("LogitAdjusted", "none", "linear", False, 1241),
                  "bs_mixup_400ep": ("BalancedSoftmax", "none", "linear", True, 400)}
# where the classifier has its own (OPTIMIZER.classifier_lr): OLTR's Places-LT classifier starts at 0.1
EXPECTED_HEAD = {"places_lt_stage1": {0: 0.1, 9: 0.1, 10: 0.01, 20: 1e-3, 29: 1e-3}}
# CIFAR's stage-2 recipes, merged after a stage-1 recipe, with the stage-1 run they start from
STAGE2 = ("crt", "lws", "bs_retrain", "balms_meta")
# BALMS's meta stage on each data set: (META_SAMPLER.lr, .batch_size, .init_pow) and the BALMS config it follows
# (commit 34a61e4); CIFAR's sampler settings are data/MetaSampler.py's defaults, its meta batch the training batch
META_RECIPES = {"balms_meta": ((0.01, None, 0.0), "config/CIFAR10_LT/balms_imba200.yaml"),
                "balms_meta_imagenet_lt": ((0.001, 1024, 0.1), "config/ImageNet_LT/balms_resnet10.yaml"),
                "balms_meta_places_lt": ((0.001, 512, 0.3), "config/Places_LT/balms.yaml")}
# the stage-1 recipe each stage-2 recipe is tested after (the others: ldam_200ep): BALMS's meta stage starts from a
# cross-entropy, instance-sampled stage 1, each data set's own
STAGE1_OF = {"balms_meta": "balms", "balms_meta_imagenet_lt": "imagenet_lt_resnet10",
             "balms_meta_places_lt": "places_lt_stage1"}
# the list benchmarks' recipes: data set -> (model, epochs, batch)
LIST_RECIPES = {"imagenet_lt_resnet10": ("ImageNetLT", "resnet10", 90, 512),
                "inat2018_resnet50": ("iNat2018", "resnet50", 90, 512),
                "places_lt_stage1": ("PlacesLT", "resnet152", 30, 128),
                "balms_meta_imagenet_lt": ("ImageNetLT", "resnet10", 20, 512),
                "balms_meta_places_lt": ("PlacesLT", "resnet152", 10, 256)}


def recipe(path: Path):
    if path.stem in STAGE2 or path.stem in STAGE1_OF:
        stage1 = ROOT / "recipes" / f"{STAGE1_OF.get(path.stem, 'ldam_200ep')}.yaml"
        return load_config([ROOT / "configs.yaml", stage1, path],
                           ["TRAIN.stage2_from", "stage1/model-seed0-best.pt"])
    return load_config([ROOT / "configs.yaml", path], [])


def steps_per_epoch(cfg, factor: int) -> int:
    """The optimizer steps of one epoch on CIFAR-10-LT (exp) at `factor`, on one process, counted as main.py counts
    them: the length of the training loader that build_loaders makes for `cfg`, over a split of CIFAR-10-LT's size
    (5,000 images in the largest class; the pixels do not matter)."""
    counts = long_tail_counts(5000, 10, "exp", factor)
    split = SimpleNamespace(data=np.zeros((sum(counts), 32, 32, 3), np.uint8), targets=np.repeat(np.arange(10), counts),
                            mean=(0.5,) * 3, std=(0.25,) * 3)
    one_process = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"),
                                  gradient_accumulation_steps=1)
    assert cfg.TRAIN.grad_accum_steps == 1  # else main.py groups the loader's batches into fewer steps
    return len(build_loaders(cfg.DATASET, {"train": split}, 0, one_process)["train"])


def test_every_recipe_has_expected_learning_rates():
    assert sorted(path.stem for path in RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_merges_over_configs_yaml_and_names_its_source(path):
    cfg = recipe(path)
    if cfg.DATASET.name in LIST_BENCHMARKS:
        name, model, epochs, batch = LIST_RECIPES[path.stem]
        assert (cfg.DATASET.name, cfg.MODEL.name, cfg.TRAIN.epochs, cfg.DATASET.batch_size) == (name, model, epochs,
                                                                                                  batch)
        assert cfg.DATASET.img_size == 224 and cfg.DATASET.aug_info[0] == "RandomResizedCrop"
        assert re.search(r"commit[\s#]+[0-9a-f]{40}", path.read_text()), "the opening comment names the source's commit"
    else:
        assert cfg.MODEL.name == "resnet32"
    assert "github.com/" in path.read_text().split("\n\n")[0], "the opening comment names the recipe's source"
    check(cfg)


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_schedule_gives_the_sources_learning_rates(path):
    cfg, expected = recipe(path), EXPECTED[path.stem]
    # a list benchmark's steps per epoch do not move a per-epoch schedule
    steps = 227 if cfg.DATASET.name in LIST_BENCHMARKS else steps_per_epoch(cfg, 100)
    epochs, length, _ = run_length(cfg, steps)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model.get_classifier = lambda: model[1]
    optimizer = build_optimizer(cfg.OPTIMIZER, model)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, length)
    seen, seen_head = {}, {}
    for t in range(length):  # main.py's order: train the epoch or step at this lr, then step the schedule
        seen[t], seen_head[t] = optimizer.param_groups[0]["lr"], optimizer.param_groups[-1]["lr"]
        optimizer.step()
        scheduler.step()
    assert {t: seen[t] for t in expected} == pytest.approx(expected, rel=1e-6, abs=1e-8)
    head = EXPECTED_HEAD.get(path.stem, expected)
    assert {t: seen_head[t] for t in head} == pytest.approx(head, rel=1e-6, abs=1e-8)
    assert epochs * (steps if cfg.SCHEDULER.interval == "step" else 1) >= length


@pytest.mark.parametrize("factor, images, steps, epochs", [
    # CIFAR-10-LT at IF 100 has 12,406 images and at IF 200 11,203; in batches of 512 the fast loader keeps the
    # last partial batch (all but a batch of one): ceil(12406 / 512) = 25 and ceil(11203 / 512) = 22 steps
    (100, 12406, 25, 520),
    (200, 11203, 22, 591),
])
def test_balms_runs_13000_iterations_the_last_epoch_cut_short(factor, images, steps, epochs):
    cfg = recipe(ROOT / "recipes" / "balms.yaml")
    assert sum(long_tail_counts(5000, 10, "exp", factor)) == images
    assert steps_per_epoch(cfg, factor) == steps
    assert tuple(run_length(cfg, steps)) == (epochs, 13000, 13000)  # at IF 200 epoch 591 takes 20 of 22 steps
    # the recipe keeps configs.yaml's optimizer
    assert cfg.OPTIMIZER.name == "SGD" and cfg.OPTIMIZER.params.momentum == 0.9 and cfg.OPTIMIZER.weight_decay == 5e-4


@pytest.mark.parametrize("stage1", ["ldam_200ep", "balms"])
@pytest.mark.parametrize("stage2", STAGE2)
def test_stage2_recipes_merge_after_either_stage1_recipe(stage1, stage2):
    cfg = load_config([ROOT / "configs.yaml", ROOT / "recipes" / f"{stage1}.yaml", ROOT / "recipes" / f"{stage2}.yaml"],
                      ["TRAIN.stage2_from", "stage1.pt"])
    check(cfg)
    assert cfg.SCHEDULER.warmup == 0 and cfg.DATASET.batch_size == 512
    assert cfg.DATASET.sampler == {"bs_retrain": "instance", "balms_meta": "meta"}.get(stage2, "class_balanced")


@pytest.mark.parametrize("name", META_RECIPES)
def test_balms_meta_recipes_follow_their_balms_config_from_a_cross_entropy_stage1(name):
    """Each meta recipe names the BALMS file and commit it follows, takes its sampler settings, and is merged after
    the stage-1 recipe that trains cross-entropy with instance sampling, as BALMS's stage 1 is."""
    (lr, batch, init_pow), source = META_RECIPES[name]
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    assert "commit 34a61e432881816c2da14d577d6ed63501288f5f" in " ".join(text.replace("#", " ").split())
    assert source in text
    cfg = recipe(ROOT / "recipes" / f"{name}.yaml")
    check(cfg)
    assert (cfg.META_SAMPLER.lr, cfg.META_SAMPLER.batch_size, cfg.META_SAMPLER.init_pow) == (lr, batch, init_pow)
    assert (cfg.DATASET.sampler, cfg.LOSS.name, cfg.TRAIN.stage2_classifier) == ("meta", "BalancedSoftmax", "retrain")
    stage1 = load_config([ROOT / "configs.yaml", ROOT / "recipes" / f"{STAGE1_OF[name]}.yaml"], [])
    assert (stage1.LOSS.name, stage1.DATASET.sampler, stage1.TRAIN.stage2_from) == ("CrossEntropyLoss", "instance",
                                                                                    None)
    assert f"recipes/{STAGE1_OF[name]}.yaml" in text.split("\n\n")[0], "the opening comment names its stage 1"


def test_balms_meta_names_its_commit_and_differs_from_bs_retrain_in_its_sampler_alone():
    """BALMS's decoupled configs with and without the meta sampler (balms_imba200.yaml, decouple_balanced_softmax_
    imba200.yaml) differ only in the sampler: so do ours, after the same stage-1 recipe."""
    path = ROOT / "recipes" / "balms_meta.yaml"
    assert re.search(r"commit[\s#]+34a61e432881816c2da14d577d6ed63501288f5f", path.read_text())
    stage1 = [ROOT / "configs.yaml", ROOT / "recipes" / "balms.yaml"]
    meta, plain = (OmegaConf.to_container(load_config([*stage1, ROOT / "recipes" / f"{name}.yaml"],
                                                      ["TRAIN.stage2_from", "stage1.pt"]))
                   for name in ("balms_meta", "bs_retrain"))
    assert meta["DATASET"].pop("sampler") == "meta" and plain["DATASET"].pop("sampler") == "instance"
    assert meta == plain


@pytest.mark.parametrize("name", METHOD_RECIPES)
def test_method_recipes_train_their_method(name):
    cfg = recipe(ROOT / "recipes" / f"{name}.yaml")
    check(cfg)
    assert (cfg.LOSS.name, cfg.LOSS.reweight, cfg.MODEL.classifier, cfg.TRAIN.mixup,
            cfg.TRAIN.epochs) == METHOD_RECIPES[name]
    assert re.search(r"commit\s+[0-9a-f]{40}", (ROOT / "recipes" / f"{name}.yaml").read_text())
    # the published defaults that the recipes leave to configs.yaml
    assert (cfg.LOSS.max_m, cfg.LOSS.s, cfg.LOSS.tau, cfg.LOSS.beta, cfg.TRAIN.mixup_alpha) == (0.5, 30.0, 1.0, 0.9999,
                                                                                              1.0)
    if name == "ldam_drw":
        assert cfg.LOSS.drw_epoch == 160
    if name == "la_loss":
        assert cfg.OPTIMIZER.params.nesterov is True
