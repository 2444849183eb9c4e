"""Load configs.yaml, merge `KEY VALUE` overrides strictly, and check every value before training starts."""
from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Callable, NamedTuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from errors import ConfigError


_ABSENT = object()
# The shipped defaults: the first file given must hold all of their keys (a recipe is an overlay of it)
SHIPPED = Path(__file__).resolve().parent / "configs.yaml"
# torch.compile's modes (TRAIN.compile_mode)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Keys that take any number, whatever the type of their default: a whole number stays an int (`10.0` gives 10)
NUMBER_KEYS = ("DATASET.imbalance_factor",)
# The benchmarks read from the community's list files (datasets.lists.LIST_DATASETS, which a test holds equal); named
# here so that importing config.py costs no torch
LIST_BENCHMARKS = ("ImageNetLT", "PlacesLT", "iNat2018")
# The LOSS keys that each LOSS.name reads beside its name (losses.LOSSES' factories; tests/test_losses.py holds them
# equal); LOSS.beta goes with reweight class_balanced or drw, LOSS.drw_epoch with drw
LOSS_KEYS = {"CrossEntropyLoss": ("reweight",), "BalancedSoftmax": (), "LogitAdjusted": ("tau",),
             "Focal": ("gamma", "reweight"), "LDAM": ("max_m", "s", "reweight")}


def _class_weighted(c: DictConfig) -> bool:
    """Whether the loss weighs classes: LOSS.reweight class_balanced or drw, with a loss that reads it."""
    return "reweight" in LOSS_KEYS.get(c.LOSS.name, ()) and c.LOSS.reweight != "none"


def _listed(c: DictConfig) -> bool:
    return c.DATASET.name in LIST_BENCHMARKS


class Ignored(NamedTuple):
    """When the rest of the config leaves a key unread, why (a format string over the config `c`), and what else
    would give the key an effect ("" where nothing would)."""
    when: Callable[[DictConfig], bool]
    why: str
    fix: str = ""


# Keys that the rest of the config can leave with no effect. A value that an overlay file or the command line sets,
# different from the first file's, is refused where it has none once that file (or the command line) is merged, as a
# key nothing reads is: set, it would claim what the run does not do. A recipe's value that a later file or the
# command line leaves without effect (`TRAIN.iterations 60` over a recipe's epochs) is superseded, not refused. The
# first file's own values (the defaults) are never refused.
NO_EFFECT = {
    "DATASET.img_size": Ignored(lambda c: c.DATASET.name in ("CIFAR10LT", "CIFAR100LT"),
                                "on {c.DATASET.name}, whose images stay 32x32 (ImageFolderLT and the list benchmarks "
                                "resize)"),
    "DATASET.num_workers": Ignored(lambda c: c.DATASET.loader == "fast" and not _listed(c),
                                   "with DATASET.loader fast on {c.DATASET.name}, which runs no worker processes",
                                   "set DATASET.loader classic"),
    "DATASET.listdir": Ignored(lambda c: not _listed(c), "on {c.DATASET.name}, which reads no list files",
                               f"choose one of {', '.join(LIST_BENCHMARKS)}"),
    "DATASET.strict_sizes": Ignored(lambda c: not _listed(c), "on {c.DATASET.name}, which reads no list files",
                                    f"choose one of {', '.join(LIST_BENCHMARKS)}"),
    "DATASET.cache_dir": Ignored(lambda c: not _listed(c) or c.DATASET.loader != "fast",
                                 "unless DATASET.loader is fast on a list benchmark (only it keeps a decoded cache)"),
    "DATASET.imbalance_type": Ignored(_listed, "on {c.DATASET.name}, whose train list fixes the class counts"),
    "DATASET.val_per_class": Ignored(_listed, "on {c.DATASET.name}, which selects on its published val list"),
    "DATASET.train_subset": Ignored(_listed, "on {c.DATASET.name}, whose train list is the subset"),
    "DATASET.verify": Ignored(lambda c: c.DATASET.name not in ("CIFAR10LT", "CIFAR100LT"),
                              "on {c.DATASET.name}: only CIFAR's files have published md5s"),
    "DATASET.draw": Ignored(lambda c: c.DATASET.name not in ("CIFAR10LT", "CIFAR100LT") or
                            c.DATASET.train_subset is not None,
                            "unless CIFAR draws its training images (CIFAR10LT or CIFAR100LT, DATASET.train_subset "
                            "null)"),

    "SCHEDULER.warmup_start": Ignored(lambda c: c.SCHEDULER.warmup == 0, "while SCHEDULER.warmup is 0",
                                      "set SCHEDULER.warmup above 0"),
    "TRAIN.epochs": Ignored(lambda c: c.TRAIN.iterations is not None,
                            "while TRAIN.iterations {c.TRAIN.iterations} sets the run's length",
                            "set TRAIN.iterations null to train by epochs"),
    "TRAIN.compile_mode": Ignored(lambda c: not c.TRAIN.compile, "while TRAIN.compile is false", "add TRAIN.compile true"),
    "DATASET.imbalance_factor": Ignored(lambda c: c.DATASET.imbalance_type is None,
                                        "while DATASET.imbalance_type is null (no profile is drawn; a list "
                                        "benchmark's train list fixes its own)",
                                        "set DATASET.imbalance_type exp or step on CIFAR or ImageFolderLT"),
    "DATASET.aug_fill": Ignored(lambda c: not set(c.DATASET.aug_info) & {"AutoAugment", "RandAugment", "TrivialAugmentWide"},
                                "while DATASET.aug_info has no AutoAugment, RandAugment or TrivialAugmentWide",
                                "add one to DATASET.aug_info"),
    "MODEL.pretrained_file": Ignored(lambda c: not c.MODEL.pretrained, "while MODEL.pretrained is false",
                                     "add MODEL.pretrained true"),
    "OPTIMIZER.classifier_lr": Ignored(lambda c: c.TRAIN.stage2_from is not None,
                                       "while TRAIN.stage2_from is set (stage 2 trains the classifier alone, at "
                                       "OPTIMIZER.lr)", "give the classifier's lr as OPTIMIZER.lr"),
    "TRAIN.stage2_classifier": Ignored(lambda c: c.TRAIN.stage2_from is None,
                                       "while TRAIN.stage2_from is null (stage 1 trains the whole model)",
                                       "set TRAIN.stage2_from to a stage-1 checkpoint"),
    **{f"META_SAMPLER.{key}": Ignored(lambda c: c.DATASET.sampler != "meta",
                                      "while DATASET.sampler is {c.DATASET.sampler}", "set DATASET.sampler meta")
       for key in ("lr", "batch_size", "init_pow")},
    "TRAIN.mixup_alpha": Ignored(lambda c: not c.TRAIN.mixup, "while TRAIN.mixup is false", "add TRAIN.mixup true"),
    "TRAIN.remix": Ignored(lambda c: not c.TRAIN.mixup, "while TRAIN.mixup is false", "add TRAIN.mixup true"),
    **{f"TRAIN.{key}": Ignored(lambda c: not (c.TRAIN.mixup and c.TRAIN.remix), "without TRAIN.mixup true and "
                               "TRAIN.remix true", "add TRAIN.mixup true TRAIN.remix true")
       for key in ("remix_kappa", "remix_tau")},
    "MODEL.classifier_init": Ignored(lambda c: c.MODEL.classifier == "normed",
                                     "with MODEL.classifier normed, which draws its own (LDAM-DRW's)",
                                     "set MODEL.classifier linear"),
    # the LOSS keys that each loss reads (LOSS_KEYS)
    **{f"LOSS.{key}": Ignored(lambda c, key=key: key not in LOSS_KEYS.get(c.LOSS.name, ()), "with LOSS.name {c.LOSS.name}",
                              f"set LOSS.name {' or '.join(name for name, keys in LOSS_KEYS.items() if key in keys)}")
       for key in ("reweight", "gamma", "max_m", "s", "tau")},
    "LOSS.beta": Ignored(lambda c: not _class_weighted(c),
                         "without class weights (LOSS.reweight {c.LOSS.reweight} with LOSS.name {c.LOSS.name})",
                         "set LOSS.reweight class_balanced or drw with CrossEntropyLoss, Focal or LDAM"),
    "LOSS.drw_epoch": Ignored(lambda c: "reweight" not in LOSS_KEYS.get(c.LOSS.name, ()) or c.LOSS.reweight != "drw",
                              "without deferred re-weighting (LOSS.reweight {c.LOSS.reweight} with LOSS.name "
                              "{c.LOSS.name})", "set LOSS.reweight drw with CrossEntropyLoss, Focal or LDAM"),
}


@functools.cache
def _shipped_keys() -> tuple[str, ...]:
    """The keys every whole config holds: configs.yaml's leaves, a DICT_VALUES dict counted as one key (read once)."""
    leaves = [key for key in _leaf_keys(OmegaConf.load(SHIPPED))
              if not any(key.startswith(f"{whole}.") for whole in DICT_VALUES)]
    return (*leaves, *DICT_VALUES)


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{path}.") if isinstance(value, DictConfig) else [path]
    return keys


def _pairs(overrides: list[str]) -> list[tuple[str, str]]:
    """Accept both `KEY VALUE` and `KEY=VALUE`."""
    pairs, items = [], list(overrides)
    while items:
        item = items.pop(0)
        if "=" in item and not item.startswith("="):
            key, value = item.split("=", 1)
        elif not items:
            raise ConfigError(f"{item} has no value: write `{item} VALUE`")
        else:
            key, value = item, items.pop(0)
        pairs.append((key, value))
    return pairs


def overridden_keys(overrides: list[str]) -> set[str]:
    """The keys that dotted `KEY VALUE` (or `KEY=VALUE`) overrides set."""
    return {key for key, _ in _pairs(list(overrides))}


def _parse(key: str, text: str, default, nullable: bool):
    """Parse a value as YAML and check that its type matches the default's; null only where the YAML has null."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{key}: cannot parse {text!r} as a YAML value") from None
    if (isinstance(default, float) or key in NUMBER_KEYS) and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-5 as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, str) and isinstance(value, (bool, int, float)):
        value = text  # YAML 1.1 reads `no` as False and `001` as 1; a text setting keeps what was typed
    if value is None:
        if not nullable:
            raise ConfigError(f"{key} cannot be null (default: {default!r})")
        return None
    if default is None:
        return value
    if key in NUMBER_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {text!r} (default: {default!r})")
        return int(value) if float(value).is_integer() else value
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,)}
    for kind, accepted in expected.items():
        if isinstance(default, kind):
            if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
                raise ConfigError(f"{key} must be {kind.__name__}, got {text!r} (default: {default!r})")
            return float(value) if kind is float else value
    return value


# Keys whose value is a whole dict: a file or an override replaces it, never merges into it
DICT_VALUES = ("OPTIMIZER.params", "SCHEDULER.params")


class Setting(NamedTuple):
    """One KEY VALUE to merge, the value as YAML text; `source` names the file it came from ("" = command line)."""
    key: str
    text: str
    source: str = ""


def load_config(paths: str | Path | list, overrides: list[str] = ()) -> DictConfig:
    """The first YAML, each later YAML merged over it key by key, then the dotted overrides. Every key of a later
    file or override must exist in the first file, with a value of the same type (any number for NUMBER_KEYS), and
    must have an effect (NO_EFFECT)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder: pass a YAML file, e.g. --config configs.yaml")
        if not path.is_file():
            raise ConfigError(f"config file {path} not found: pass --config configs.yaml")
    try:
        cfg = OmegaConf.load(paths[0])
    except Exception as error:  # yaml's or OmegaConf's parse errors, of many types
        raise ConfigError(f"{paths[0]}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{paths[0]}: must be a mapping of sections; the first --config is configs.yaml")
    missing = [key for key in _shipped_keys() if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT]
    if missing:
        raise ConfigError(f"{paths[0]} is an overlay, not a whole config (it lacks {', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}): the first --config must be configs.yaml, e.g. "
                          f"--config configs.yaml {' '.join(f'--config {path}' for path in paths)}")
    settings = [setting for path in paths[1:] for setting in file_settings(path, cfg)]
    return apply_overrides(cfg, overrides, settings)


def file_settings(path: Path, cfg: DictConfig) -> list[Setting]:
    """The leaves of an overlay file as dotted settings, each value as written in the file: a text setting keeps
    `no` as typed, as on the command line. Sections are walked into; a DICT_VALUES dict is one value."""
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}: must be a mapping of sections, like configs.yaml")

    def leaves(node: yaml.Node, prefix: str) -> list[Setting]:
        found = []
        for key_node, value in node.value:
            key = f"{prefix}{key_node.value}"
            base = OmegaConf.select(cfg, key, default=_ABSENT)
            section = base is _ABSENT or (isinstance(base, DictConfig) and key not in DICT_VALUES)
            if isinstance(value, yaml.MappingNode) and section:
                found += leaves(value, f"{key}.")
            else:
                text = value.value if isinstance(value, yaml.ScalarNode) else yaml.serialize(value)
                found.append(Setting(key, text, str(path)))
        return found
    return leaves(root, "")


def apply_overrides(cfg: DictConfig, overrides: list[str] = (), settings: list[Setting] = ()) -> DictConfig:
    """`cfg` with `settings` (from overlay files), then the dotted overrides, merged in; unknown keys are refused,
    and so is a value that has no effect (NO_EFFECT) where it was set: once the file that sets it is merged, or at
    the end for the command line's. A file's value that a later file or the command line leaves without effect is
    superseded, not refused. A key may be set to null only where `cfg` as given holds null."""
    OmegaConf.set_struct(cfg, True)
    valid = _leaf_keys(cfg)
    nullable = {key for key in valid if OmegaConf.select(cfg, key) is None}
    defaults = {key: OmegaConf.select(cfg, key) for key in NO_EFFECT}
    merged = [*settings, *(Setting(key, text) for key, text in _pairs(list(overrides)))]
    set_by = {}  # key -> the index in `merged` of its last setting
    unread = {}  # key -> the source of a value that had no effect once its source was merged
    for index, (key, text, source) in enumerate(merged):
        try:
            _set(cfg, key, text, valid, key in nullable)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if source else str(error)) from None
        set_by[key] = index
        if index + 1 < len(merged) and merged[index + 1].source == source:
            continue
        # `source` is merged: judge the values it set, as the config stands now
        begins = next(i for i in range(index, -1, -1) if i == 0 or merged[i - 1].source != source)
        for name, ignored in NO_EFFECT.items():
            if begins <= set_by.get(name, -1) <= index:
                unread.pop(name, None)
                if OmegaConf.select(cfg, name) != defaults[name] and ignored.when(cfg):
                    unread[name] = source
    for key, source in unread.items():
        ignored, value = NO_EFFECT[key], OmegaConf.select(cfg, key)
        if ignored.when(cfg):  # else a later setting gave it its effect back
            where = f"{source}: " if source else ""
            fix = f"{ignored.fix}, or " if ignored.fix else ""
            raise ConfigError(f"{where}{key} {_as_written(value)} has no effect {ignored.why.format(c=cfg)}: {fix}set "
                              f"{key} back to {_as_written(defaults[key])}")
    return cfg


def _as_written(value) -> str:
    """A setting's value as one writes it on the command line (YAML's true, false and null)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _set(cfg: DictConfig, key: str, text: str, valid: list[str], nullable: bool) -> None:
    if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(valid)}"
        raise ConfigError(f"unknown config key {key}{hint}")
    default = OmegaConf.select(cfg, key)
    if isinstance(default, (DictConfig, ListConfig)):
        default = OmegaConf.to_container(default)
    OmegaConf.update(cfg, key, _parse(key, text, default, nullable), merge=False)


def with_defaults(saved: dict, defaults_path: Path) -> DictConfig:
    """A config saved by an older version of the code, with every key added since then at its default in
    `defaults_path` (configs.yaml), which is what that code did. A DICT_VALUES dict is kept whole, as saved."""
    cfg = OmegaConf.create(saved)
    defaults = OmegaConf.load(defaults_path)
    for key in _leaf_keys(defaults):
        if not any(key.startswith(f"{whole}.") for whole in DICT_VALUES) and \
                OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            OmegaConf.update(cfg, key, OmegaConf.select(defaults, key), force_add=True)
    return cfg


def data_seed(cfg: DictConfig) -> int:
    """The seed that picks the long-tailed subset and the validation split: DEFAULT.data_seed, else DEFAULT.seed."""
    return cfg.DEFAULT.seed if cfg.DEFAULT.data_seed is None else cfg.DEFAULT.data_seed


def check(cfg: DictConfig) -> None:
    """Refuse values that would fail later, naming the valid choices; imports the registries in its parts, so that
    importing config.py alone costs no torch or timm."""
    from meta_sampler import check_meta_sampler

    _check_choices(cfg)
    check_meta_sampler(cfg)
    _check_augmentations(cfg)
    _check_model(cfg)
    _check_sizes(cfg)
    _check_methods(cfg)
    _check_normalisation(cfg)
    _check_seeds(cfg)
    check_exp_name(cfg.DEFAULT.exp_name)
    _check_optimizer(cfg)


def _one_of(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} {value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def _check_choices(cfg: DictConfig) -> None:
    """Every key that names one of a registry's entries."""
    from models import CLASSIFIER_INITS, CLASSIFIERS  # importing models registers resnet32 with timm
    from datasets import DATASETS, DRAWS, IMBALANCE_TYPES, SAMPLERS
    from losses import LOSSES, REWEIGHTS
    from meta_sampler import META
    from optim import INTERVALS, OPTIMIZERS, SCHEDULERS
    from stage2 import STAGE2_CLASSIFIERS
    from train import CHECKPOINT_METRICS

    data, train = cfg.DATASET, cfg.TRAIN
    _one_of("DATASET.name", data.name, DATASETS)
    _one_of("DATASET.imbalance_type", data.imbalance_type, IMBALANCE_TYPES)
    _one_of("DATASET.loader", data.loader, ("fast", "classic"))
    _one_of("DATASET.draw", data.draw, DRAWS)
    _one_of("DATASET.sampler", data.sampler, (*SAMPLERS, META))
    _one_of("LOSS.name", cfg.LOSS.name, LOSSES)
    _one_of("LOSS.reweight", cfg.LOSS.reweight, REWEIGHTS)
    _one_of("MODEL.classifier", cfg.MODEL.classifier, CLASSIFIERS)
    _one_of("OPTIMIZER.name", cfg.OPTIMIZER.name, OPTIMIZERS)
    _one_of("SCHEDULER.sched_name", cfg.SCHEDULER.sched_name, SCHEDULERS)
    _one_of("TRAIN.mixed_precision", train.mixed_precision, ("fp16", "bf16", "no"))
    _one_of("TRAIN.ckp_metric", train.ckp_metric, CHECKPOINT_METRICS)
    _one_of("TRAIN.wandb.mode", train.wandb.mode, ("online", "offline"))
    _one_of("TRAIN.compile_mode", train.compile_mode, COMPILE_MODES)
    _one_of("MODEL.classifier_init", cfg.MODEL.classifier_init, CLASSIFIER_INITS)
    _one_of("TRAIN.stage2_classifier", train.stage2_classifier, STAGE2_CLASSIFIERS)
    _one_of("SCHEDULER.interval", cfg.SCHEDULER.interval, INTERVALS)
    if train.stage2_from is not None and not isinstance(train.stage2_from, str):
        raise ConfigError(f"TRAIN.stage2_from must be a path or null, got {train.stage2_from!r}")


def _check_augmentations(cfg: DictConfig) -> None:
    """DATASET.aug_info: names of the data set's augmentations, and of the fast loader's where it runs."""
    from datasets import AUGMENTATIONS, FAST_AUGMENTATIONS, FAST_LIST_AUGMENTATIONS, LIST_AUGMENTATIONS

    data = cfg.DATASET
    augmentations, fast = ((LIST_AUGMENTATIONS, FAST_LIST_AUGMENTATIONS) if _listed(cfg) else
                           (AUGMENTATIONS, FAST_AUGMENTATIONS))
    for name in data.aug_info:
        if name not in augmentations:
            on = f" on {data.name}" if _listed(cfg) or name in LIST_AUGMENTATIONS else ""
            raise ConfigError(f"DATASET.aug_info item {name!r} is not valid{on}; choose one of: "
                              f"{', '.join(augmentations)}")
        if data.loader == "fast" and name not in fast:
            raise ConfigError(
                f"DATASET.aug_info {name} needs per-image transforms: set DATASET.loader classic "
                f"(the fast loader does {', '.join(fast)})")


def _check_model(cfg: DictConfig) -> None:
    """MODEL.name is a timm model, and a pretrained file to read exists."""
    import timm

    import models  # noqa: F401  registers resnet32 and resnet10 with timm

    if not timm.is_model(cfg.MODEL.name):
        close = difflib.get_close_matches(cfg.MODEL.name, timm.list_models(), n=3)
        raise ConfigError(f"MODEL.name {cfg.MODEL.name!r} is not a timm model; closest: {', '.join(close) or 'none'}")
    # stage 2 overwrites every weight with stage 1's: a stage-1 recipe's pretrained file is not read
    if cfg.MODEL.pretrained and cfg.MODEL.pretrained_file is not None and cfg.TRAIN.stage2_from is None and \
            not Path(cfg.MODEL.pretrained_file).is_file():
        raise ConfigError(f"MODEL.pretrained_file {cfg.MODEL.pretrained_file} does not exist: give the path of a "
                          "local weights file")


def _check_sizes(cfg: DictConfig) -> None:
    """The counts and fractions of the data and the schedule: batch sizes, epochs, imbalance, warm-up."""
    data, train = cfg.DATASET, cfg.TRAIN
    if not 0 < cfg.SCHEDULER.warmup_start <= 1:
        raise ConfigError(f"SCHEDULER.warmup_start must be in (0, 1] (a fraction of OPTIMIZER.lr), "
                          f"got {cfg.SCHEDULER.warmup_start}")
    if train.iterations is not None and (not isinstance(train.iterations, int) or train.iterations < 1):
        raise ConfigError(f"TRAIN.iterations must be a whole number of optimizer steps >= 1, or null, "
                          f"got {train.iterations!r}")
    if not (math.isfinite(data.imbalance_factor) and data.imbalance_factor >= 1):
        raise ConfigError(f"DATASET.imbalance_factor must be a number >= 1 (largest class / smallest), "
                          f"got {data.imbalance_factor}")
    if data.train_subset is not None and (data.name == "ImageFolderLT" or data.imbalance_type is not None):
        why = ("is read by CIFAR10LT and CIFAR100LT only" if data.name == "ImageFolderLT" else
               f"fixes the class counts, which DATASET.imbalance_type {data.imbalance_type} would draw anew")
        fix = "set DATASET.train_subset null" if data.name == "ImageFolderLT" else "set DATASET.imbalance_type null"
        raise ConfigError(f"DATASET.train_subset {why}: {fix}")
    for key in ("DATASET.batch_size", "DATASET.test_batch_size", "TRAIN.epochs", "TRAIN.grad_accum_steps",
                "TRAIN.log_interval", "DATASET.img_size"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {OmegaConf.select(cfg, key)}")
    for key in ("DATASET.num_workers", "DATASET.val_per_class", "SCHEDULER.warmup"):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {OmegaConf.select(cfg, key)}")


def _check_normalisation(cfg: DictConfig) -> None:
    """The grey level of the augmentations' fill, and the per-channel mean and std."""
    data = cfg.DATASET
    if not 0 <= data.aug_fill <= 255:
        raise ConfigError(f"DATASET.aug_fill must be a grey level from 0 to 255, got {data.aug_fill}")
    if (data.mean is None) != (data.std is None):
        raise ConfigError("DATASET.mean and DATASET.std go together: both null, or both lists of 3 numbers")
    for key, values in (("DATASET.mean", data.mean), ("DATASET.std", data.std)):
        if values is not None and not _three_numbers(values):
            shown = OmegaConf.to_container(values) if isinstance(values, (DictConfig, ListConfig)) else values
            raise ConfigError(f"{key} must be a list of 3 numbers, one per channel (e.g. [0.5, 0.5, 0.5]), "
                              f"or null; got {shown!r}")
    if data.std is not None and min(data.std) <= 0:
        raise ConfigError(f"DATASET.std divides the pixels: every channel's must be > 0, got {list(data.std)}")


def _check_seeds(cfg: DictConfig) -> None:
    if cfg.DEFAULT.data_seed is not None and not isinstance(cfg.DEFAULT.data_seed, int):
        raise ConfigError(f"DEFAULT.data_seed must be an integer or null, got {cfg.DEFAULT.data_seed!r}")
    for key in ("DEFAULT.seed", "DEFAULT.data_seed"):  # numpy takes seeds from 0 to 2**32 - 1
        value = OmegaConf.select(cfg, key)
        if value is not None and not 0 <= value < 2 ** 32:
            raise ConfigError(f"{key} must be a whole number >= 0 and < 2**32, got {value}")


def _check_optimizer(cfg: DictConfig) -> None:
    """The learning rates, and the optimizer's and scheduler's own parameters."""
    from optim import OPTIMIZERS, SCHEDULERS

    lr = cfg.OPTIMIZER.lr
    if not _positive_number(lr):
        raise ConfigError(f"OPTIMIZER.lr must be a number > 0 (the peak learning rate), got {lr!r}")
    lr = cfg.OPTIMIZER.classifier_lr
    if lr is not None and not _positive_number(lr):
        raise ConfigError(f"OPTIMIZER.classifier_lr must be a number > 0, or null for OPTIMIZER.lr; got {lr!r}")
    # fused and foreach stay open: setting either opts out of the fused optimizer optim.build_optimizer picks on a GPU
    _check_params("OPTIMIZER.params", OPTIMIZERS[cfg.OPTIMIZER.name], cfg.OPTIMIZER.params,
                  ("params", "lr", "weight_decay", "maximize", "capturable", "differentiable"))
    _check_params("SCHEDULER.params", SCHEDULERS[cfg.SCHEDULER.sched_name], cfg.SCHEDULER.params, ("optimizer", "length"))


def check_exp_name(name) -> None:
    """DEFAULT.exp_name is one folder name inside savedir/DATASET.name/MODEL.name/ (null: main.py names it with
    run_folder.default_exp_name)."""
    if name is None:
        return
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"DEFAULT.exp_name {name!r} must be one folder name (no '/', not empty, '.' or '..'), "
                          "so that the run lands in DEFAULT.savedir where report.py finds it; or null to name it "
                          "from the loss, imbalance and recipe")


def _check_methods(cfg: DictConfig) -> None:
    """The settings of the losses, samplers and mixup of the long-tail literature."""
    loss = cfg.LOSS
    if not 0 <= loss.beta < 1:
        raise ConfigError(f"LOSS.beta must be in [0, 1) (Cui et al.: 0.9999), got {loss.beta}")
    if loss.gamma < 0:
        raise ConfigError(f"LOSS.gamma must be >= 0 (0 is cross-entropy), got {loss.gamma}")
    if loss.s <= 0 or loss.max_m < 0:
        raise ConfigError(f"LOSS.s must be > 0 and LOSS.max_m >= 0, got s {loss.s}, max_m {loss.max_m}")
    if loss.drw_epoch < 1:
        raise ConfigError(f"LOSS.drw_epoch must be >= 1 (0 is LOSS.reweight class_balanced), got {loss.drw_epoch}")
    if loss.reweight == "drw" and cfg.TRAIN.iterations is None and loss.drw_epoch >= cfg.TRAIN.epochs:
        raise ConfigError(f"LOSS.drw_epoch {loss.drw_epoch} is not among the run's {cfg.TRAIN.epochs} epochs (0 to "
                          f"{cfg.TRAIN.epochs - 1}): nothing would be reweighted; lower it")
    if loss.name == "LDAM" and cfg.MODEL.classifier != "normed":
        raise ConfigError(f"LOSS.name LDAM takes cosine logits, scaled by LOSS.s {loss.s}: set MODEL.classifier normed")
    if (cfg.TRAIN.stage2_from is not None and cfg.TRAIN.stage2_classifier == "retrain"
            and cfg.MODEL.classifier == "normed" and loss.name != "LDAM"):
        raise ConfigError(f"TRAIN.stage2_classifier retrain would draw a normed head afresh, whose cosine logits in "
                          f"[-1, 1] {loss.name} hardly trains (only LDAM scales them, by LOSS.s): set "
                          "MODEL.classifier linear to retrain a linear head on the stage-1 features")
    if cfg.TRAIN.mixup_alpha <= 0:
        raise ConfigError(f"TRAIN.mixup_alpha must be > 0 (BagofTricks-LT: 1.0), got {cfg.TRAIN.mixup_alpha}")
    if cfg.TRAIN.mixup and cfg.TRAIN.remix:
        if _class_weighted(cfg):
            raise ConfigError(f"TRAIN.remix weighs each image's loss, which LOSS.reweight {loss.reweight}'s weighted "
                              "mean does not split into: set LOSS.reweight none")
        if not cfg.TRAIN.remix_kappa >= 1 or not 0 <= cfg.TRAIN.remix_tau <= 1:
            raise ConfigError(f"TRAIN.remix_kappa must be >= 1 and TRAIN.remix_tau in [0, 1] (Chou et al.: 3 and "
                              f"0.5), got {cfg.TRAIN.remix_kappa} and {cfg.TRAIN.remix_tau}")
    if cfg.DATASET.sampler == "progressive" and cfg.TRAIN.iterations is not None:
        raise ConfigError("DATASET.sampler progressive moves over TRAIN.epochs: set TRAIN.iterations null and give "
                          "the run's length in TRAIN.epochs")


def _positive_number(value) -> bool:
    """A finite number > 0, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def _three_numbers(values) -> bool:
    return isinstance(values, ListConfig) and len(values) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _check_params(key: str, factory, params: DictConfig, reserved: tuple[str, ...]) -> None:
    import inspect

    accepted = [p for p in inspect.signature(factory).parameters if p not in reserved and p not in ("self", "kwargs")]
    for name in params:
        if name not in accepted:
            raise ConfigError(
                f"{key}.{name} is not a parameter of this choice; it takes {', '.join(accepted) or 'none'} "
                f"(replace the whole dict, e.g. {key} '{{{accepted[0] if accepted else ''}: ...}}')")
