"""The run folder: atomic writes, checkpoints with everything needed to resume, and the resume decision."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from errors import ConfigError

# Keys that may change between a run and its resumption without changing what is trained
RESUMABLE_CHANGES = ("DEFAULT.resume", "DATASET.datadir", "DATASET.download", "DATASET.num_workers",
                     "DATASET.test_batch_size", "TRAIN.log_interval", "TRAIN.compile", "TRAIN.wandb")


def run_dir(cfg) -> Path:
    return Path(cfg.DEFAULT.savedir) / cfg.DATASET.name / cfg.MODEL.name / cfg.DEFAULT.exp_name


def output_paths(folder: Path, seed: int) -> dict[str, Path]:
    """The files a run writes, named as in the seed repository; seeds share a folder side by side, each with its
    own config (the seed's one configs.yaml went to whichever seed started last)."""
    return {
        "config": folder / f"configs-seed{seed}.yaml",
        "last": folder / f"model_seed{seed}.pt",
        "best": folder / f"model_seed{seed}_best.pt",
        "best_results": folder / f"results_seed{seed}_best.json",
        "results": folder / f"results-seed{seed}.json",
        "per_class": folder / f"results-seed{seed}-per_class.json",
        "class_counts": folder / f"class_counts-seed{seed}.json",
    }


def atomic_write(path: Path, write) -> None:
    """Call `write(temporary_path)`, then move the result over `path`: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_json(data, path: Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
    atomic_write(path, write)


def save_torch(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(saved: list[dict] | dict, process: int) -> None:
    """Restore process `process`'s own random state from a checkpoint's list of one per process. A process beyond
    the list (the run had fewer processes) keeps its fresh seeded state, as do all but the main process with an
    older checkpoint, which held the main process's state alone (a dict)."""
    states = saved if isinstance(saved, list) else [saved]
    if process >= len(states):
        return
    state = states[process]
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path in RESUMABLE_CHANGES:
            continue
        a, b = saved.get(key), current.get(key)
        keys += _changed_keys(a, b, f"{path}.") if isinstance(a, dict) and isinstance(b, dict) else [path] * (a != b)
    return keys


def run_finished(paths: dict[str, Path], state: dict) -> bool:
    """Whether the results file was written after the epoch the last checkpoint holds: it is written once, at the
    end, so a checkpoint of an earlier epoch (put back by hand, say) is a run to resume, whatever results exist."""
    if not paths["results"].exists():
        return False
    with open(paths["results"]) as f:
        return json.load(f).get("epochs") == state["epoch"]


def resume_state(cfg, paths: dict[str, Path]) -> dict | None:
    """The last checkpoint to continue from, None for a fresh run; refuses to overwrite or mix runs."""
    if not paths["last"].exists():
        return None
    where = paths["last"].parent
    if not cfg.DEFAULT.resume:
        raise ConfigError(f"{where} already holds a run of seed {cfg.DEFAULT.seed}: set DEFAULT.resume true to "
                          "continue it, or pick a new DEFAULT.exp_name")
    state = torch.load(paths["last"], map_location="cpu", weights_only=False)
    changed = _changed_keys(state["config"], OmegaConf.to_container(cfg))
    if changed:
        raise ConfigError(f"{where} holds a run with other settings ({', '.join(changed)}): pick a new "
                          "DEFAULT.exp_name, or restore those values to resume it")
    return state
