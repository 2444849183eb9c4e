"""Evaluate saved weights on the test set without training:
`python evaluate.py RUN_FOLDER_OR_CHECKPOINT [--last] [--out DIR] [--logit-adjust TAUS] [--tau-norm TAUS]
[--temperature] [KEY VALUE ...]`.

A run folder evaluates each seed's best checkpoint (`--last`: its final-epoch one); a `.pt` file evaluates that
checkpoint. The config saved inside each checkpoint rebuilds the data and the model; overrides adjust what does
not change the weights' meaning, such as `DATASET.datadir` when the data moved. Results go to `--out` under the
training run's file names, so report.py and your scripts read them alike; the training outputs are never touched,
nor another checkpoint's evaluation. The default: RUN_FOLDER/evaluation/ (evaluation-last/ with --last); for a
checkpoint file, a folder named after it, results/evaluation/NAME/ (RUN_FOLDER/evaluation/NAME/ for a file in a run
folder), NAME being the file's name without .pt.

On a CPU the scores are computed in fp32 (a released file's test set takes seconds), so that every CPU gives the same
digits: bf16 rounds differently from one CPU to the next. `TRAIN.mixed_precision fp16` (or bf16) asks for the
training run's precision instead; on a GPU that is the default.

--logit-adjust (the classifier's own logits minus tau x log of the training prior) and --tau-norm (each class's weight
row divided by its norm to the power tau, the bias dropped, as Kang et al.'s method has it; a normed head's features and
rows normalised as it normalises them, so there only LWS's scales change) correct the classifier after training; each
writes its own results into a folder of --out named for it. Given several taus (`0,0.5,1`), where the run held out a
validation split the tau with the best validation score (TRAIN.ckp_metric) is chosen and written down, and only its test
scores are reported; without one (iNat 2018's val list is its test list), every tau gets its own folder
(logit_adjust_tau0.5/). Tau is never chosen on the test set.

Beside bcr, every evaluation reports the test ECE and NLL, and top-1 accuracy on the 11 shifted test sets of SADE
(forward50 ... uniform ... backward50, shifted.py), as the model predicts and with each set's prior known.
--temperature fits a temperature on the validation split (never the test set), reports the test ECE and NLL before
and after it, and the prior-corrected accuracies of the scaled logits beside the plain ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from torch import nn

from calibration import reliability_bins, temperature_line, temperature_scaling, top_confidence
from checkpoint import load_checkpoint, output_glob, output_paths, output_seeds, save_json, sha256
from config import apply_overrides, check, data_seed, overridden_keys, with_defaults
from datasets import build_splits, eval_loader, image_side, normalization
from errors import ConfigError, DatasetNotFoundError
from metrics import per_class_report, percent, summarize
from models import build_model, classifier_name
from posthoc import POST_HOC, adjusted_logits, parse_taus
from run_folder import check_writable
from runtime import cpu_only, mixed_precision
from shifted import model_log_prior, shifted_report, shifted_table
from stage2 import Stage2Model, load_stage1
from storage import fault_line
from train import Predictions, is_better, predict


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


def checkpoint_and_config(path: Path, overrides: list[str]) -> tuple[dict, object]:
    """The checkpoint at `path` and its saved config, completed with today's defaults and `overrides`."""
    state = load_checkpoint(path)  # tensors and plain containers only: no file runs code as it loads
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(f"{path} is not a checkpoint written by main.py (it lacks 'model' and 'config')")
    cfg = apply_overrides(with_defaults(state["config"], Path(__file__).resolve().parent / "configs.yaml"), overrides)
    check(cfg)
    return state, cfg


def evaluate_checkpoint(path: Path, out: Path, overrides: list[str], post_hoc: dict[str, list[float]],
                        temperature: bool = False) -> None:
    """The checkpoint's test scores into `out`, and each post-hoc method's (name -> taus) into a folder of its own;
    `temperature`: temperature scaling fitted on the validation split too."""
    # the file's sha256, taken before it is read: report.py leaves out results whose checkpoint was since replaced
    digest = sha256(path)
    state, cfg = checkpoint_and_config(path, overrides)
    seed = cfg.DEFAULT.seed
    if cpu_only() and "TRAIN.mixed_precision" not in overridden_keys(overrides):
        precision, why = "no", " (fp32, the default on a CPU: TRAIN.mixed_precision fp16 for the run's own)"
    else:
        precision, why = mixed_precision(cfg.TRAIN.mixed_precision)
    accelerator = Accelerator(cpu=cpu_only(), mixed_precision=precision)
    saved = state.get("data")  # what the weights were trained on; written before checkpoints held it: rebuilt
    # Scoring the test set needs the test images alone where the checkpoint holds its class counts and normalisation
    # (a released file); a post-hoc correction or a temperature also takes the validation split, which comes from the
    # training images
    names = ("test",) if saved and not (post_hoc or temperature) else None
    with accelerator.main_process_first():
        splits = build_splits(cfg.DATASET, data_seed(cfg), names)
    if temperature and "val" not in splits:
        raise ConfigError(f"--temperature fits on the validation split, and {path.name}'s run held none out "
                          "(DATASET.val_per_class 0): it is never fitted on the test set; train with "
                          "DATASET.val_per_class > 0 to calibrate")
    num_per_cls = saved["num_per_cls"] if saved else list(splits["train"].num_per_cls.values())
    mean, std = (saved["mean"], saved["std"]) if saved else normalization(cfg.DATASET, splits["train"])
    loaders = {name: eval_loader(cfg.DATASET, splits[name], mean, std, accelerator)
               for name in ("val", "test") if name in splits}
    side = saved["img_size"] if saved else image_side(splits["train"])
    model, _ = build_model(cfg.MODEL.name, len(num_per_cls), False, side, classifier=cfg.MODEL.classifier)
    stage1 = state.get("stage1")  # where a stage-2 run started, for report.py's rows
    if cfg.TRAIN.stage2_from is not None:  # a stage-2 checkpoint holds the frozen parts and its own classifier
        if stage1 is None:  # written before checkpoints held it: the stage-1 file, where it was
            stage1 = load_stage1(cfg, classifier_name(model), len(num_per_cls))[1]._asdict()
        model = Stage2Model(model, cfg.TRAIN.stage2_classifier)
    model.load_state_dict(state["model"])
    model = accelerator.prepare(model.to(memory_format=torch.channels_last))
    logits, targets = predict(model, loaders["test"], accelerator)
    scores = summarize(logits, targets, num_per_cls)
    calibration = {"reliability": reliability_bins(*top_confidence(logits, targets))}
    if temperature:
        calibration |= temperature_scaling(*predict(model, loaders["val"], accelerator), logits, targets)
    shifted = shifted_report(logits, targets, splits["test"].targets, num_per_cls, *model_log_prior(cfg, num_per_cls),
                             accelerator.num_processes, calibration.get("temperature"))
    record = {"checkpoint": str(path.resolve()), "checkpoint_sha256": digest, "epoch": state.get("epoch"),
              "num_per_cls": num_per_cls,
              "config": OmegaConf.to_container(cfg), "stage1": stage1}
    if accelerator.is_main_process:
        write_results(out, seed, {**record, "test": scores, "shifted": shifted, "calibration": calibration},
                      Predictions(logits, targets))
    accelerator.print(f"{path.name} (epoch {state.get('epoch')}, {accelerator.num_processes} process(es), "
                      f"precision {precision}{why}): test bcr {percent(scores['bcr'])} acc {percent(scores['acc'])} "
                      f"ECE {percent(scores['ece'])} NLL {scores['nll']:.4f} | results in "
                      f"{output_paths(out, seed)['results']}")
    if temperature:
        accelerator.print(temperature_line(calibration))
    accelerator.print(shifted_table(shifted))
    if not post_hoc:
        return
    features = {name: classifier_inputs(model, loader, accelerator) for name, loader in loaders.items()}
    head = accelerator.unwrap_model(model).get_classifier()
    record["selected_by"] = checkpoint_selection(path, seed)
    metric = cfg.TRAIN.ckp_metric
    for method, taus in post_hoc.items():
        def scored(split: str, tau: float) -> tuple[dict, Predictions]:
            with torch.no_grad(), accelerator.autocast():  # the classifier at the model's own precision: tau 0 is plain
                logits = adjusted_logits(method, features[split].logits, head, num_per_cls, tau)
            found = Predictions(logits.float(), features[split].targets)
            return summarize(*found, num_per_cls), found
        if "val" in features:  # choose tau on validation; only the chosen one meets the test set
            on_val = {tau: scored("val", tau)[0][metric] for tau in taus}
            accelerator.print(f"  {POST_HOC[method]}, val {metric} by tau: " +
                              ", ".join(f"{tau:g} {percent(score)}" for tau, score in on_val.items()))
            best = None
            for tau in taus:
                best = tau if best is None or is_better(metric, on_val[tau], on_val[best]) else best
            chosen = [(best, out / method, {"chosen_on": f"val {metric}", "val": {str(t): v for t, v in on_val.items()}})]
        else:
            chosen = [(tau, out / f"{method}_tau{tau:g}", {"chosen_on": None}) for tau in taus]
        for tau, folder, how in chosen:
            scores, found = scored("test", tau)
            if accelerator.is_main_process:
                write_results(folder, seed, {**record, "post_hoc": {"method": method, "tau": tau, **how},
                                             "test": scores}, found)
            accelerator.print(f"  {POST_HOC[method]} tau {tau:g}" + (f" (chosen on {how['chosen_on']})" if
                              how["chosen_on"] else "") + f": test bcr {percent(scores['bcr'])} | results in {folder}")


def default_out(path: Path, last: bool) -> Path:
    """Where the evaluation of `path` (a run folder, or a checkpoint file) goes without --out: the run folder's
    evaluation/ (evaluation-last/), or a folder named after the file, in its run folder or else in results/ (outside
    the checkout's tracked folders, such as weights/)."""
    if path.is_dir():
        return path / ("evaluation-last" if last else "evaluation")
    in_run = path.parent.is_dir() and bool(output_seeds(path.parent, "config"))  # main.py wrote the folder
    return (path.parent if in_run else Path("results")) / "evaluation" / path.stem


def check_out(out: Path, post_hoc: dict[str, list[float]], found: list[Path]) -> None:
    """Refuse, before any evaluation, an --out that is no folder, or a folder (or the post-hoc methods' folders in it)
    that holds a training run's files, or the evaluation of a checkpoint other than those `found`: evaluate.py writes
    results under the training run's file names."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is not a folder: pick a folder for the results (default: RUN_FOLDER/evaluation)")
    check_writable(out, "--out")
    folders = [out, *(out / method for method in post_hoc),
               *(out / f"{method}_tau{tau:g}" for method, taus in post_hoc.items() for tau in taus)]
    for folder in (folder for folder in folders if folder.is_dir()):
        training = [path.name for seed in output_seeds(folder) for kind, path in output_paths(folder, seed).items()
                    if path.exists() and (kind not in ("results", "per_class") or _trained(path))]
        if training:
            raise ConfigError(f"--out {out}: {folder} holds a training run's files ({', '.join(training)}), which "
                              "evaluate.py would write over: pick another folder (default: RUN_FOLDER/evaluation)")
        evaluated = {str(path.resolve()) for path in found}
        for seed in output_seeds(folder, "results"):
            other = _evaluated(output_paths(folder, seed)["results"])
            if other is not None and other not in evaluated:
                raise ConfigError(f"--out {out}: {folder} holds the evaluation of another checkpoint ({other}), which "
                                  "this one would write over: pick another folder with --out")


def _trained(path: Path) -> bool:
    """Whether a results file (or its per-class file) is main.py's rather than evaluate.py's, which names the
    checkpoint it evaluated."""
    results = path.with_name(path.name.replace("-per-class", "").replace("-per_class", ""))  # new and old names
    try:
        with open(results) as f:
            return "checkpoint" not in json.load(f)
    except FileNotFoundError:  # a per-class file alone: evaluate.py's, stopped before its results (main.py's has more)
        return False
    except (OSError, ValueError, TypeError):
        return True  # unreadable: not evaluate.py's to replace


def _evaluated(results: Path) -> str | None:
    """The checkpoint that an evaluate.py results file names, else None."""
    try:
        with open(results) as f:
            return json.load(f).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return None


def write_results(folder: Path, seed: int, results: dict, found: Predictions) -> None:
    paths = output_paths(folder, seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_json(per_class_report(*found, results["num_per_cls"]), paths["per_class"])
    save_json(results, paths["results"])  # last: a results file says its folder is complete


def classifier_inputs(model, loader, accelerator) -> Predictions:
    """What the classifier of `model` receives for every image of `loader`'s split (the features), with the targets:
    the classifier is set aside for the pass, so post-hoc methods may apply any classifier to them."""
    unwrapped = accelerator.unwrap_model(model)
    name, head = classifier_name(unwrapped), unwrapped.get_classifier()
    unwrapped.set_submodule(name, nn.Identity())
    try:
        return predict(model, loader, accelerator)
    finally:
        unwrapped.set_submodule(name, head)


def checkpoint_selection(path: Path, seed: int) -> str | None:
    """How the run chose the checkpoint at `path`, as its results say ("val bcr"); None for a file main.py did
    not name."""
    paths = output_paths(path.parent, seed)
    if path.name == paths["last"].name:
        return "last epoch"
    if path.name == paths["best"].name and paths["best_results"].is_file():
        with open(paths["best_results"]) as f:
            return json.load(f).get("selected_by")
    return None


def taus(text: str) -> list[float]:
    try:
        return parse_taus(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a run folder written by main.py, or one checkpoint (.pt)")
    parser.add_argument("--last", action="store_true", help="in a run folder, the final-epoch checkpoints")
    parser.add_argument("--out", type=Path, help="folder for the results (default: RUN_FOLDER/evaluation, or for a "
                        "checkpoint file results/evaluation/NAME, NAME its file name without .pt)")
    parser.add_argument("--logit-adjust", type=taus, nargs="?", const=[1.0], metavar="TAU[,TAU...]",
                        help="also report logits minus tau x log(training prior) (default tau 1)")
    parser.add_argument("--tau-norm", type=taus, nargs="?", const=[1.0], metavar="TAU[,TAU...]",
                        help="also report the classifier's weight rows divided by their norm ** tau, without the "
                        "bias (default tau 1)")
    parser.add_argument("--temperature", action="store_true",
                        help="also fit temperature scaling on the validation split and report it")
    parser.add_argument("overrides", nargs="*", help="dotted KEY VALUE pairs, e.g. DATASET.datadir /data")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    post_hoc = {method: getattr(args, method) for method in POST_HOC if getattr(args, method) is not None}
    try:
        found = checkpoints(args.path, args.last)
        out = args.out or default_out(args.path, args.last)
        if out.resolve() == found[0].parent.resolve():
            raise ConfigError(f"--out {out} is the run folder itself: pick another, so training outputs stay intact")
        check_out(out, post_hoc, found)
        for path in found:
            evaluate_checkpoint(path, out, args.overrides, post_hoc, args.temperature)
    except (ConfigError, DatasetNotFoundError) as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # a full, failing or read-only disk, named in one line (storage.py); others are bugs
        if (line := fault_line(error)) is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    main()
