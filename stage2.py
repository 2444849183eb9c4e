"""Stage 2 of decoupled training (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020): a stage-1 model, every part but its classifier frozen, and the classifier trained again.

TRAIN.stage2_classifier "retrain" draws the classifier afresh and trains it: with class-balanced sampling and
cross-entropy that is cRT, with instance sampling and Balanced Softmax it is BALMS's decoupled variant without the
meta-sampler. "lws" keeps the stage-1 classifier frozen and learns one scale per class (learnable weight scaling).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from checkpoint import load_checkpoint, output_paths, sha256
from errors import ConfigError
from models import classifier_name

STAGE2_CLASSIFIERS = ("retrain", "lws")  # TRAIN.stage2_classifier
# Settings that decide which images a run trains, validates and tests on: a stage-2 run must share its stage-1 run's,
# or its validation images may be ones stage 1 trained on
SAME_IMAGES = ("DATASET.imbalance_type", "DATASET.imbalance_factor", "DATASET.train_subset", "DATASET.draw",
               "DATASET.val_per_class")


class ScaledClassifier(nn.Module):
    """Learnable weight scaling: a frozen linear classifier whose logits are multiplied by one learnable scale per
    class. The scales start at 1, so the model starts as stage 1 left it."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(linear.out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) * self.scales


class Stage2Model(nn.Module):
    """A model whose every part but the classifier is frozen: those parts take no gradient, and their BatchNorm
    layers keep stage 1's statistics (they stay in eval mode while the classifier trains). The decoupling code
    leaves BatchNorm in training mode, where class-balanced batches would move its statistics."""

    def __init__(self, model: nn.Module, classifier: str) -> None:
        super().__init__()
        self.model, self.head_name = model, classifier_name(model)
        model.requires_grad_(False)
        if classifier == "lws":
            model.set_submodule(self.head_name, ScaledClassifier(model.get_classifier()))
        else:
            model.get_classifier().requires_grad_(True)
        self.train()

    def get_classifier(self) -> nn.Module:
        return self.model.get_submodule(self.head_name)

    def train(self, mode: bool = True) -> Stage2Model:
        super().train(mode)
        self.model.eval()
        self.get_classifier().train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class Stage1(NamedTuple):
    """The stage-1 checkpoint a stage-2 run started from, as its checkpoints and results record it: where it was
    (resolved), its loss, its epoch and the sha256 of its file."""
    checkpoint: str
    loss: str
    epoch: int | None
    sha256: str | None = None  # None in checkpoints written before it was recorded


def stage1_note(cfg, stage1: Stage1) -> str | None:
    """One line where a BALMS stage 2 (the meta sampler, or Balanced Softmax re-training, its matched baseline)
    starts from a stage 1 that BALMS would not: every BALMS meta config loads a cross-entropy, instance-sampled stage 1
    (github.com/jiawei-ren/BalancedMetaSoftmax-Classification at commit 34a61e432881816c2da14d577d6ed63501288f5f,
    config/CIFAR10_LT/balms_imba200.yaml: model_dir resnet32_softmax_imba200)."""
    balms = cfg.DATASET.sampler == "meta" or (cfg.LOSS.name == "BalancedSoftmax" and cfg.DATASET.sampler == "instance")
    if not balms or stage1.loss in (None, "CrossEntropyLoss"):
        return None
    what = "the meta sampler" if cfg.DATASET.sampler == "meta" else "Balanced Softmax re-training"
    return (f"note: {what} starts here from a {stage1.loss} stage 1; BALMS starts it from a CrossEntropyLoss one "
            "(recipes/balms_meta.yaml), so this run measures something else")


def stage1_path(cfg) -> Path:
    """TRAIN.stage2_from: a checkpoint file, or a run folder, whose best checkpoint of this run's seed is taken."""
    path = Path(cfg.TRAIN.stage2_from)
    if path.is_dir():
        best = output_paths(path, cfg.DEFAULT.seed)["best"]
        if not best.is_file():
            raise ConfigError(f"TRAIN.stage2_from {path} holds no {best.name} for seed {cfg.DEFAULT.seed}: train "
                              "stage 1 with this seed first, or pass a checkpoint file")
        return best
    if not path.is_file():
        raise ConfigError(f"TRAIN.stage2_from {path} does not exist: pass a stage-1 checkpoint (model-seed*-best.pt) "
                          "or the run folder that holds it")
    return path


def load_stage1(cfg, head: str, num_classes: int) -> tuple[dict, Stage1]:
    """The stage-1 checkpoint's weights, after checking that it was trained on this run's images, classes and model
    (whose classifier is the submodule `head`); each refusal is one line naming both sides."""
    path = stage1_path(cfg)
    try:
        state = load_checkpoint(path)
    except ConfigError as error:
        raise ConfigError(f"TRAIN.stage2_from: {error}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(f"TRAIN.stage2_from {path} is not a checkpoint written by main.py (it lacks 'model' and "
                          "'config')")
    theirs = state["config"]
    if (theirs.get("TRAIN") or {}).get("stage2_from"):
        raise ConfigError(f"TRAIN.stage2_from {path} is itself a stage-2 run (from {theirs['TRAIN']['stage2_from']}): "
                          "pass the stage-1 checkpoint it started from")

    def differ(key: str, ours, their_value, why: str, fix: str) -> None:
        if ours != their_value:
            raise ConfigError(f"TRAIN.stage2_from {path} {why}: {key} {their_value} there, {ours} in this run; {fix}")

    def section(key: str):  # a dotted key of the saved config; None where its code had no such key
        part, name = key.split(".")
        return (theirs.get(part) or {}).get(name)

    differ("DATASET.name", cfg.DATASET.name, section("DATASET.name"), "is of another data set",
           "pass a checkpoint of this data set")
    differ("MODEL.name", cfg.MODEL.name, section("MODEL.name"), "is of another model", f"set MODEL.name {section('MODEL.name')}")
    for key in SAME_IMAGES:
        their_value = section(key)
        if key == "DATASET.draw" and their_value is None:  # saved before the key: the one draw there was
            their_value = "torch"
        differ(key, cfg.DATASET[key.split(".")[1]], their_value, "was trained on other images",
               f"set {key} {their_value}")
    their_seed = _data_seed(theirs["DEFAULT"])
    differ("data seed (DEFAULT.data_seed, else DEFAULT.seed)", _data_seed(cfg.DEFAULT), their_seed,
           "was trained on other images", f"set DEFAULT.data_seed {their_seed}")
    classes = len(state["model"].get(f"{head}.weight", ()))
    if classes != num_classes:
        raise ConfigError(f"TRAIN.stage2_from {path} has {classes} classes, this run's {cfg.DATASET.name} has "
                          f"{num_classes}: pass a checkpoint of this data set")
    return state["model"], Stage1(str(path.resolve()), section("LOSS.name"), state.get("epoch"), sha256(path))


def _data_seed(default) -> int:
    """config.data_seed of a DEFAULT section, saved (a dict) or not (config.py imports this module)."""
    return default["seed"] if default.get("data_seed") is None else default["data_seed"]


def freeze_for_stage2(model: nn.Module, cfg, num_classes: int,
                      resumed: dict | None = None) -> tuple[nn.Module, Stage1 | None]:
    """With TRAIN.stage2_from set: `model` with the stage-1 weights, every part but the classifier frozen, and the
    classifier as TRAIN.stage2_classifier wants it ("retrain": the one `model` was built with, freshly drawn).
    Without it: `model` as it is, and None. Resuming from `resumed`, a stage-2 checkpoint that holds every weight
    and the stage-1 provenance: the frozen model, to be loaded from it, and that provenance; the stage-1 file is not
    read, so it may have moved."""
    if cfg.TRAIN.stage2_from is None:
        return model, None
    if resumed is not None and resumed.get("stage1") is not None:
        return Stage2Model(model, cfg.TRAIN.stage2_classifier), Stage1(**resumed["stage1"])
    head = classifier_name(model)
    weights, stage1 = load_stage1(cfg, head, num_classes)
    if cfg.TRAIN.stage2_classifier == "retrain":
        weights = {key: value for key, value in weights.items() if not key.startswith(f"{head}.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not key.startswith(f"{head}.") for key in missing):
        raise ConfigError(f"TRAIN.stage2_from {stage1.checkpoint} does not fit MODEL.name {cfg.MODEL.name}: "
                          f"{len(missing)} weights missing, {len(unexpected)} unexpected")
    return Stage2Model(model, cfg.TRAIN.stage2_classifier), stage1
