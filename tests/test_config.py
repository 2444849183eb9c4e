"""config.load_config / config.check: YAML-parsed KEY VALUE overrides, strict keys, one-line ConfigErrors."""
from __future__ import annotations

from pathlib import Path

import re

import pytest
import yaml
from omegaconf import OmegaConf

from config import ConfigError, apply_overrides, check, load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs.yaml"


def load(*overrides: str):
    return load_config(CONFIG, list(overrides))


def refused(*overrides: str) -> str:
    """The message of the ConfigError that loading and checking `overrides` raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        check(load(*overrides))
    message = str(info.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


# ---------------------------------------------------------------- the shipped file

def test_shipped_config_loads_and_passes_check():
    cfg = load()
    check(cfg)
    # a few of the documented defaults (README table), read back through the loader
    assert cfg.DATASET.name == "CIFAR10LT"
    assert cfg.DATASET.imbalance_type is None
    assert cfg.DATASET.imbalance_factor == 1
    assert cfg.OPTIMIZER.name == "SGD" and cfg.OPTIMIZER.lr == 0.1
    assert dict(cfg.OPTIMIZER.params) == {"momentum": 0.9, "nesterov": False}
    assert cfg.SCHEDULER.sched_name == "cosine_annealing"
    assert cfg.TRAIN.epochs == 50
    assert list(cfg.DATASET.aug_info) == ["RandomCrop", "RandomHorizontalFlip"]


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", [])
    assert "nope.yaml" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- override syntax and YAML values

def test_key_space_value_and_key_equals_value_give_the_same_config():
    spaced = load("TRAIN.epochs", "3", "OPTIMIZER.lr", "0.05", "DATASET.name", "CIFAR100LT")
    equals = load("TRAIN.epochs=3", "OPTIMIZER.lr=0.05", "DATASET.name=CIFAR100LT")
    mixed = load("TRAIN.epochs=3", "OPTIMIZER.lr", "0.05", "DATASET.name=CIFAR100LT")
    for cfg in (spaced, equals, mixed):
        assert cfg.TRAIN.epochs == 3
        assert cfg.OPTIMIZER.lr == 0.05
        assert cfg.DATASET.name == "CIFAR100LT"
        check(cfg)


def test_value_may_contain_an_equals_sign():
    assert load("DATASET.datadir=/data/a=b").DATASET.datadir == "/data/a=b"
    assert load("DATASET.datadir", "/data/a=b").DATASET.datadir == "/data/a=b"


def test_a_path_value_stays_a_string():
    # the seed repository eval'd this and crashed
    cfg = load("DATASET.datadir", "/data")
    assert cfg.DATASET.datadir == "/data" and isinstance(cfg.DATASET.datadir, str)
    check(cfg)


def test_null_gives_none_for_a_nullable_key():
    cfg = load("DATASET.imbalance_type", "exp", "DATASET.imbalance_type", "null")
    assert cfg.DATASET.imbalance_type is None
    check(cfg)


def test_imbalance_type_names_are_accepted():
    for name in ("exp", "step"):
        cfg = load("DATASET.imbalance_type", name, "DATASET.imbalance_factor", "100")
        assert cfg.DATASET.imbalance_type == name and cfg.DATASET.imbalance_factor == 100
        check(cfg)


def test_int_value_is_an_int():
    cfg = load("TRAIN.epochs", "3")
    assert cfg.TRAIN.epochs == 3 and type(cfg.TRAIN.epochs) is int


def test_scientific_notation_is_a_float():
    # PyYAML (YAML 1.1) reads "1e-5" as a string; a float key must still get the number
    cfg = load("SCHEDULER.params.eta_min", "1e-5")
    assert type(cfg.SCHEDULER.params.eta_min) is float
    assert cfg.SCHEDULER.params.eta_min == pytest.approx(1e-5, rel=0, abs=1e-15)
    check(cfg)


def test_an_int_is_accepted_for_a_float_key_and_stored_as_float():
    cfg = load("OPTIMIZER.lr", "1")
    assert cfg.OPTIMIZER.lr == 1.0 and type(cfg.OPTIMIZER.lr) is float


def test_bool_value():
    cfg = load("TRAIN.wandb.use", "false", "MODEL.pretrained", "false", "TRAIN.compile", "true")
    assert cfg.TRAIN.wandb.use is False and cfg.TRAIN.compile is True


def test_list_value():
    cfg = load("DATASET.aug_info", "[RandomHorizontalFlip]")
    assert list(cfg.DATASET.aug_info) == ["RandomHorizontalFlip"]
    check(cfg)
    cfg = load("DATASET.mean", "[0.5, 0.5, 0.5]", "DATASET.std", "[0.25, 0.25, 0.25]")
    assert list(cfg.DATASET.mean) == [0.5, 0.5, 0.5] and list(cfg.DATASET.std) == [0.25, 0.25, 0.25]
    check(cfg)


def test_dict_value_replaces_the_whole_scheduler_params():
    cfg = load("SCHEDULER.sched_name", "multistep", "SCHEDULER.params", "{milestones: [160, 180], gamma: 0.01}")
    assert cfg.SCHEDULER.sched_name == "multistep"
    # replaced, not merged: the cosine key eta_min is gone
    assert dict(cfg.SCHEDULER.params) == {"milestones": [160, 180], "gamma": 0.01}
    check(cfg)


def test_dict_value_replaces_the_optimizer_params_for_adam():
    cfg = load("OPTIMIZER.name", "AdamW", "OPTIMIZER.params", "{betas: [0.9, 0.999]}")
    assert dict(cfg.OPTIMIZER.params) == {"betas": [0.9, 0.999]}
    check(cfg)


def test_later_override_wins():
    assert load("TRAIN.epochs", "3", "TRAIN.epochs", "7").TRAIN.epochs == 7


def test_mixed_precision_no_is_the_string_no():
    # `no` is a documented choice of TRAIN.mixed_precision (fp16 | bf16 | no), but YAML 1.1 reads a bare `no` as
    # the boolean False: the override must still give the choice "no", not a type error
    cfg = load("TRAIN.mixed_precision", "no")
    assert cfg.TRAIN.mixed_precision == "no"
    check(cfg)


def test_other_documented_choices_pass_check():
    check(load("TRAIN.mixed_precision", "bf16", "DATASET.loader", "classic", "TRAIN.wandb.mode", "offline",
               "LOSS.name", "BalancedSoftmax", "TRAIN.ckp_metric", "auroc", "MODEL.name", "resnet32",
               "SCHEDULER.sched_name", "constant", "SCHEDULER.params", "{}", "SCHEDULER.warmup", "5",
               "DATASET.aug_info", "[RandomCrop, AutoAugment, RandomHorizontalFlip]"))


# ---------------------------------------------------------------- nothing is evaluated

@pytest.mark.parametrize("key", ["DATASET.datadir", "DEFAULT.exp_name"])
def test_python_expression_is_kept_as_a_string_not_run(key, tmp_path):
    marker = tmp_path / "ran"
    expression = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    cfg = load(key, expression)
    assert marker.exists() is False
    assert OmegaConf.select(cfg, key) == expression


def test_python_expression_for_a_number_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    expression = f"__import__('pathlib').Path({str(marker)!r}).touch() or 3"
    with pytest.raises(ConfigError) as info:
        load("TRAIN.epochs", expression)
    assert not marker.exists()
    assert "TRAIN.epochs" in str(info.value) and "\n" not in str(info.value)


def test_yaml_python_tags_are_not_constructed(tmp_path):
    # yaml.load (unsafe) would call os.system here; safe_load refuses the tag
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError) as info:
        load("DATASET.datadir", f"!!python/object/apply:os.system ['touch {marker}']")
    assert not marker.exists()
    assert "DATASET.datadir" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- error paths: load_config

def _load_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(*overrides)
    message = str(info.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


def test_unknown_key_suggests_the_close_one():
    message = _load_error("TRAIN.epoch", "3")
    assert "TRAIN.epoch" in message and "TRAIN.epochs" in message
    assert "did you mean TRAIN.epochs" in message


def test_unknown_nested_key_suggests_the_close_one():
    message = _load_error("OPTIMIZER.params.momentom", "0.9")
    assert "OPTIMIZER.params.momentom" in message and "OPTIMIZER.params.momentum" in message


def test_unknown_key_far_from_any_lists_the_valid_keys():
    message = _load_error("ZZZZ.qqqq", "1")
    assert "ZZZZ.qqqq" in message
    for key in ("TRAIN.epochs", "DATASET.name", "OPTIMIZER.lr"):
        assert key in message


def test_unknown_key_with_equals_is_refused():
    assert "TRAIN.epochs" in _load_error("TRAIN.epoch=3")


@pytest.mark.parametrize("overrides", [["TRAIN.epochs"], ["TRAIN.epochs", "3", "OPTIMIZER.lr"]])
def test_key_without_value(overrides):
    message = _load_error(*overrides)
    assert overrides[-1] in message and "value" in message


def test_wrong_type_names_key_value_and_expected_type():
    message = _load_error("TRAIN.epochs", "ten")
    assert "TRAIN.epochs" in message and "ten" in message and "int" in message


@pytest.mark.parametrize("key,value", [("TRAIN.epochs", "3.5"), ("TRAIN.epochs", "true"), ("OPTIMIZER.lr", "fast"),
                                       ("TRAIN.wandb.use", "maybe"), ("OPTIMIZER.params", "[0.9]"), ("DATASET.datadir", "[1, 2]")])
def test_other_wrong_types(key, value):
    message = _load_error(key, value)
    assert key in message


def test_a_bare_string_for_a_list_key_is_a_type_error():
    # aug_info is a list; a bare name must be refused as the wrong type when it is read, not iterated letter by
    # letter later ("DATASET.aug_info item 'R' is not valid")
    message = _load_error("DATASET.aug_info", "RandomCrop")
    assert "DATASET.aug_info" in message and "RandomCrop" in message and "list" in message


def test_unparsable_yaml_is_a_config_error():
    message = _load_error("DATASET.datadir", "[unclosed")
    assert "DATASET.datadir" in message and "[unclosed" in message


@pytest.mark.parametrize("key", ["TRAIN.epochs", "OPTIMIZER.lr", "MODEL.name", "DATASET.aug_info"])
def test_null_for_a_key_that_needs_a_value_is_a_config_error(key):
    # null is the wrong type for these keys: it must stop the run at once as a ConfigError naming the key,
    # not pass and crash later with a TypeError/AttributeError (or, for OPTIMIZER.lr, inside the optimizer)
    with pytest.raises(ConfigError) as info:
        check(load(key, "null"))
    assert key in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- error paths: check

@pytest.mark.parametrize("key, value, named", [
    # the key, then what the message names: the refused name first, then the choices
    ("DATASET.name", "CIFAR1000LT", ["CIFAR1000LT", "CIFAR10LT", "CIFAR100LT"]),
    ("LOSS.name", "FocalLoss", ["FocalLoss", "CrossEntropyLoss", "BalancedSoftmax"]),
    ("MODEL.name", "resnet_nonexistent_18", ["resnet_nonexistent_18", "timm"]),
    ("OPTIMIZER.name", "LBFGSX", ["LBFGSX", "SGD", "AdamW", "Adam"]),
    ("SCHEDULER.sched_name", "onecycle", ["onecycle", "cosine_annealing", "multistep", "constant"]),
    ("DATASET.imbalance_type", "linear", ["linear", "exp", "step"]),
    ("DATASET.aug_info", "[RandomCrop, Mixup]", ["Mixup", "RandomCrop", "RandomHorizontalFlip", "AutoAugment"]),
])
def test_an_unknown_name_is_refused_naming_the_key_the_name_and_the_choices(key, value, named):
    message = refused(key, value)
    assert key in message
    for name in named:
        assert name in message


def test_misspelt_model_suggests_a_real_one():
    message = refused("MODEL.name", "resnet33")
    assert "resnet33" in message and ("resnet32" in message or "resnet34" in message)


def test_per_image_augmentation_needs_the_classic_loader():
    message = refused("DATASET.aug_info", "[RandomCrop, TrivialAugmentWide]", "DATASET.loader", "fast")
    assert "TrivialAugmentWide" in message and "classic" in message
    check(load("DATASET.aug_info", "[RandomCrop, TrivialAugmentWide]", "DATASET.loader", "classic"))


@pytest.mark.parametrize("loader", ["fast", "classic"])
def test_the_papers_augmentations_pass_check_with_both_loaders(loader):
    check(load("DATASET.aug_info", "[RandomCrop, RandomHorizontalFlip, AutoAugment, RandAugment, Cutout]",
               "DATASET.loader", loader))


@pytest.mark.parametrize("key,value", [("DATASET.loader", "turbo"), ("TRAIN.mixed_precision", "fp8"),
                                       ("TRAIN.ckp_metric", "top5"), ("TRAIN.wandb.mode", "disabled"),
                                       ("TRAIN.compile_mode", "turbo")])
def test_other_unknown_choices(key, value):
    message = refused(key, value, "TRAIN.compile", "true")  # where TRAIN.compile_mode is read
    assert key in message and value in message and "choose one of" in message


def test_compile_mode_needs_compile():
    message = refused("TRAIN.compile_mode", "reduce-overhead")
    assert "TRAIN.compile_mode reduce-overhead" in message and "TRAIN.compile true" in message
    cfg = load("TRAIN.compile", "true", "TRAIN.compile_mode", "reduce-overhead")
    check(cfg)
    assert cfg.TRAIN.compile_mode == "reduce-overhead"


@pytest.mark.parametrize("value", ["0", "-5"])
def test_imbalance_factor_below_one_is_refused(value):
    message = refused("DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", value)
    assert "DATASET.imbalance_factor" in message and value in message and ">= 1" in message


def test_imbalance_factor_one_and_above_pass():
    check(load("DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "1"))
    check(load("DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "200"))


@pytest.mark.parametrize("value, expected", [("12.5", 12.5), ("1.5", 1.5), ("10", 10), ("10.0", 10), ("1e2", 100)])
def test_imbalance_factor_takes_any_number_a_whole_one_staying_an_int(value, expected):
    # the long-tail profile takes any factor >= 1; a whole one stays an int, so that IF 10 and IF 10.0 are one cell
    cfg = load("DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", value)
    check(cfg)
    assert cfg.DATASET.imbalance_factor == expected and type(cfg.DATASET.imbalance_factor) is type(expected)


@pytest.mark.parametrize("value", ["abc", "true", "[10]", ".nan", ".inf", "0.5"])
def test_imbalance_factor_that_is_no_number_from_one_up_is_refused(value):
    message = refused("DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", value)
    assert message.startswith("DATASET.imbalance_factor must be a number")


@pytest.mark.parametrize("key", ["TRAIN.epochs", "DATASET.batch_size", "TRAIN.grad_accum_steps"])
def test_counts_below_one_are_refused(key):
    message = refused(key, "0")
    assert key in message


@pytest.mark.parametrize("key", ["DATASET.val_per_class", "SCHEDULER.warmup", "DATASET.num_workers"])
def test_negative_counts_are_refused(key):
    message = refused(key, "-1", "DATASET.loader", "classic")  # where DATASET.num_workers is read
    assert message == f"{key} must be >= 0, got -1"


@pytest.mark.parametrize("value", ["-1", "256"])
def test_aug_fill_outside_grey_levels_is_refused(value):
    message = refused("DATASET.aug_info", "[AutoAugment]", "DATASET.aug_fill", value)
    assert "DATASET.aug_fill" in message and "0 to 255" in message


@pytest.mark.parametrize("overrides, named", [
    (["DATASET.imbalance_type", "exp"], "DATASET.imbalance_type null"),
    (["DATASET.name", "ImageFolderLT"], "DATASET.train_subset null"),
])
def test_train_subset_with_a_profile_or_an_image_folder_is_refused(overrides, named):
    message = refused("DATASET.train_subset", "subset.txt", *overrides)
    assert "DATASET.train_subset" in message and named in message


def test_mean_without_std_is_refused():
    message = refused("DATASET.mean", "[0.5, 0.5, 0.5]")
    assert "DATASET.mean" in message and "DATASET.std" in message


@pytest.mark.parametrize("key", ["DATASET.mean", "DATASET.std"])
@pytest.mark.parametrize("value", ["[a, b, c]", "[0.5, 0.5]", "[0.5, 0.5, 0.5, 0.5]", "0.5", "abc", "{r: 0.5}",
                                   "[true, 0.5, 0.5]", "[0.5, .nan, 0.5]", "[[0.5], 0.5, 0.5]"])
def test_mean_and_std_must_be_three_numbers(key, value):
    # each was accepted before, and crashed (or normalised with a nan) once training began
    given = {"DATASET.mean": "[0.5, 0.5, 0.5]", "DATASET.std": "[0.25, 0.25, 0.25]", key: value}
    message = refused(*[word for pair in given.items() for word in pair])
    assert message.startswith(f"{key} must be a list of 3 numbers") and "got " in message


@pytest.mark.parametrize("std", ["[0.25, 0, 0.25]", "[0.25, -0.25, 0.25]"])
def test_std_must_be_positive(std):
    message = refused("DATASET.mean", "[0.5, 0.5, 0.5]", "DATASET.std", std)
    assert "DATASET.std" in message and "> 0" in message


def test_whole_numbers_pass_as_mean_and_std():
    check(load("DATASET.mean", "[0, 0.5, 1]", "DATASET.std", "[1, 1, 1]"))


# ---------------------------------------------------------------- settings that have no effect

NO_EFFECT = [
    # (a setting that the rest of the config leaves unread, what gives it an effect, the words of the fix)
    (["DATASET.img_size", "64"], ["DATASET.name", "ImageFolderLT"], "set DATASET.img_size back to 32"),
    (["DATASET.num_workers", "8"], ["DATASET.loader", "classic"], "set DATASET.loader classic"),
    (["SCHEDULER.warmup_start", "0.5"], ["SCHEDULER.warmup", "5"], "set SCHEDULER.warmup above 0"),
    (["TRAIN.epochs", "3"], ["TRAIN.iterations", "null"], "set TRAIN.iterations null"),
    (["TRAIN.compile_mode", "reduce-overhead"], ["TRAIN.compile", "true"], "add TRAIN.compile true"),
    (["LOSS.gamma", "2.0"], ["LOSS.name", "Focal"], "set LOSS.name Focal"),
    (["LOSS.tau", "1.5"], ["LOSS.name", "LogitAdjusted"], "set LOSS.name LogitAdjusted"),
    (["LOSS.max_m", "0.3"], ["LOSS.name", "LDAM", "MODEL.classifier", "normed"], "set LOSS.name LDAM"),
    (["LOSS.s", "16.0"], ["LOSS.name", "LDAM", "MODEL.classifier", "normed"], "set LOSS.name LDAM"),
    (["LOSS.beta", "0.999"], ["LOSS.reweight", "class_balanced"], "set LOSS.reweight class_balanced or drw"),
    (["LOSS.drw_epoch", "30"], ["LOSS.reweight", "drw", "TRAIN.iterations", "null", "TRAIN.epochs", "40"],
     "set LOSS.reweight drw"),
    (["TRAIN.mixup_alpha", "0.2"], ["TRAIN.mixup", "true"], "add TRAIN.mixup true"),
    (["TRAIN.remix", "true"], ["TRAIN.mixup", "true"], "add TRAIN.mixup true"),
    (["TRAIN.remix_kappa", "2.0"], ["TRAIN.mixup", "true", "TRAIN.remix", "true"],
     "add TRAIN.mixup true TRAIN.remix true"),
    (["TRAIN.remix_tau", "0.3"], ["TRAIN.mixup", "true", "TRAIN.remix", "true"], "add TRAIN.mixup true TRAIN.remix true"),
]


def test_class_weights_have_no_effect_on_the_losses_that_correct_the_prior():
    for name in ("BalancedSoftmax", "LogitAdjusted"):
        message = refused("LOSS.name", name, "LOSS.reweight", "drw")
        assert message.startswith(f"LOSS.reweight drw has no effect with LOSS.name {name}")
        assert "set LOSS.name CrossEntropyLoss or Focal or LDAM" in message
    check(load("LOSS.name", "Focal", "LOSS.reweight", "class_balanced", "LOSS.gamma", "2"))


def test_the_normed_head_draws_its_own_init():
    message = refused("MODEL.classifier", "normed", "MODEL.classifier_init", "pytorch")
    assert message.startswith("MODEL.classifier_init pytorch has no effect with MODEL.classifier normed")
    check(load("MODEL.classifier", "normed", "LOSS.name", "LDAM"))

@pytest.mark.parametrize("overrides, named", [
    (["LOSS.name", "LDAM"], "set MODEL.classifier normed"),
    (["LOSS.reweight", "drw"], "LOSS.drw_epoch 160 is not among the run's 50 epochs"),
    (["LOSS.reweight", "sometimes"], "choose one of: none, class_balanced, drw"),
    (["MODEL.classifier", "cosine"], "choose one of: linear, normed"),
    (["LOSS.name", "Focal", "LOSS.gamma", "-1"], "LOSS.gamma must be >= 0"),
    (["LOSS.reweight", "class_balanced", "LOSS.beta", "1"], "LOSS.beta must be in [0, 1)"),
    (["TRAIN.mixup", "true", "TRAIN.mixup_alpha", "0"], "TRAIN.mixup_alpha must be > 0"),
    (["TRAIN.mixup", "true", "TRAIN.remix", "true", "LOSS.reweight", "class_balanced"], "set LOSS.reweight none"),
    (["TRAIN.mixup", "true", "TRAIN.remix", "true", "LOSS.reweight", "drw", "LOSS.drw_epoch", "10"],
     "set LOSS.reweight none"),
    (["TRAIN.mixup", "true", "TRAIN.remix", "true", "TRAIN.remix_kappa", "0.5"], "TRAIN.remix_kappa must be >= 1"),
    (["TRAIN.mixup", "true", "TRAIN.remix", "true", "TRAIN.remix_tau", "1.5"], "TRAIN.remix_tau in [0, 1]"),
    (["DATASET.sampler", "progressive", "TRAIN.iterations", "1000"], "set TRAIN.iterations null"),
    (["DATASET.sampler", "square"], "instance, class_balanced, sqrt, progressive"),
])
def test_bad_method_settings_are_refused(overrides, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        check(load(*overrides))


@pytest.mark.parametrize("setting, effect, fix", NO_EFFECT, ids=[case[0][0] for case in NO_EFFECT])
def test_a_setting_with_no_effect_is_refused_naming_the_fix(setting, effect, fix):
    # TRAIN.iterations 13000 is there for TRAIN.epochs to have no effect; it does not change the other cases
    message = refused("TRAIN.iterations", "13000", *setting)
    assert message.startswith(f"{setting[0]} {setting[1]} has no effect") and fix in message
    check(load("TRAIN.iterations", "13000", *setting, *effect))


def recipe_of(tmp_path, *pairs: str, name: str = "recipe.yaml") -> Path:
    """An overlay file that sets the dotted KEY VALUE `pairs`."""
    tree = {}
    for key, value in zip(pairs[::2], pairs[1::2]):
        section, leaf = key.split(".")
        tree.setdefault(section, {})[leaf] = yaml.safe_load(value)
    return overlay(tmp_path, yaml.safe_dump(tree), name)


@pytest.mark.parametrize("setting, effect, fix", NO_EFFECT, ids=[case[0][0] for case in NO_EFFECT])
def test_a_setting_with_no_effect_is_refused_in_a_file_too_naming_it(tmp_path, setting, effect, fix):
    # the file itself leaves its setting without effect: TRAIN.iterations 13000 beside it
    recipe = recipe_of(tmp_path, "TRAIN.iterations", "13000", *setting)
    with pytest.raises(ConfigError) as info:
        load_config([CONFIG, recipe], [])
    assert str(info.value).startswith(f"{recipe}: {setting[0]} {setting[1]} has no effect")
    check(load_config([CONFIG, recipe], effect))
    # so does a later file that adds nothing to it
    later = recipe_of(tmp_path, "OPTIMIZER.lr", "0.2", name="later.yaml")
    with pytest.raises(ConfigError) as info:
        load_config([CONFIG, recipe, later], [])
    assert str(info.value).startswith(f"{recipe}: {setting[0]} {setting[1]} has no effect")


@pytest.mark.parametrize("setting, effect, fix", NO_EFFECT, ids=[case[0][0] for case in NO_EFFECT])
def test_a_files_setting_that_a_later_setting_leaves_without_effect_is_accepted(tmp_path, setting, effect, fix):
    # the recipe's value had its effect until the user's own later setting superseded it: not the user's mistake
    recipe = recipe_of(tmp_path, *setting, *effect)
    undo = {"DATASET.name": "CIFAR10LT", "DATASET.loader": "fast", "SCHEDULER.warmup": "0", "TRAIN.iterations": "60",
            "TRAIN.compile": "false", "LOSS.name": "CrossEntropyLoss", "LOSS.reweight": "none", "TRAIN.mixup": "false",
            "DATASET.sampler": "instance", "MODEL.classifier": "linear"}[effect[0]]
    cfg = load_config([CONFIG, recipe], [effect[0], undo])
    check(cfg)
    assert str(OmegaConf.select(cfg, setting[0])).lower() == setting[1]  # True as YAML writes it: true
    later = recipe_of(tmp_path, effect[0], undo, name="later.yaml")
    check(load_config([CONFIG, recipe, later], []))
    # set by the user where it has no effect, it is refused still
    with pytest.raises(ConfigError, match=f"^{setting[0]} .* has no effect"):
        load_config([CONFIG, recipe], [effect[0], undo, *setting])


@pytest.mark.parametrize("overrides", [["TRAIN.iterations", "60"], ["SCHEDULER.warmup", "0"],
                                       ["TRAIN.iterations", "60", "SCHEDULER.warmup", "0"]])
def test_a_recipes_length_and_warm_up_give_way_to_the_users(overrides):
    ldam = CONFIG.parent / "recipes" / "ldam_200ep.yaml"
    cfg = load_config([CONFIG, ldam], overrides)
    check(cfg)
    assert cfg.TRAIN.epochs == 200 and cfg.SCHEDULER.warmup_start == 0.2


def test_defaults_with_no_effect_are_not_refused(tmp_path):
    # configs.yaml's num_workers, warmup_start, epochs, img_size and compile_mode are all unread here: none is set
    cfg = load("TRAIN.iterations", "13000")
    check(cfg)
    # set to the first file's value, a key says nothing new: also accepted, from a file or the command line
    check(load("TRAIN.iterations", "13000", "TRAIN.epochs", "50", "DATASET.num_workers", "2"))
    recipe = overlay(tmp_path, "SCHEDULER:\n  warmup: 5\n  warmup_start: 0.5\n")
    check(load_config([CONFIG, recipe], ["SCHEDULER.warmup", "0", "SCHEDULER.warmup_start", "0.1"]))


def test_a_saved_config_is_its_own_default(tmp_path):
    # evaluate.py merges its overrides over a run's saved config: what the run set is the default there
    saved = load("TRAIN.iterations", "13000")
    saved.TRAIN.epochs = 3  # as a run from before this check may have saved it
    cfg = apply_overrides(OmegaConf.create(OmegaConf.to_container(saved)), ["DATASET.test_batch_size", "64"])
    check(cfg)
    assert cfg.TRAIN.epochs == 3


@pytest.mark.parametrize("key, value, named", [
    # what a keyword argument of the optimizer or scheduler may not be, and what the message must name
    ("OPTIMIZER.params", "{momentom: 0.9}", ["OPTIMIZER.params", "momentom", "momentum", "nesterov"]),
    ("OPTIMIZER.name", "Adam", ["momentum", "betas"]),  # SGD's params left over
    ("SCHEDULER.sched_name", "multistep", ["SCHEDULER.params", "milestones", "gamma"]),  # cosine's left over
    ("SCHEDULER.params", "{eta_mim: 0.0}", ["eta_mim", "eta_min"]),
    # set by the code: passing them too would be a duplicate keyword at build time
    ("SCHEDULER.params", "{length: 3}", ["length"]),
    ("OPTIMIZER.params", "{lr: 0.3}", ["lr"]),
])
def test_params_the_optimizer_or_scheduler_cannot_take_are_refused_naming_the_valid_ones(key, value, named):
    message = refused(key, value)
    for name in named:
        assert name in message


# ---------------------------------------------------------------- schedule keys

@pytest.mark.parametrize("overrides, named", [
    (["SCHEDULER.interval", "iteration"], "SCHEDULER.interval"),
    (["SCHEDULER.warmup_start", "0"], "SCHEDULER.warmup_start"),
    (["SCHEDULER.warmup_start", "1.5"], "SCHEDULER.warmup_start"),
    (["TRAIN.iterations", "0"], "TRAIN.iterations"),
    (["TRAIN.iterations", "1.5"], "TRAIN.iterations"),
])
def test_bad_schedule_values_are_refused(overrides, named):
    assert named in refused(*overrides)


def test_per_step_schedule_over_iterations_passes_check():
    cfg = load("SCHEDULER.interval", "step", "SCHEDULER.warmup", "800", "SCHEDULER.warmup_start", "0.5",
               "TRAIN.iterations", "13000")
    check(cfg)
    assert cfg.TRAIN.iterations == 13000 and cfg.SCHEDULER.interval == "step"
    assert load("TRAIN.iterations", "13000", "TRAIN.iterations", "null").TRAIN.iterations is None


# ---------------------------------------------------------------- several --config files

def overlay(tmp_path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_later_files_override_earlier_ones_key_by_key(tmp_path):
    first = overlay(tmp_path, "TRAIN:\n  epochs: 7\nOPTIMIZER:\n  lr: 0.2\n", "a.yaml")
    second = overlay(tmp_path, "TRAIN:\n  epochs: 9\n", "b.yaml")
    cfg = load_config([CONFIG, first, second], [])
    assert cfg.TRAIN.epochs == 9 and cfg.OPTIMIZER.lr == 0.2
    # keys no file names keep configs.yaml's values, also inside a section a file touches
    assert cfg.TRAIN.grad_accum_steps == 1 and cfg.TRAIN.mixed_precision == "fp16"
    assert cfg.TRAIN.wandb.project_name == "Balanced Softmax"
    check(cfg)


def test_the_command_line_overrides_every_file(tmp_path):
    cfg = load_config([CONFIG, overlay(tmp_path, "TRAIN: {epochs: 9}\n")], ["TRAIN.epochs", "3"])
    assert cfg.TRAIN.epochs == 3


def test_a_files_params_dict_replaces_the_whole_dict(tmp_path):
    recipe = overlay(tmp_path, "SCHEDULER:\n  sched_name: multistep\n  params: {milestones: [160, 180], gamma: 0.01}\n"
                               "OPTIMIZER:\n  params:\n    momentum: 0.8\n")
    cfg = load_config([CONFIG, recipe], [])
    assert dict(cfg.SCHEDULER.params) == {"milestones": [160, 180], "gamma": 0.01}
    assert dict(cfg.OPTIMIZER.params) == {"momentum": 0.8}  # nesterov is gone, as with OPTIMIZER.params '{...}'
    check(cfg)


def test_file_values_are_typed_as_on_the_command_line(tmp_path):
    # `no` stays the text "no" where the key is text; null only where configs.yaml has null; lists stay lists
    recipe = overlay(tmp_path, "TRAIN:\n  mixed_precision: no\n  iterations: 100\n"
                               "DATASET:\n  aug_info:\n    - RandomHorizontalFlip\n  download: no\n")
    cfg = load_config([CONFIG, recipe], [])
    assert cfg.TRAIN.mixed_precision == "no" and cfg.TRAIN.iterations == 100
    assert list(cfg.DATASET.aug_info) == ["RandomHorizontalFlip"] and cfg.DATASET.download is False
    check(cfg)


@pytest.mark.parametrize("text, named", [
    ("TRAIN:\n  epoch: 3\n", "unknown config key TRAIN.epoch; did you mean TRAIN.epochs?"),
    ("TRAIN.epoch: 3\n", "unknown config key TRAIN.epoch; did you mean TRAIN.epochs?"),
    ("TRAINN:\n  epochs: 3\n", "unknown config key TRAINN.epochs; did you mean TRAIN.epochs?"),
    ("TRAIN:\n  epochs: three\n", "TRAIN.epochs must be int"),
    ("OPTIMIZER:\n  lr: null\n", "OPTIMIZER.lr cannot be null"),
    ("TRAIN: [1, 2\n", "not valid YAML"),
    ("- TRAIN\n", "must be a mapping"),
])
def test_a_bad_file_is_a_one_line_error_naming_the_file_and_the_key(tmp_path, text, named):
    recipe = overlay(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config([CONFIG, recipe], [])
    message = str(info.value)
    assert message.startswith(f"{recipe}: ") and named in message and "\n" not in message


def test_main_takes_config_more_than_once(tmp_path, monkeypatch):
    import main
    seen = {}
    monkeypatch.setattr(main, "run", lambda cfg: seen.setdefault("cfg", cfg))
    recipe = overlay(tmp_path, "TRAIN: {epochs: 9}\nMODEL: {name: resnet32}\n")
    main.main(["--config", str(CONFIG), "--config", str(recipe), "OPTIMIZER.lr", "0.3"])
    cfg = seen["cfg"]
    assert (cfg.TRAIN.epochs, cfg.MODEL.name, cfg.OPTIMIZER.lr) == (9, "resnet32", 0.3)


@pytest.mark.parametrize("key", ["fused", "foreach"])
def test_optimizer_params_may_opt_out_of_the_fused_optimizer(key):
    # optim.build_optimizer fuses on a GPU unless OPTIMIZER.params sets fused or foreach itself
    cfg = load("OPTIMIZER.params", f"{{momentum: 0.9, {key}: false}}")
    check(cfg)
    assert OmegaConf.to_container(cfg.OPTIMIZER.params) == {"momentum": 0.9, key: False}


@pytest.mark.parametrize("overrides, named", [
    (["DATASET.imbalance_factor", "100"], "DATASET.imbalance_type exp or step"),
    (["DATASET.aug_fill", "128"], "add one to DATASET.aug_info"),
])
def test_imbalance_factor_and_aug_fill_without_effect_are_refused(overrides, named):
    message = refused(*overrides)
    assert overrides[0] in message and "no effect" in message and named in message
    check(load(*overrides, "DATASET.imbalance_type", "exp", "DATASET.aug_info", "[AutoAugment]"))


def test_an_unknown_classifier_init_is_refused():
    message = refused("MODEL.classifier_init", "xavier")
    assert "MODEL.classifier_init" in message and "model" in message and "pytorch" in message


def test_a_pretrained_file_needs_pretrained_true_and_must_exist(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    message = refused("MODEL.pretrained_file", str(weights))
    assert "MODEL.pretrained_file" in message and "no effect" in message and "add MODEL.pretrained true" in message
    check(load("MODEL.pretrained", "true", "MODEL.pretrained_file", str(weights)))
    missing = refused("MODEL.pretrained", "true", "MODEL.pretrained_file", str(tmp_path / "none.pth"))
    assert "none.pth does not exist" in missing


def test_main_takes_settings_before_a_later_config(tmp_path, monkeypatch):
    # docs/usage.md's stage 2: `python main.py $S1 --config recipes/crt.yaml ...`, where $S1 ends in settings
    import main
    seen = {}
    monkeypatch.setattr(main, "run", lambda cfg: seen.setdefault("cfg", cfg))
    recipe = overlay(tmp_path, "TRAIN: {epochs: 9}\n")
    main.main(["--config", str(CONFIG), "OPTIMIZER.lr", "0.3", "--config", str(recipe), "MODEL.name", "resnet32"])
    cfg = seen["cfg"]
    assert (cfg.TRAIN.epochs, cfg.MODEL.name, cfg.OPTIMIZER.lr) == (9, "resnet32", 0.3)


@pytest.mark.parametrize("overrides", [[], ["DATASET.datadir", "/data"]])
def test_a_recipe_as_the_first_file_is_refused_naming_configs_yaml(overrides):
    balms = CONFIG.parent / "recipes" / "balms.yaml"
    with pytest.raises(ConfigError) as info:
        load_config([balms], overrides)
    message = str(info.value)
    assert message.startswith(f"{balms} is an overlay") and "the first --config must be configs.yaml" in message
    assert f"--config configs.yaml --config {balms}" in message and "\n" not in message


def test_a_whole_config_with_other_params_dicts_is_a_first_file(tmp_path):
    # a run's saved config of the LDAM recipe: its scheduler params are multistep's, not configs.yaml's eta_min
    saved = load_config([CONFIG, CONFIG.parent / "recipes" / "ldam_200ep.yaml"])
    path = tmp_path / "configs-seed0.yaml"
    OmegaConf.save(saved, path)
    cfg = load_config(path, ["TRAIN.epochs", "3"])
    assert dict(cfg.SCHEDULER.params) == {"milestones": [160, 180], "gamma": 0.01}
