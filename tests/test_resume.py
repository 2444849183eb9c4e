"""Resuming main.py in this process after a simulated crash: the best checkpoint always agrees with the last one,
and a run begun without a GradScaler (on a CPU) resumes with one (on a GPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

import checkpoint
from conftest import ROOT, main_args, read
from errors import ConfigError
from fake_cifar import accept_files_in, make_cifar

# Two short epochs that learn the generated data (test_main.py's LEARN)
RUN = ["DATASET.batch_size", "16", "OPTIMIZER.lr", "0.01", "TRAIN.epochs", "2", "DEFAULT.exp_name", "crash"]


@pytest.fixture
def datadir(tmp_path, monkeypatch) -> Path:
    """CIFAR-10 with 10 training and 2 test images per class, its md5 checks patched for this test only; main.py
    runs as on a machine without a GPU, also where there is one."""
    import main
    from torchvision.datasets import CIFAR10

    from runtime import mixed_precision

    for name in ("train_list", "test_list", "meta"):
        monkeypatch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    monkeypatch.setattr(main, "cpu_only", lambda: True)
    monkeypatch.setattr(main, "mixed_precision", lambda requested: mixed_precision(requested, on_gpu=False))
    make_cifar(tmp_path / "data", 10, train_per_class=10, test_per_class=2)
    accept_files_in(tmp_path / "data")
    return tmp_path / "data"


def run_main(datadir: Path, savedir: Path, *overrides: str) -> None:
    import main

    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh process, as far as accelerate can tell
    GradientState._reset_state()
    main.main(["--config", str(ROOT / "configs.yaml"), *main_args(datadir, savedir, *RUN, *overrides)])


def run_until_crash(datadir: Path, savedir: Path, monkeypatch, at_write: int, *overrides: str) -> None:
    """main.py (RUN, then `overrides`) stopped at its `at_write`-th checkpoint (.pt) write, before anything of that
    file is written, as a crash would stop it."""
    writes, atomic_write = [], checkpoint.atomic_write

    def write(path: Path, write_to) -> None:
        if path.suffix == ".pt":
            writes.append(path.name)
            if len(writes) == at_write:
                raise KeyboardInterrupt
        atomic_write(path, write_to)
    monkeypatch.setattr(checkpoint, "atomic_write", write)
    with pytest.raises(SystemExit, match="interrupted"):
        run_main(datadir, savedir, *overrides)
    monkeypatch.setattr(checkpoint, "atomic_write", atomic_write)


@pytest.mark.slow
def test_a_crash_between_the_last_and_the_best_checkpoint_resumes_consistently(datadir, tmp_path, monkeypatch):
    """Each epoch is the best so far, and writes both checkpoints; the run crashes between epoch 2's two writes.
    Resumed, epoch 2 (rerun, or not, as the saved state says) is not better than epoch 1, as may happen where
    kernels are not deterministic. Whichever epoch the run selects, the best checkpoint and its scores are that
    epoch's, and the final test tests them."""
    import main

    monkeypatch.setattr(main, "is_better", lambda metric, score, best: True)
    run_until_crash(datadir, tmp_path, monkeypatch, at_write=4)  # epoch 2's second write
    monkeypatch.setattr(main, "is_better", lambda metric, score, best: best is None)
    run_main(datadir, tmp_path)

    folder = tmp_path / "CIFAR10LT" / "resnet32" / "crash"
    results, best_results = read(folder / "results-seed0.json"), read(folder / "results-seed0-best.json")
    best = torch.load(folder / "model-seed0-best.pt", map_location="cpu")
    last = torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=True)  # tensors and plain data
    assert last["epoch"] == 2 and results["epochs"] == 2
    assert best["epoch"] == best_results["epoch"] == last["best_epoch"] == results["best_epoch"]
    assert results["test"] == best_results["test"]  # the final test tested the selected epoch's weights
    if best["epoch"] == 2:
        for name, value in last["model"].items():
            assert torch.equal(best["model"][name], value), name


@pytest.mark.slow
def test_a_resumed_run_keeps_the_history_of_the_epochs_before_its_stop(datadir, tmp_path, monkeypatch):
    """Stopped before epoch 2's checkpoint and resumed, the run's results list each epoch's scores once, in order,
    epoch 1's as the first process measured them."""
    run_until_crash(datadir, tmp_path, monkeypatch, at_write=3)  # epoch 2's last checkpoint
    folder = tmp_path / "CIFAR10LT" / "resnet32" / "crash"
    before = torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)["history"]
    run_main(datadir, tmp_path)

    results = read(folder / "results-seed0.json")
    history = results["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == before[0]
    assert set(history[1]) == {"epoch", "train_loss", "train_acc", "train_lr", "test_bcr", "test_acc"}
    assert history[1]["test_bcr"] == pytest.approx(results["test_last_epoch"]["bcr"])  # selected on the test set


@pytest.mark.slow
def test_a_stopped_meta_sampler_run_resumes_the_sampler_it_had_learnt(datadir, tmp_path, monkeypatch):
    """Stage 2 with BALMS's meta sampler, stopped before epoch 2's checkpoint and resumed, ends with the sampler's
    weights of the run that was not stopped: the checkpoint keeps what the sampler learnt in epoch 1."""
    run_main(datadir, tmp_path, "LOSS.name", "BalancedSoftmax", "DEFAULT.exp_name", "BS")
    runs = tmp_path / "CIFAR10LT" / "resnet32"
    meta = ["TRAIN.stage2_from", str(runs / "BS"), "LOSS.name", "BalancedSoftmax", "DATASET.sampler", "meta",
            "META_SAMPLER.batch_size", "16", "META_SAMPLER.lr", "0.5"]
    run_main(datadir, tmp_path, *meta, "DEFAULT.exp_name", "whole")
    run_until_crash(datadir, tmp_path, monkeypatch, 3, *meta, "DEFAULT.exp_name", "stopped")  # epoch 2's last
    after_epoch_1 = torch.load(runs / "stopped" / "model-seed0.pt", weights_only=True)["meta_sampler"]["weight"]
    run_main(datadir, tmp_path, *meta, "DEFAULT.exp_name", "stopped")

    whole, resumed = (torch.load(runs / name / "model-seed0.pt", weights_only=True)["meta_sampler"]["weight"]
                      for name in ("whole", "stopped"))
    assert not torch.equal(whole, after_epoch_1)  # epoch 2 moved the sampler
    torch.testing.assert_close(resumed, whole, rtol=1e-5, atol=1e-6)


class WithGradScaler(Accelerator):
    """An accelerator with a GradScaler, as fp16 on a GPU has; a CPU one, so that it runs here."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu")


@pytest.mark.slow
def test_a_run_begun_without_a_grad_scaler_resumes_with_a_fresh_one(datadir, tmp_path, monkeypatch, capsys):
    """A CPU run (no GradScaler: fp16 runs as bf16 or fp32 there) stopped after epoch 1 and resumed where fp16
    has a GradScaler: it goes on with a fresh scaler, and says so in one line."""
    import main

    run_until_crash(datadir, tmp_path, monkeypatch, at_write=3)  # epoch 2's first write: epoch 1 is saved
    last = tmp_path / "CIFAR10LT" / "resnet32" / "crash" / "model-seed0.pt"
    assert torch.load(last, map_location="cpu", weights_only=False)["scaler"] is None
    monkeypatch.setattr(main, "Accelerator", WithGradScaler)
    capsys.readouterr()
    run_main(datadir, tmp_path)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "GradScaler" in line] == [
        f"resuming {last} after epoch 1; the checkpoint, saved on cpu, holds no GradScaler state: fp16 loss scaling "
        "on cpu starts afresh"]
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 2 and state["scaler"]["scale"] == 2.0 ** 16  # the fresh scaler's, saved for the next resume


def test_a_grad_scaler_state_is_left_out_where_none_runs():
    saved = torch.amp.GradScaler("cpu", init_scale=8.0).state_dict()
    note = checkpoint.restore_scaler(None, {"scaler": saved, "device": "cuda:0"}, torch.device("cpu"))
    assert note == "the checkpoint's GradScaler state, saved on cuda:0, is left out: no fp16 loss scaling runs on cpu"
    scaler = torch.amp.GradScaler("cpu")
    assert checkpoint.restore_scaler(scaler, {"scaler": saved, "device": "cpu"}, torch.device("cpu")) is None
    assert scaler.get_scale() == 8.0


def test_a_best_checkpoint_that_no_crash_explains_is_refused(tmp_path):
    """A last checkpoint that selected an earlier epoch than its own, beside a best checkpoint of another epoch
    (a checkpoint put back by hand, or a crash of the older order, best first): the best weights are lost."""
    paths = checkpoint.output_paths(tmp_path, 0)
    checkpoint.save_best(paths, {}, {"epoch": 3, "selected_by": "test bcr", "test": {}}, {})
    state = {"epoch": 2, "best_epoch": 1, "best_results": {"epoch": 1}, "model": {}, "config": {}}
    with pytest.raises(ConfigError) as error:
        checkpoint.restore_best(paths, state, write=True)
    assert str(error.value) == ("model-seed0-best.pt is not of epoch 1, which model-seed0.pt (after epoch 2) "
                                "selected: put back the pair of files written together, or pick a new "
                                "DEFAULT.exp_name")
    assert read(paths["best_results"])["epoch"] == 3  # left as it was


def test_a_run_writes_its_files_under_one_naming_scheme(tmp_path):
    names = {kind: path.name for kind, path in checkpoint.output_paths(tmp_path, 3).items()}
    assert names == {"config": "configs-seed3.yaml", "last": "model-seed3.pt", "best": "model-seed3-best.pt",
                     "best_results": "results-seed3-best.json", "results": "results-seed3.json",
                     "per_class": "results-seed3-per-class.json", "class_counts": "class-counts-seed3.json"}
    assert all("_" not in name for name in names.values())


OLD_NAMES = {"config": "configs-seed0.yaml", "last": "model_seed0.pt", "best": "model_seed0_best.pt",
             "best_results": "results_seed0_best.json", "results": "results-seed0.json",
             "per_class": "results-seed0-per_class.json", "class_counts": "class_counts-seed0.json"}


@pytest.mark.parametrize("kind", ["last", "best", "best_results", "per_class", "class_counts"])
def test_a_run_folder_written_under_the_old_names_is_read_and_resumed_under_them(tmp_path, kind):
    # a folder begun before the names changed keeps them: its files are found, and a resumed run writes the same ones
    (tmp_path / OLD_NAMES[kind]).write_text("{}")
    assert {k: p.name for k, p in checkpoint.output_paths(tmp_path, 0).items()} == OLD_NAMES
    assert checkpoint.output_seeds(tmp_path, kind) == [0]
    # another seed of the same folder, begun afterwards, gets the new names
    assert checkpoint.output_paths(tmp_path, 1)["last"].name == "model-seed1.pt"


def test_a_crash_before_the_per_class_file_leaves_a_run_to_finish(datadir, tmp_path, monkeypatch):
    """results-seed*.json marks a run finished, so it is written last: a crash before the per-class file leaves a
    run that is not finished, and running it again writes both."""
    import main

    save_json = main.save_json

    def crash_at_per_class(data, path):
        if path.name.endswith("per-class.json"):
            raise KeyboardInterrupt
        save_json(data, path)
    monkeypatch.setattr(main, "save_json", crash_at_per_class)
    with pytest.raises(SystemExit, match="interrupted"):
        run_main(datadir, tmp_path)
    monkeypatch.setattr(main, "save_json", save_json)
    folder = tmp_path / "CIFAR10LT" / "resnet32" / "crash"
    assert not (folder / "results-seed0.json").exists()
    run_main(datadir, tmp_path)
    assert read(folder / "results-seed0.json")["epochs"] == 2
    assert read(folder / "results-seed0-per-class.json")["num_per_cls"]


def test_evaluate_writes_its_results_file_last(tmp_path, monkeypatch):
    import evaluate

    written = []
    monkeypatch.setattr(evaluate, "save_json", lambda data, path: written.append(path.name))
    found = evaluate.Predictions(torch.eye(3), torch.arange(3))
    evaluate.write_results(tmp_path, 0, {"num_per_cls": [5, 3, 1]}, found)
    assert written[-1] == "results-seed0.json" and len(written) == 2
