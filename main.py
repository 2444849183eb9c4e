"""Train on long-tailed data: `python main.py --config configs.yaml [--config RECIPE] [KEY VALUE ...]`."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, TorchDynamoPlugin, gather_object, set_seed
from omegaconf import OmegaConf

from calibration import reliability_bins, top_confidence
from checkpoint import (load_checkpoint, output_paths, restore_best, restore_scaler, resume_state, rng_state, run_dir,
                        run_finished, save_best, save_config, save_json, save_torch, set_rng_state)
from config import check, data_seed, load_config
from datasets import build_loaders, build_splits, image_side, normalization
from errors import ConfigError, DatasetNotFoundError, NonFiniteLossError
from losses import build_loss
from meta_sampler import (LEARNS_ON_VAL, check_processes, checkpoint_selection, restore_sampler, sampler_state,
                          with_meta_sampler)
from metrics import per_class_report, percent, summarize
from mixup import build_mixup
from models import build_model
from optim import build_optimizer, build_scheduler, fuse_on, run_length
from run_folder import RunLock, default_exp_name
from runtime import cpu_only, mixed_precision
from shifted import model_log_prior, shifted_report, shifted_table
from stage2 import freeze_for_stage2, stage1_note
from storage import fault_line
from tracking import start_tracking
from train import Predictions, is_better, predict, train_one_epoch


class Training(NamedTuple):
    """What the phases of a run share once it is set up: the data, the model and what trains it."""
    accelerator: Accelerator
    precision: str
    paths: dict
    splits: dict
    num_per_cls: list
    loaders: dict
    select_on: str  # the split scored after every epoch
    selected_by: str  # how the reported checkpoint is chosen ("val bcr")
    stage1: object  # stage2.Stage1, or None
    model: torch.nn.Module  # prepared
    unwrapped: torch.nn.Module
    criterion: torch.nn.Module
    mixup: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_step: object  # the scheduler where it steps every optimizer step, else None
    train_loader: object
    steps_per_epoch: int
    epochs: int
    steps: int | None  # TRAIN.iterations' optimizer steps, else None


@dataclass
class Progress:
    """Where training stands: the epoch to start from, the best checkpoint so far and the per-epoch history."""
    start: int = 0
    best: float | None = None
    best_epoch: int = 0
    best_results: dict | None = None
    history: list = field(default_factory=list)


def run(cfg) -> None:
    accelerator, precision = start_accelerator(cfg)
    paths = output_paths(run_dir(cfg), cfg.DEFAULT.seed)
    state = resume_state(cfg, paths, accelerator.is_main_process)
    if state and run_finished(paths, state, accelerator.is_main_process):
        accelerator.print(f"{paths['results']} shows this run finished; nothing to do. To train it again, pick "
                          "a new DEFAULT.exp_name, or set DEFAULT.overwrite true to replace it.")
        return
    if state:
        restore_best(paths, state, accelerator.is_main_process)
    training = set_up(cfg, accelerator, precision, paths, state)
    progress = resume(training, state)
    about = write_run_files(cfg, training)
    tested = {}  # epoch -> its test predictions, kept (the best and the last) so the final test need not redo them
    for epoch in range(progress.start, training.epochs):
        began = time.perf_counter()
        scored = train_an_epoch(cfg, training, progress, epoch)
        if training.select_on == "test":
            kept = {e: predictions for e, predictions in tested.items() if e == progress.best_epoch}
            tested = kept | {epoch + 1: scored.predictions}
        save_checkpoints(training, progress, epoch, about)
        log_epoch(training, epoch, scored, began)
    final_test(cfg, training, progress, tested, about)


def start_accelerator(cfg) -> tuple[Accelerator, str]:
    """The Accelerator of the run and its precision, after refusing a batch that does not split over the processes;
    every process seeded."""
    seed = cfg.DEFAULT.seed
    precision, why = mixed_precision(cfg.TRAIN.mixed_precision)
    accelerator = Accelerator(
        cpu=cpu_only(), mixed_precision=precision, gradient_accumulation_steps=cfg.TRAIN.grad_accum_steps,
        log_with="wandb" if cfg.TRAIN.wandb.use else None,
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cfg.TRAIN.compile else "no",
                                        mode=cfg.TRAIN.compile_mode),
        # DATASET.batch_size is the batch of one optimizer step, split over the processes. The classic loader's
        # sampler shuffles with the training seed in every process, so that each takes its shard of one permutation
        # (without data_seed it would take the seed of its process, which set_seed below makes differ)
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=seed))
    passes = accelerator.num_processes * cfg.TRAIN.grad_accum_steps  # forward passes that share a step's batch
    if cfg.DATASET.batch_size % passes:
        raise ConfigError(f"DATASET.batch_size {cfg.DATASET.batch_size} must divide evenly over "
                          f"{accelerator.num_processes} process(es) x TRAIN.grad_accum_steps "
                          f"{cfg.TRAIN.grad_accum_steps}: make it a multiple of {passes}")
    check_processes(cfg, accelerator.num_processes)  # the meta sampler's step is the whole batch's
    how = ("not distributed" if accelerator.num_processes == 1 else
           f"distributed ({accelerator.distributed_type.value})")  # accelerate's label; its single-process one is NO
    accelerator.print(f"training on {accelerator.device}: {accelerator.num_processes} process(es), {how}; precision "
                      f"{'fp32' if precision == 'no' else precision}{why}")
    set_seed(seed, device_specific=True)  # every process draws its own dropout; DDP syncs the initial weights
    return accelerator, precision


def set_up(cfg, accelerator: Accelerator, precision: str, paths: dict, state: dict | None) -> Training:
    """Data, model, loss, optimizer and scheduler, prepared by accelerate; the meta sampler over the training loader
    where DATASET.sampler is meta."""
    with accelerator.main_process_first():  # the main process downloads, the others then read
        splits = build_splits(cfg.DATASET, data_seed(cfg))
    num_per_cls = list(splits["train"].num_per_cls.values())
    # TRAIN.epochs: progressive sampling's length
    loaders = build_loaders(cfg.DATASET, splits, cfg.DEFAULT.seed, accelerator, cfg.TRAIN.epochs)
    select_on = "val" if "val" in loaders else "test"
    selected_by = checkpoint_selection(cfg, select_on)  # "val bcr", or the last epoch where val is learnt on
    accelerator.print(f"{cfg.DATASET.name} in {splits['train'].root}: {len(splits['train'])} training images, classes "
                      f"from {max(num_per_cls)} to {min(num_per_cls)} images; checkpoint by {selected_by}")

    pretrained = cfg.MODEL.pretrained and cfg.TRAIN.stage2_from is None  # stage 2 loads stage 1's weights instead
    model, note = build_model(cfg.MODEL.name, len(num_per_cls), pretrained, image_side(splits["train"]),
                              cfg.MODEL.classifier_init, cfg.MODEL.pretrained_file, cfg.MODEL.classifier)
    accelerator.print(note or f"model: {cfg.MODEL.name}")
    model, stage1 = freeze_for_stage2(model, cfg, len(num_per_cls), state)  # stage 1: the model as it is, stage1 None
    if stage1:
        accelerator.print(f"stage 2 from {stage1.checkpoint} ({stage1.loss}, epoch {stage1.epoch}): all frozen but "
                          f"the classifier ({cfg.TRAIN.stage2_classifier}), {cfg.DATASET.sampler} sampling")
        if caveat := stage1_note(cfg, stage1):
            accelerator.print(caveat)
    model = model.to(memory_format=torch.channels_last)
    criterion = build_loss(cfg.LOSS.name, num_per_cls, cfg.LOSS).to(accelerator.device)
    mixup = build_mixup(cfg.TRAIN, num_per_cls)  # input mixup or Remix, or None
    optimizer = build_optimizer(cfg.OPTIMIZER, model, fuse_on(accelerator.device.type, accelerator.mixed_precision))
    # split_batches: a prepared loader has as many batches as this one
    steps_per_epoch = math.ceil(len(loaders["train"]) / cfg.TRAIN.grad_accum_steps)
    epochs, length, steps = run_length(cfg, steps_per_epoch)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, length)
    per_step = scheduler if cfg.SCHEDULER.interval == "step" else None  # else stepped once per epoch
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, loaders["train"])
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    # DATASET.sampler meta: each batch drawn by BALMS's meta sampler, which learns on it before the step below
    train_loader = with_meta_sampler(cfg, loaders, train_loader, unwrapped, optimizer, criterion, accelerator,
                                     num_per_cls)
    return Training(accelerator, precision, paths, splits, num_per_cls, loaders, select_on, selected_by, stage1,
                    model, unwrapped, criterion, mixup, optimizer, scheduler, per_step, train_loader, steps_per_epoch,
                    epochs, steps)


def resume(training: Training, state: dict | None) -> Progress:
    """From the last checkpoint's `state`: the weights, optimizer, scheduler, loss scaler, random streams and meta
    sampler as they were, and where training stood. Without one: the start."""
    if not state:
        return Progress()
    accelerator, train_loader = training.accelerator, training.train_loader
    training.unwrapped.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    scaler_note = restore_scaler(accelerator.scaler, state, accelerator.device)
    set_rng_state(state["rng"], accelerator.process_index)
    sampler_note = restore_sampler(train_loader, state.get("meta_sampler"))  # BALMS's learnt sampling, if any
    progress = Progress(state["epoch"], state["best"], state["best_epoch"],
                        state.get("best_results"),  # older checkpoints lack it
                        state.get("history", []))  # so do these
    notes = "".join(f"; {note}" for note in (scaler_note, sampler_note) if note)
    accelerator.print(f"resuming {training.paths['last']} after epoch {progress.start}{notes}")
    return progress


def write_run_files(cfg, training: Training) -> dict:
    """The resolved config and the class counts beside the run's checkpoints, and tracking started; returns what the
    weights are, as plain data for every checkpoint: evaluation needs no training split, stage 2 no stage 1."""
    accelerator, paths, splits = training.accelerator, training.paths, training.splits
    num_per_cls = training.num_per_cls
    config = OmegaConf.to_container(cfg)
    mean, std = normalization(cfg.DATASET, splits["train"])
    about = {"config": config, "stage1": training.stage1._asdict() if training.stage1 else None,
             "data": {"num_per_cls": num_per_cls, "classes": list(splits["train"].classes), "mean": mean, "std": std,
                      "img_size": image_side(splits["train"])}}
    if accelerator.is_main_process:
        paths["config"].parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths["config"])
        save_json({"num_per_cls": num_per_cls, "val_per_class": cfg.DATASET.val_per_class,
                   "test_per_class": list(splits["test"].num_per_cls.values()),
                   "classes": list(splits["train"].classes), "mean": mean, "std": std}, paths["class_counts"])
    start_tracking(accelerator, cfg, paths["config"].parent)
    return about


class EpochScores(NamedTuple):
    """An epoch's training scores, and its scores and predictions on the selection split."""
    train: dict
    scores: dict
    predictions: Predictions


def train_an_epoch(cfg, training: Training, progress: Progress, epoch: int) -> EpochScores:
    """One epoch of training, then the selection split scored: `progress` takes the epoch's history and, where it is
    the best so far, its selection."""
    accelerator, select_on, metric = training.accelerator, training.select_on, cfg.TRAIN.ckp_metric
    training.criterion.set_epoch(epoch)  # DRW's class weights start at LOSS.drw_epoch
    steps = training.steps
    train_scores = train_one_epoch(training.model, training.train_loader, training.criterion, training.optimizer,
                                   accelerator, epoch, cfg.TRAIN.log_interval, training.per_step,
                                   steps and steps - epoch * training.steps_per_epoch, training.mixup)
    if training.per_step is None:
        training.scheduler.step()
    predictions = predict(training.model, training.loaders[select_on], accelerator)
    scores = summarize(*predictions, training.num_per_cls)
    if training.selected_by == LEARNS_ON_VAL or is_better(metric, scores[metric], progress.best):
        progress.best, progress.best_epoch = scores[metric], epoch + 1
        progress.best_results = {"epoch": progress.best_epoch, "selected_by": training.selected_by, select_on: scores}
    progress.history.append({"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_scores.items()},
                             f"{select_on}_bcr": scores["bcr"], f"{select_on}_acc": scores["acc"]})
    return EpochScores(train_scores, scores, predictions)


def log_epoch(training: Training, epoch: int, scored: EpochScores, began: float) -> None:
    """The epoch's scores to the tracker and as one line, with the seconds since `began`."""
    select_on, train_scores, scores = training.select_on, scored.train, scored.scores
    training.accelerator.log({**{f"train/{k}": v for k, v in train_scores.items()},
                              **{f"{select_on}/{k}": v for k, v in scores.items() if v is not None}}, step=epoch + 1)
    training.accelerator.print(
        f"epoch {epoch + 1}/{training.epochs} | train loss {train_scores['loss']:.4f} acc "
        f"{percent(train_scores['acc'])} | {select_on} bcr {percent(scores['bcr'])} acc "
        f"{percent(scores['acc'])} | lr {train_scores['lr']:.2e} | {time.perf_counter() - began:.1f} s")


def save_checkpoints(training: Training, progress: Progress, epoch: int, about: dict) -> None:
    """The last checkpoint after `epoch`, and the best one where this epoch is it."""
    accelerator, unwrapped = training.accelerator, training.unwrapped
    rng = gather_object([rng_state()])  # every process's own, in process order: each resumes its own stream
    if accelerator.is_main_process:
        # the last checkpoint first: it holds what the best one does, so a crash between the two leaves what
        # restore_best needs to write the best one again
        save_torch({"model": unwrapped.state_dict(), "optimizer": training.optimizer.state_dict(),
                    "scheduler": training.scheduler.state_dict(), "epoch": epoch + 1, "epochs": training.epochs,
                    "best": progress.best, "best_epoch": progress.best_epoch, "best_results": progress.best_results,
                    "history": progress.history, "rng": rng, "meta_sampler": sampler_state(training.train_loader),
                    **about, "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                    "device": str(accelerator.device)}, training.paths["last"])
        if progress.best_epoch == epoch + 1:
            save_best(training.paths, unwrapped.state_dict(), progress.best_results, about)


def final_test(cfg, training: Training, progress: Progress, tested: dict, about: dict) -> None:
    """The final epoch's weights, then the selected checkpoint's, on the test set: a pass of this run's epochs is
    reused, as the weights are the same; otherwise one pass each (one if they are one). The results file last."""
    accelerator, paths, num_per_cls = training.accelerator, training.paths, training.num_per_cls
    epochs, best_epoch, model = training.epochs, progress.best_epoch, training.model
    if epochs not in tested:
        tested[epochs] = predict(model, training.loaders["test"], accelerator)
    if best_epoch not in tested:
        accelerator.wait_for_everyone()
        training.unwrapped.load_state_dict(load_checkpoint(paths["best"])["model"])
        tested[best_epoch] = predict(model, training.loaders["test"], accelerator)
    last = summarize(*tested[epochs], num_per_cls)
    logits, targets = tested[best_epoch]
    selected = last if best_epoch == epochs else summarize(logits, targets, num_per_cls)
    shifted = shifted_report(logits, targets, training.splits["test"].targets, num_per_cls,
                             *model_log_prior(cfg, num_per_cls), accelerator.num_processes)
    if accelerator.is_main_process:  # the results file last: it marks the run finished (run_finished)
        save_json(per_class_report(logits, targets, num_per_cls), paths["per_class"])
        save_json({"selected_by": training.selected_by, "best_epoch": best_epoch, "epochs": epochs,
                   "test": selected, "test_last_epoch": last, "shifted": shifted,
                   "calibration": {"reliability": reliability_bins(*top_confidence(logits, targets))},
                   "num_per_cls": num_per_cls, "config": about["config"],
                   "stage1": about["stage1"], "history": progress.history,
                   "ran_on": {"device": str(accelerator.device), "processes": accelerator.num_processes,
                              "mixed_precision": training.precision, "torch": torch.__version__}},
                  paths["results"])
    accelerator.log({**{f"test/{k}": v for k, v in selected.items() if v is not None},
                     **{f"test_last_epoch/{k}": v for k, v in last.items() if v is not None}})
    accelerator.print(f"test (epoch {best_epoch}, by {training.selected_by}): bcr {percent(selected['bcr'])} "
                      f"acc {percent(selected['acc'])} | last epoch: bcr {percent(last['bcr'])} | results in "
                      f"{paths['results']}")
    accelerator.print(shifted_table(shifted))
    accelerator.end_training()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", help="YAML file of defaults (configs.yaml); repeat it to "
                        "merge overlay files such as recipes/balms.yaml over it, later files winning")
    parser.add_argument("overrides", nargs="*", help="dotted KEY VALUE pairs (or KEY=VALUE), e.g. TRAIN.epochs 3")
    args = parser.parse_intermixed_args(argv)  # a --config may follow settings, as a stage-2 recipe does
    try:
        configs = args.config or ["configs.yaml"]
        cfg = load_config(configs, args.overrides)
        if cfg.DEFAULT.exp_name is None:  # named as run.sh names it, so that runs of other settings never meet
            cfg.DEFAULT.exp_name = default_exp_name(cfg, configs[1:])
        check(cfg)
        # one process trains one seed of a run folder at a time (the main one holds the lock for all)
        with RunLock(run_dir(cfg), cfg.DEFAULT.seed, hold=int(os.environ.get("RANK", 0)) == 0):
            run(cfg)
    except (ConfigError, DatasetNotFoundError, NonFiniteLossError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: run the same command again to continue from the last saved epoch")
    except OSError as error:  # a full, failing or read-only disk, named in one line (storage.py); others are bugs
        if (line := fault_line(error)) is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    main()
