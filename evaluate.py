"""Evaluate saved weights on the test set without training:
`python evaluate.py RUN_FOLDER_OR_CHECKPOINT [--last] [--out DIR] [KEY VALUE ...]`.

A run folder evaluates each seed's best checkpoint (`--last`: its final-epoch one); a `.pt` file evaluates that
checkpoint. The config saved inside each checkpoint rebuilds the data and the model; overrides adjust what does
not change the weights' meaning, such as `DATASET.datadir` when the data moved. Results go to `--out`
(default: RUN_FOLDER/evaluation/) under the training run's file names, so report.py and your scripts read them
alike; the training outputs are never touched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from checkpoint import output_glob, output_paths, output_seeds, save_json
from config import apply_overrides, check, data_seed
from datasets import build_splits, eval_loader, normalization
from errors import ConfigError, DatasetNotFoundError
from metrics import per_class_report, summarize
from models import build_model
from runtime import cpu_only, mixed_precision
from train import predict


def checkpoints(path: Path, last: bool) -> list[Path]:
    """The checkpoint files that `path` names: itself, or every seed's best (or last) one in a run folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path} is neither a run folder nor a checkpoint file")
    kind = "last" if last else "best"
    found = [output_paths(path, seed)[kind] for seed in output_seeds(path, kind)]
    if not found:
        raise ConfigError(f"no {output_glob(kind)} in {path}: pass a run folder that main.py wrote, or a checkpoint "
                          "file")
    return found


def load_checkpoint(path: Path, overrides: list[str]) -> tuple[dict, object]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: say which, not a traceback
        raise ConfigError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(f"{path} is not a checkpoint written by main.py (it lacks 'model' and 'config')")
    cfg = apply_overrides(OmegaConf.create(state["config"]), overrides)
    check(cfg)
    return state, cfg


def evaluate_checkpoint(path: Path, out: Path, overrides: list[str]) -> None:
    state, cfg = load_checkpoint(path, overrides)
    seed = cfg.DEFAULT.seed
    precision, why = mixed_precision(cfg.TRAIN.mixed_precision)
    accelerator = Accelerator(cpu=cpu_only(), mixed_precision=precision)
    with accelerator.main_process_first():
        splits = build_splits(cfg.DATASET, data_seed(cfg))
    num_per_cls = list(splits["train"].num_per_cls.values())
    mean, std = normalization(cfg.DATASET, splits["train"])
    test_loader = eval_loader(cfg.DATASET, splits["test"], mean, std, accelerator)
    model, _ = build_model(cfg.MODEL.name, len(num_per_cls), False, splits["train"].data.shape[1])
    model.load_state_dict(state["model"])
    model = accelerator.prepare(model.to(memory_format=torch.channels_last))
    logits, targets = predict(model, test_loader, accelerator)
    scores = summarize(logits, targets, num_per_cls)
    if accelerator.is_main_process:
        paths = output_paths(out, seed)
        out.mkdir(parents=True, exist_ok=True)
        save_json({"checkpoint": str(path.resolve()), "epoch": state.get("epoch"), "test": scores,
                   "num_per_cls": num_per_cls, "config": OmegaConf.to_container(cfg)}, paths["results"])
        save_json(per_class_report(logits, targets, num_per_cls), paths["per_class"])
    accelerator.print(f"{path.name} (epoch {state.get('epoch')}, {accelerator.num_processes} process(es), "
                      f"precision {precision}{why}): test bcr {scores['bcr']:.4f} acc {scores['acc']:.4f} "
                      f"| results in {output_paths(out, seed)['results']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a run folder written by main.py, or one checkpoint (.pt)")
    parser.add_argument("--last", action="store_true", help="in a run folder, the final-epoch checkpoints")
    parser.add_argument("--out", type=Path, help="folder for the results (default: RUN_FOLDER/evaluation)")
    parser.add_argument("overrides", nargs="*", help="dotted KEY VALUE pairs, e.g. DATASET.datadir /data")
    args = parser.parse_args(argv)
    try:
        found = checkpoints(args.path, args.last)
        out = args.out or found[0].parent / "evaluation"
        if out.resolve() == found[0].parent.resolve():
            raise ConfigError(f"--out {out} is the run folder itself: pick another, so training outputs stay intact")
        for path in found:
            evaluate_checkpoint(path, out, args.overrides)
    except (ConfigError, DatasetNotFoundError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
