"""The run folder: atomic writes, checkpoints with everything needed to resume, and the resume decision."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from errors import ConfigError
from storage import atomic_write  # the one way files are written: checkpoint.atomic_write

# Keys that may change between a run and its resumption without changing what is trained
# (where the folder lies is one of them: a run folder moved or copied elsewhere resumes there)
RESUMABLE_CHANGES = ("DEFAULT.resume", "DEFAULT.overwrite", "DEFAULT.savedir", "DEFAULT.exp_name", "DATASET.datadir", "DATASET.download", "DATASET.num_workers",
                     "DATASET.test_batch_size", "TRAIN.log_interval", "TRAIN.compile", "TRAIN.wandb")


def run_dir(cfg) -> Path:
    return Path(cfg.DEFAULT.savedir) / cfg.DATASET.name / cfg.MODEL.name / cfg.DEFAULT.exp_name


# The files one seed of a run writes into its run folder. Seeds share a folder side by side, each with its own config
# (TooTouch/BalancedSoftmax's one configs.yaml went to whichever seed started last).
OUTPUT_NAMES = {
    "config": "configs-seed{seed}.yaml",
    "last": "model-seed{seed}.pt",
    "best": "model-seed{seed}-best.pt",
    "best_results": "results-seed{seed}-best.json",
    "results": "results-seed{seed}.json",
    "per_class": "results-seed{seed}-per-class.json",
    "class_counts": "class-counts-seed{seed}.json",
}
# The names of earlier versions, which mixed hyphens and underscores: a seed whose files a folder holds under them is
# read, evaluated and resumed under them, so that one seed's files never mix the two
OLD_OUTPUT_NAMES = {**OUTPUT_NAMES, "last": "model_seed{seed}.pt", "best": "model_seed{seed}_best.pt",
                    "best_results": "results_seed{seed}_best.json", "per_class": "results-seed{seed}-per_class.json",
                    "class_counts": "class_counts-seed{seed}.json"}
# The one config that runs from before per-seed configs left for all the seeds of their folder; report.py reads it
SHARED_CONFIG = "configs.yaml"


def output_paths(folder: Path, seed: int) -> dict[str, Path]:
    """The files that seed `seed` of a run writes into `folder`, by kind (the keys of OUTPUT_NAMES): under
    OLD_OUTPUT_NAMES where the folder holds that seed's files under them."""
    old = any((folder / name.format(seed=seed)).exists() for kind, name in OLD_OUTPUT_NAMES.items()
              if name != OUTPUT_NAMES[kind])
    return {kind: folder / name.format(seed=seed) for kind, name in (OLD_OUTPUT_NAMES if old else OUTPUT_NAMES).items()}


def output_glob(kind: str) -> str:
    """Every seed's file of one kind as a shell pattern, for messages: `model_seed*.pt`."""
    return OUTPUT_NAMES[kind].format(seed="*")


def output_seeds(folder: Path, *kinds: str) -> list[int]:
    """The seeds, in numeric order, that have a file of one of `kinds` (default: any kind) in `folder`."""
    templates = [names[kind] for names in (OUTPUT_NAMES, OLD_OUTPUT_NAMES) for kind in kinds or OUTPUT_NAMES]
    return sorted({seed for name in os.listdir(folder) for template in templates
                   if (seed := _seed_in(name, template)) is not None})


def _seed_in(name: str, template: str) -> int | None:
    """The seed of a file name that `template` gives, else None. The name must come back from the seed as it is,
    so what output_paths never writes (`model-seed07.pt`) is no seed's file."""
    before, _, after = template.partition("{seed}")
    match = re.fullmatch(re.escape(before) + "([0-9]+)" + re.escape(after), name)
    if match is None or template.format(seed=int(match[1])) != name:
        return None
    return int(match[1])


def save_json(data, path: Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
    atomic_write(path, write)


def save_torch(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_config(cfg, path: Path) -> None:
    """The resolved config as YAML (configs-seed{s}.yaml): a crash while writing it never leaves half of one, which
    the next run would refuse as a run with other settings."""
    atomic_write(path, lambda tmp: OmegaConf.save(cfg, tmp))


# What a checkpoint says about its weights, as plain data: the resolved config, the data they were trained on (class
# counts, class names, normalisation, image side) and, for a stage-2 run, the stage-1 checkpoint it started from
ABOUT = ("config", "data", "stage1")


def save_best(paths: dict[str, Path], model_state: dict, best_results: dict, about: dict) -> None:
    """The best checkpoint and its scores (`best_results`, with its "epoch"); `about` holds ABOUT's entries. main.py
    writes them after the last checkpoint of the same epoch, which holds all they hold: see restore_best."""
    save_torch({"model": model_state, "epoch": best_results["epoch"], **about}, paths["best"])
    save_json(best_results, paths["best_results"])


def restore_best(paths: dict[str, Path], state: dict, write: bool) -> None:
    """Make the best checkpoint and its scores agree with `state`, the last checkpoint, before a run resumes. The last
    checkpoint is written first, so a crash before the best one leaves a last checkpoint that names its own epoch the
    best, and an older best checkpoint: they are written again from it (by the process that may `write`). So is a
    damaged one, which is kept beside under another name. A best checkpoint of another epoch than the one `state`
    names, which no crash leaves, is refused, and so is a damaged one that `state` cannot replace."""
    best_epoch = state["best_epoch"]
    found = {kind: _saved_epoch(paths[kind]) for kind in ("best", "best_results")}
    if all(epoch == best_epoch for epoch in found.values()):
        return
    if best_epoch != state["epoch"] or state.get("best_results") is None:
        damaged = [kind for kind, epoch in found.items() if isinstance(epoch, Unreadable)]
        if damaged:
            raise ConfigError(
                f"{paths[damaged[0]].name} cannot be read ({found[damaged[0]]}), and {paths['last'].name} (after "
                f"epoch {state['epoch']}) does not hold what epoch {best_epoch}, the one it selected, wrote there: put "
                "back a good copy, or set DEFAULT.overwrite true to train this seed again, or pick a new "
                "DEFAULT.exp_name")
        raise ConfigError(
            f"{paths['best'].name} is not of epoch {best_epoch}, which {paths['last'].name} (after epoch "
            f"{state['epoch']}) selected: put back the pair of files written together, or pick a new DEFAULT.exp_name")
    if write:
        for kind, epoch in found.items():
            if isinstance(epoch, Unreadable):
                set_aside(paths[kind], epoch, f"written again from {paths['last'].name}")
        save_best(paths, state["model"], state["best_results"], {key: state.get(key) for key in ABOUT})


class UnsafeCheckpointError(ConfigError):
    """A file whose loading could run code: refused unread, never taken for a damaged one to write again."""


class Unreadable(str):
    """Why a file of a run folder cannot be read (what _saved_epoch returns for a damaged file)."""


def _saved_epoch(path: Path) -> int | Unreadable | None:
    """The epoch a best checkpoint (.pt) or its scores (.json) hold, None where the file is missing, Unreadable where
    it is damaged."""
    if not path.exists():
        return None
    try:
        if path.suffix == ".json":
            with open(path) as f:
                return json.load(f).get("epoch")
        return load_checkpoint(path)["epoch"]
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # a truncated or hand-edited file
        return Unreadable(unreadable(path, error))


def unreadable(path: Path, error: Exception) -> str:
    """Why `path` could not be read, in a few words: a file of another kind, or a damaged (truncated) one."""
    if path.suffix not in (".json", ".yaml"):  # a checkpoint
        if not _looks_saved(path):
            return "not a checkpoint: torch.save writes no such file"
        return "damaged, e.g. truncated by a full disk or a copy cut short"
    return f"damaged: {' '.join(str(error).split())[:120]}"


def _looks_saved(path: Path) -> bool:
    """Whether a file begins as torch.save's do: a zip archive, or (older torch) a pickle."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def set_aside(path: Path, why: str, what: str) -> Path:
    """Rename a damaged file that main.py is about to write again, so that nothing the user may want is lost; says so
    in one line."""
    aside, number = path.with_name(f"{path.name}.damaged"), 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.damaged{number}")
    os.replace(path, aside)
    print(f"{path.name} cannot be read ({why}): kept as {aside.name}; {what}")
    return aside


# What checkpoints written before the random state was stored as tensors hold beyond tensors and plain containers:
# NumPy's legacy state tuple, with its uint32 key as an array. These and nothing else are let through for them.
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # NumPy 2 renamed np.core
OLDER_RNG_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType, _NUMPY_CORE.multiarray._reconstruct]


def load_checkpoint(path: Path) -> dict:
    """A checkpoint read with torch.load(weights_only=True): tensors and plain containers only, so that no file can
    run code while it loads (torch's own default since 2.6). Checkpoints written before the random state was
    stored as tensors are read too. A file that needs anything more, or is no checkpoint, is refused in one line."""
    try:
        with torch.serialization.safe_globals(OLDER_RNG_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _looks_saved(path):  # a JSON or any other file torch.save never writes: it runs nothing
            raise ConfigError(f"{path} cannot be read (not a checkpoint: torch.save writes no such file): pass a "
                              f"checkpoint main.py wrote ({output_glob('last')}), or the run folder that holds it") \
                from None
        try:
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "objects"
        except Exception:  # not even a readable archive
            found = "objects"
        raise UnsafeCheckpointError(f"checkpoint {path} holds more than tensors and plain containers ({found}): refused "
                          "unread, as loading it could run code; main.py's checkpoints never do, so use one it "
                          "wrote") from None
    except Exception as error:  # a truncated or foreign file: say which, not a traceback
        raise ConfigError(f"{path} cannot be read ({unreadable(path, error)}): pass a checkpoint main.py wrote "
                          f"({output_glob('last')}), or the run folder that holds it") from None


def sha256(path: Path) -> str:
    """The file's sha256 as hex, read in blocks: what stage 2, evaluate.py and a released file record of a checkpoint."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def restore_scaler(scaler, state: dict, device) -> str | None:
    """Load the last checkpoint's GradScaler state into `scaler`, the accelerator's (None without fp16 loss scaling).
    A run saved without one (fp16 on a CPU runs as bf16 or fp32) and resumed with one (on a GPU) starts a fresh
    scaler, and one saved with it and resumed without leaves it out: either way, returns the line that says so."""
    saved, where = state.get("scaler"), state.get("device", "a device it does not name")
    if saved is not None and scaler is not None:
        scaler.load_state_dict(saved)
    elif scaler is not None:
        return (f"the checkpoint, saved on {where}, holds no GradScaler state: fp16 loss scaling on {device} starts "
                "afresh")
    elif saved is not None:
        return (f"the checkpoint's GradScaler state, saved on {where}, is left out: no fp16 loss scaling runs on "
                f"{device}")
    return None


def rng_state() -> dict:
    """This process's random state in tensors and plain containers, so that checkpoints load with weights_only:
    NumPy's as its dict form, its key a tensor. On a GPU, the generator of this process's own device alone: a run
    resumed where fewer devices are visible finds its own."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"] = {"key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)), "pos": numpy["state"]["pos"]}
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(saved: list[dict] | dict, process: int) -> None:
    """Restore process `process`'s own random state from a checkpoint's list of one per process. A process beyond
    the list (the run had fewer processes) keeps its fresh seeded state, as do all but the main process with an
    older checkpoint, which held the main process's state alone (a dict). The CUDA state goes to this process's own
    device; older checkpoints held every visible device's, of which the process's own device's entry is taken."""
    states = saved if isinstance(saved, list) else [saved]
    if process >= len(states):
        return
    state = states[process]
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):  # older checkpoints: the legacy tuple, which set_state takes as it is
        numpy = {**numpy, "state": {"key": numpy["state"]["key"].numpy().astype(np.uint32),
                                    "pos": numpy["state"]["pos"]}}
    np.random.set_state(numpy)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        own, cuda = torch.cuda.current_device(), state["cuda"]
        if isinstance(cuda, (list, tuple)):  # older: one per device visible when it was saved, in device order
            cuda = cuda[own] if own < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, own)


def _changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path in RESUMABLE_CHANGES:
            continue
        a, b = saved.get(key), current.get(key)
        keys += _changed_keys(a, b, f"{path}.") if isinstance(a, dict) and isinstance(b, dict) else [path] * (a != b)
    return keys


def run_finished(paths: dict[str, Path], state: dict, write: bool = True) -> bool:
    """Whether the results file was written after the epoch the last checkpoint holds, and the files of the run are
    whole: it is written once, at the end, so a checkpoint of an earlier epoch (put back by hand, say) is a run to
    resume, whatever results exist. A damaged results or per-class file is set aside (by the process that may
    `write`): resuming writes it again from the checkpoints, as the final test does; so is a damaged best
    checkpoint or its scores (restore_best), where the last checkpoint holds them, and otherwise named in one line."""
    if not paths["results"].exists():
        return False
    final_test = f"the final test writes it again from {paths['last'].name} and {paths['best'].name}"
    try:
        with open(paths["results"]) as f:
            results = json.load(f)
        problem = results_problem(results)
    except (OSError, ValueError) as error:
        problem = unreadable(paths["results"], error)
    if problem:
        if write:
            set_aside(paths["results"], problem, final_test)
        return False
    if results.get("epochs") != state["epoch"]:
        return False
    if any(_saved_epoch(paths[kind]) != state["best_epoch"] for kind in ("best", "best_results")):
        return False  # restore_best writes them again, or names the one it cannot
    counts = results.get("num_per_cls") or (state.get("data") or {}).get("num_per_cls")
    problem = per_class_problem(paths["per_class"], len(counts) if counts else None)
    if problem and write and paths["per_class"].exists():
        set_aside(paths["per_class"], problem, final_test)
    return problem is None


# What metrics.summarize writes as one number each (and "<group>_acc"): report.py averages them over seeds
SCALAR_SCORES = ("loss", "acc", "bcr", "precision", "recall", "f1", "auroc")


def results_problem(results) -> str | None:
    """What in a results file (main.py's or evaluate.py's) is not as they write it, naming the key, else None."""
    if not isinstance(results, dict):
        return f"not a JSON object but a {type(results).__name__}"
    expected = {"test": dict, "test_last_epoch": dict, "num_per_cls": list, "config": dict, "history": list,
                "stage1": dict, "post_hoc": dict, "selected_by": str, "checkpoint": str, "best_epoch": int,
                "epochs": int, "epoch": int}
    for key, kind in expected.items():
        if results.get(key) is not None and not isinstance(results[key], kind):
            return f"{key} is a {type(results[key]).__name__}, not a {kind.__name__}"
    if not isinstance(results.get("test"), dict):
        return "it has no test scores (test)"
    numbers = [(f"{part}.{key}", value) for part in ("test", "test_last_epoch")
               for key, value in (results.get(part) or {}).items()
               if not isinstance(value, (list, dict)) or key in SCALAR_SCORES or key.endswith("_acc")]
    numbers += [(f"history[{i}].{key}", value) for i, row in enumerate(results.get("history") or [])
                for key, value in (row.items() if isinstance(row, dict) else [("", row)])]
    numbers += [(f"num_per_cls[{i}]", value) for i, value in enumerate(results.get("num_per_cls") or [])]
    numbers += [("post_hoc.tau", (results.get("post_hoc") or {}).get("tau"))]
    for key, value in numbers:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is {json.dumps(value)[:40]}, not a number"
    return None


def per_class_problem(path: Path, num_classes: int | None) -> str | None:
    """What is wrong with a per-class file (missing, unreadable, not as metrics.per_class_report writes it for
    `num_classes` classes, any number where None), else None."""
    try:
        with open(path) as f:
            report = json.load(f)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:
        return unreadable(path, error)
    if not isinstance(report, dict):
        return f"not a JSON object but a {type(report).__name__}"
    num_classes = num_classes or len(report.get("num_per_cls") or [])
    for key in ("num_per_cls", "acc"):  # what report.py reads, and what every version of the file holds
        values = report.get(key)
        if not isinstance(values, list) or len(values) != num_classes or not values:
            return f"{key} is not a list of {num_classes} values, one per class"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return f"{key} holds a value that is not a number"
    return None


def whole_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at `path` is not whole, read cheaply (the zip archive's directory, which a truncated file
    loses), else None: for report.py, which reads many runs; a full check loads it (load_checkpoint)."""
    if not path.exists():
        return "missing"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile):
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":  # older torch's pickle, which has no directory to read
                return None
        return "not a checkpoint: torch.save writes no such file" if not _looks_saved(path) else \
            "damaged, e.g. truncated by a full disk or a copy cut short"
    return None


def read_last(path: Path) -> dict:
    """The last checkpoint, or a one-line refusal naming it where it is damaged."""
    try:
        state = load_checkpoint(path)
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # a truncated file: no exact resume is possible
        state = Unreadable(unreadable(path, error))
    if not isinstance(state, dict) or "config" not in state or "epoch" not in state:
        why = state if isinstance(state, Unreadable) else "not a checkpoint main.py wrote"
        raise ConfigError(f"{path} cannot be read ({why}), and no run resumes exactly without it: put back a good "
                          "copy, or set DEFAULT.overwrite true to train this seed again (its files are replaced), or "
                          "pick a new DEFAULT.exp_name")
    return state


def read_saved_config(path: Path) -> dict:
    """A seed's saved config (configs-seed{s}.yaml), or a one-line refusal naming it where it is damaged."""
    config = _saved_config(path)
    if isinstance(config, Unreadable):
        raise ConfigError(f"{path} cannot be read ({config}): it tells which settings this seed ran with; repair it, or "
                          "set DEFAULT.overwrite true to train this seed again (its files are replaced), or pick a new "
                          "DEFAULT.exp_name")
    return config


def _saved_config(path: Path) -> dict | Unreadable:
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # a truncated or hand-edited file
        return Unreadable(unreadable(path, error))
    return config if isinstance(config, dict) else Unreadable("not a config")


def resume_state(cfg, paths: dict[str, Path], write: bool = True) -> dict | None:
    """The last checkpoint to continue from, None for a fresh run. A folder that holds any output of this seed is
    resumed only when what it holds agrees with `cfg`; otherwise it is refused in one line naming what is there and
    the way out. DEFAULT.overwrite true removes this seed's outputs first (by the process that may `write`)."""
    present = [path for path in paths.values() if path.exists()]
    if not present:
        return None
    where, seed, names = paths["last"].parent, cfg.DEFAULT.seed, ", ".join(path.name for path in present)
    if cfg.DEFAULT.overwrite:
        if write:
            for path in present:
                path.unlink()
            print(f"DEFAULT.overwrite true: removed seed {seed}'s {names} from {where}; training it again")
        return None
    if not cfg.DEFAULT.resume:
        raise ConfigError(f"{where} already holds a run of seed {seed} ({names}): set DEFAULT.resume true to "
                          "continue it, DEFAULT.overwrite true to train it again, or pick a new DEFAULT.exp_name")
    state = read_last(paths["last"]) if paths["last"].exists() else None
    current = OmegaConf.to_container(cfg)
    if state is not None:
        saved = state["config"]
        if write and paths["config"].exists() and isinstance(why := _saved_config(paths["config"]), Unreadable):
            # the last checkpoint holds the same config: the file is written again from it
            set_aside(paths["config"], why, f"written again from {paths['last'].name}, which holds the same config")
            save_config(OmegaConf.create(saved), paths["config"])
        if state.get("stage1") is not None and current["TRAIN"]["stage2_from"] is not None:
            # a stage-2 checkpoint holds every weight and where stage 1 was: the stage-1 files may have moved since
            current["TRAIN"]["stage2_from"] = saved["TRAIN"]["stage2_from"]
    elif paths["config"].exists():
        saved = read_saved_config(paths["config"])
    else:
        saved = None
    changed = _changed_keys(saved, current) if saved is not None else []
    if changed:
        raise ConfigError(f"{where} holds a run with other settings ({', '.join(changed)}): pick a new "
                          "DEFAULT.exp_name, or restore those values to resume it")
    if state is None:
        # a run stopped in its first epoch leaves its config and class counts alone: it starts again
        kept = [path.name for path in present if path not in (paths["config"], paths["class_counts"])]
        if kept or saved is None:
            raise ConfigError(f"{where} holds seed {seed}'s {', '.join(kept) or names} but no {paths['last'].name} "
                              "to resume from: pick a new DEFAULT.exp_name, or set DEFAULT.overwrite true to train it "
                              "again (those files are replaced)")
    return state
