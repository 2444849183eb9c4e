"""Finding the runs that main.py and evaluate.py left under results folders, at any depth, and reading each seed of
each run folder into a Run: its config, whether it finished, and its test scores."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from checkpoint import (RESUMABLE_CHANGES, SHARED_CONFIG, load_checkpoint, output_paths, output_seeds,
                        per_class_problem, results_problem, sha256, whole_checkpoint)
from omegaconf import OmegaConf

from config import LIST_BENCHMARKS, NO_EFFECT, with_defaults
from errors import ConfigError
from run_folder import holder

# Config keys that name a run's cell in the tables, and those that never change what a run trains
IDENTITY_KEYS = ("DATASET.name", "DATASET.imbalance_type", "DATASET.imbalance_factor", "LOSS.name", "MODEL.name")
NOT_SETTINGS = ("DEFAULT.seed", "DEFAULT.savedir", "DEFAULT.exp_name", *RESUMABLE_CHANGES)

# A run's settings as sorted (dotted key, value as JSON) pairs: hashable, so that runs can be pooled by them
Settings = tuple[tuple[str, str], ...]


class Column(NamedTuple):
    """A data set at one imbalance: a column of Table 1."""
    dataset: str
    kind: str       # the imbalance type: exp | step | ..., "balanced" for every balanced run, "?" without a config
    factor: float   # the imbalance factor, 1 when balanced


@dataclass
class Run:
    """One seed of one run folder: its identity, its settings and, once finished, its test scores."""
    folder: Path
    seed: int
    config: dict
    status: str = "complete"          # complete | incomplete | re-evaluation | stale (see `stale`)
    results: dict = field(default_factory=dict)
    note: str = ""
    last_epoch: int | None = None     # epochs finished, for an incomplete run
    epochs: int | None = None         # the epochs it trains, TRAIN.iterations' too (see run_epochs); None: unknown
    damaged: bool = False             # it wrote its results, but a file of it is damaged: see `note`

    @property
    def dataset(self) -> str:
        return self.name("DATASET.name")

    @property
    def loss(self) -> str:
        """The row this run is a seed of: its method (method_name), "then" its stage-2 method when it re-trained a
        stage-1 model's classifier ("CrossEntropyLoss then cRT"), and " + " the post-hoc correction evaluate.py
        applied."""
        stage1, post_hoc = self.results.get("stage1"), self.results.get("post_hoc")
        label = f"{stage1.get('loss')} then {stage2_method(self.config)}" if stage1 else method_name(self.config)
        if post_hoc:
            tau = "tau on " + post_hoc["chosen_on"].split()[0] if post_hoc.get("chosen_on") else f"tau {post_hoc['tau']:g}"
            label += f" + {POST_HOC_NAMES.get(post_hoc['method'], post_hoc['method'])} ({tau})"
        return label

    @property
    def model(self) -> str:
        return self.name("MODEL.name")

    def name(self, key: str) -> str:
        """A config value as text; "?" where the config is missing (a run that left no readable config)."""
        value = lookup(self.config, key)
        return "?" if value is None else str(value)

    @property
    def column(self) -> Column:
        """The data set and imbalance this run is a column of; a null imbalance type or a factor of 1 is balanced. A
        list benchmark's imbalance is its train list's, largest class over smallest (kind "train list"), and a
        DATASET.train_subset run's its subset's (kind "train subset")."""
        if lookup(self.config, "DATASET") is None:
            return Column(self.dataset, "?", 0)
        fixed = ("train list" if lookup(self.config, "DATASET.name") in LIST_BENCHMARKS else
                 "train subset" if lookup(self.config, "DATASET.train_subset") is not None else None)
        if fixed:  # one imbalance, the file's own
            counts = self.results.get("num_per_cls") or [1]
            return Column(self.dataset, fixed, max(counts) / min(counts))
        kind, factor = lookup(self.config, "DATASET.imbalance_type"), lookup(self.config, "DATASET.imbalance_factor")
        if kind is None or factor in (None, 1):
            return Column(self.dataset, "balanced", 1)
        return Column(self.dataset, str(kind), factor)

    @property
    def settings(self) -> Settings:
        """Everything that defines what was trained and reported, apart from the cell's own identity and the
        seed: runs pool over seeds only when this is equal."""
        config = completed(self.config)
        unread = unread_method_keys(config)
        flat = {key: value for key, value in flatten(config).items()
                if key not in IDENTITY_KEYS and not any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)
                and key not in unread}
        flat["selected_by"] = self.results.get("selected_by", "evaluate.py" if self.status == "re-evaluation" else None)
        return tuple(sorted((key, json.dumps(value, sort_keys=True)) for key, value in flat.items()))

    def score(self, metric: str, part: str = "test"):
        return (self.results.get(part) or {}).get(metric)


# evaluate.py's post-hoc methods, as rows name them
POST_HOC_NAMES = {"logit_adjust": "logit adjustment", "tau_norm": "tau-norm"}
# The stage-2 methods of the literature: (TRAIN.stage2_classifier, DATASET.sampler, LOSS.name) -> name
STAGE2_METHODS = {("retrain", "class_balanced", "CrossEntropyLoss"): "cRT",
                  ("retrain", "instance", "BalancedSoftmax"): "BS re-training",
                  ("lws", "class_balanced", "CrossEntropyLoss"): "LWS",
                  ("retrain", "meta", "BalancedSoftmax"): "BALMS meta sampler"}


# Keys of the methods that the rest of a config can leave unread (config.NO_EFFECT): a loss's settings under another
# loss, mixup_alpha without mixup. They do not tell runs apart
METHOD_KEYS = ("LOSS.reweight", "LOSS.beta", "LOSS.drw_epoch", "LOSS.gamma", "LOSS.max_m", "LOSS.s", "LOSS.tau",
               "TRAIN.mixup_alpha", "TRAIN.remix", "TRAIN.remix_kappa", "TRAIN.remix_tau")


def unread_method_keys(config: dict) -> set[str]:
    """The METHOD_KEYS that `config` (completed) leaves without effect."""
    if not lookup(config, "LOSS") or not lookup(config, "TRAIN"):
        return set()
    cfg = OmegaConf.create(config)
    return {key for key in METHOD_KEYS if NO_EFFECT[key].when(cfg)}


# What a stage-1 row's name says beyond its loss, in this order: the class weights, mixup, the sampler
REWEIGHT_NAMES = {"class_balanced": "class-balanced weights", "drw": "DRW"}
SAMPLER_NAMES = {"class_balanced": "class-balanced sampling", "sqrt": "sqrt sampling",
                 "progressive": "progressive sampling"}
METHOD_NAMED = ("LOSS.reweight", "TRAIN.mixup", "TRAIN.remix", "DATASET.sampler", "MODEL.classifier")


def method_name(config: dict) -> str:
    """A stage-1 run's method: its loss, + its class weighting, mixup, sampler and a normed head where it has them
    ("LDAM + DRW", "BalancedSoftmax + mixup", "CrossEntropyLoss + sqrt sampling"; LDAM's head is always normed). A key
    missing from an older config is at its default, which names nothing."""
    loss = str(lookup(config, "LOSS.name") or "?")
    normed = lookup(config, "MODEL.classifier") == "normed" and loss != "LDAM"
    mixing = ("remix" if lookup(config, "TRAIN.remix") else "mixup") if lookup(config, "TRAIN.mixup") else None
    parts = [loss, REWEIGHT_NAMES.get(lookup(config, "LOSS.reweight")), mixing,
             SAMPLER_NAMES.get(lookup(config, "DATASET.sampler")), "normed head" if normed else None]
    return " + ".join(part for part in parts if part)


def stage2_method(config: dict) -> str:
    """A stage-2 run's method: its name in the literature, else what it did."""
    found = tuple(str(lookup(config, key)) for key in ("TRAIN.stage2_classifier", "DATASET.sampler", "LOSS.name"))
    return STAGE2_METHODS.get(found, "{} ({} sampling, {})".format(*found))


def is_stage2(settings: Settings) -> bool:
    return dict(settings).get("TRAIN.stage2_from", "null") != "null"


# configs.yaml: the defaults of the keys that code added after a run was saved
DEFAULTS = Path(__file__).resolve().parents[1] / "configs.yaml"


def completed(config: dict) -> dict:
    """`config` with every key that the code added after it was saved at its default (config.with_defaults), which
    is what the older code did: a run saved before DATASET.sampler existed pools with a newer one at its default,
    instead of differing from it in a key it lacks."""
    return OmegaConf.to_container(with_defaults(config, DEFAULTS)) if config else config


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_json(path: Path):
    """The parsed file, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> dict | None:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def read_checkpoint(path: Path) -> dict | None:
    """The last-epoch checkpoint's epoch and config, or None, read as every checkpoint is (weights_only: no file
    runs code as it loads)."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except ConfigError:  # a truncated file is part of what a crash leaves behind
        return None
    return state if isinstance(state, dict) else None


def run_epochs(config: dict, written: dict) -> int | None:
    """How many epochs a run trains: as main.py wrote it in `written` (its results, or its last checkpoint), else
    TRAIN.epochs where TRAIN.iterations is unset. A run by TRAIN.iterations lasts the epochs that cover them, which
    depend on the data set's size: a checkpoint from before checkpoints held them leaves the number unknown."""
    if isinstance(written.get("epochs"), int):
        return written["epochs"]
    if lookup(config, "TRAIN.iterations") is None:
        return lookup(config, "TRAIN.epochs")
    return None


def run_folders(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding a run's config, checkpoint or results."""
    found = []
    for folder, _, files in os.walk(root):
        if SHARED_CONFIG in files or output_seeds(Path(folder)):
            found.append(Path(folder))
    return sorted(found)


def folder_runs(folder: Path) -> list[Run]:
    """One Run per seed that left a file in `folder`; a config with no other seed file is a run that died early.
    Each seed's config is its own; a config shared by all seeds (SHARED_CONFIG) is from older runs."""
    seeds = output_seeds(folder)
    folder_config = read_yaml(folder / SHARED_CONFIG)
    if not seeds:  # only an older run's shared config: main.py died before the first seed file
        seeds = [lookup(folder_config or {}, "DEFAULT.seed") or 0]
    return [seed_run(folder, seed, read_yaml(output_paths(folder, seed)["config"]) or folder_config)
            for seed in seeds]


def seed_run(folder: Path, seed: int, folder_config: dict | None) -> Run:
    paths = output_paths(folder, seed)
    results = read_json(paths["results"])
    if isinstance(results, dict) and isinstance(results.get("test"), dict):
        # evaluate.py writes the same file names, with the checkpoint it evaluated instead of a selection; a post-hoc
        # correction of a checkpoint is a row of its own
        status = "re-evaluation" if "checkpoint" in results and "post_hoc" not in results else "complete"
        config = results.get("config") if isinstance(results.get("config"), dict) else folder_config or {}
        damage = damaged(paths, results)
        if damage:  # "finished" means its files are whole: not in the tables, and the way to repair it said
            return Run(folder, seed, config, "incomplete", note=damage, damaged=True,
                       last_epoch=results.get("epochs") if isinstance(results.get("epochs"), int) else None,
                       epochs=run_epochs(config, {}))
        run = Run(folder, seed, config, status, results, epochs=run_epochs(config, results))
        if "checkpoint" in results and (why := stale(folder, results)):
            run.status, run.note = "stale", why
        return run
    state = read_checkpoint(paths["last"]) or {}
    config = state.get("config") or folder_config or {}
    run = Run(folder, seed, config, "incomplete", last_epoch=state.get("epoch", 0), epochs=run_epochs(config, state))
    if paths["results"].exists():
        run.note = f"{paths['results'].name} is unreadable"
    elif not state and paths["last"].exists():
        run.note = f"{paths['last'].name} is unreadable"
    elif (who := holder(folder, seed)) is not None:  # its lock is held (in its first epoch too): run_folder.RunLock
        run.note = f"training now ({who})" if run.last_epoch < run.epochs else f"in its final test now ({who})"
    elif not state:
        run.note = "no checkpoint: stopped during its first epoch"
    elif run.last_epoch == run.epochs:
        run.note = "trained every epoch, but stopped before writing its results (in the final test?)"
    else:
        run.note = "stopped mid-training: rerun the same command to resume it"
    return run


def damaged(paths: dict[str, Path], results: dict) -> str | None:
    """What keeps a finished run (or evaluation) out of the tables, naming the file, the key and the command that
    writes it again: a results file not as main.py and evaluate.py write it, a damaged per-class file, or (main.py's)
    a damaged checkpoint. None where its files are whole."""
    evaluated = "checkpoint" in results
    again = ("rerun the evaluate.py command that wrote it" if evaluated else
             "rerun the run's main.py command, which writes it again from its checkpoints (or names what it cannot)")
    problem = results_problem(results)
    if problem:
        writer = "evaluate.py" if evaluated else "main.py"
        return f"{paths['results'].name} is not as {writer} writes it ({problem}): {again}"
    checks = [(paths["per_class"], per_class_problem(paths["per_class"], len(results.get("num_per_cls") or []) or None))]
    if not evaluated:
        checks += [(paths[kind], whole_checkpoint(paths[kind])) for kind in ("best", "last")]
    for path, problem in checks:
        if problem not in (None, "missing"):  # a file removed on purpose (to save space) leaves the scores whole
            return f"{path.name} is unreadable ({problem}): {again}"
    return None


_hashes = {}  # (path, size, mtime) -> sha256: each checkpoint is read once a report, however many results name it


def stale(folder: Path, results: dict) -> str | None:
    """Why evaluate.py's results in `folder` no longer describe the checkpoint whose sha256 they recorded, or None:
    it is gone, or another file now stands there (a run trained again over it with DEFAULT.overwrite true). It is
    looked for where it was, then by its name in the run folders above the results (folders copied from another
    machine). Results written before they recorded the sha256 cannot tell, and are kept."""
    recorded = results.get("checkpoint_sha256")
    if recorded is None:
        return None
    name = Path(str(results["checkpoint"])).name
    found = next((path for path in (Path(str(results["checkpoint"])), folder.parent / name,
                                    folder.parent.parent / name) if path.is_file()), None)
    if found is None:
        return f"its checkpoint {name} is gone"
    about = found.stat()
    key = (str(found.resolve()), about.st_size, about.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = sha256(found)
    return None if _hashes[key] == recorded else f"{found.name} is another file now than the one it scored"


def find_runs(roots: list[Path]) -> list[Run]:
    """The runs under every folder of `roots`, each run folder once (also where one root holds another)."""
    folders = sorted({folder.resolve() for root in roots for folder in run_folders(root)})
    return [run for folder in folders for run in folder_runs(folder)]


def common_root(roots: list[Path]) -> Path:
    """The folder that the report names run folders relative to: the one root, or the roots' common parent."""
    return Path(os.path.commonpath([root.resolve() for root in roots]))
