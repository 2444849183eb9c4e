"""tools/release.py and the files in weights/: a released checkpoint is scored by evaluate.py from the test images
alone, without the training images, the subset file or the run folder."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from omegaconf import OmegaConf
from torchvision.datasets import CIFAR10

from checkpoint import load_checkpoint, output_paths, save_torch
from conftest import ROOT, read
from config import load_config
from datasets import CIFAR10LT
from fake_cifar import accept_files_in, make_cifar
from metrics import summarize
from models import build_model

COUNTS = [40, 20, 10, 6, 4, 3, 3, 2, 2, 2]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_folder(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A finished run folder as main.py leaves it, with a checkpoint written before checkpoints held their class
    counts (its best holds model, epoch and config alone), trained on a subset file; and the CIFAR-10 it names."""
    for name in ("train_list", "test_list", "meta"):
        monkeypatch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    datadir = tmp_path / "data"
    make_cifar(datadir, 10, train_per_class=50, test_per_class=5)
    accept_files_in(datadir)
    cfg = load_config([str(ROOT / "configs.yaml")], [
        "DATASET.datadir", str(datadir), "DATASET.download", "false", "DATASET.train_subset", str(tmp_path / "gone.txt"),
        "DATASET.val_per_class", "5", "MODEL.name", "resnet32", "TRAIN.mixed_precision", "no",
        "DATASET.mean", "[0.5, 0.4, 0.3]", "DATASET.std", "[0.2, 0.25, 0.3]", "TRAIN.wandb.use", "false"])
    torch.manual_seed(0)
    model, _ = build_model("resnet32", 10, False, 32)
    folder = tmp_path / "run"
    folder.mkdir()
    paths = output_paths(folder, 0)
    save_torch({"model": model.state_dict(), "epoch": 7, "config": OmegaConf.to_container(cfg)}, paths["best"])
    paths["class_counts"].write_text(json.dumps({"num_per_cls": COUNTS, "classes": [f"c{i}" for i in range(10)],
                                                 "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}))
    paths["results"].write_text(json.dumps({"selected_by": "val bcr", "epochs": 9, "test": {"bcr": 0.25, "acc": 0.3},
                                            "test_last_epoch": {"bcr": 0.2, "acc": 0.2}}))
    return folder, datadir


def test_a_released_file_holds_what_evaluation_needs_as_plain_data(run_folder, tmp_path):
    folder, _ = run_folder
    out = tmp_path / "weights" / "ce.pt"
    _tool("release").main([str(folder), "--out", str(out)])
    released = load_checkpoint(out)  # weights_only: tensors and plain containers
    assert released["data"] == {"num_per_cls": COUNTS, "classes": [f"c{i}" for i in range(10)],
                                "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "img_size": 32}
    assert released["epoch"] == 7 and "optimizer" not in released
    assert released["released"]["test"] == {"bcr": 0.25, "acc": 0.3}
    assert released["released"]["selected_by"] == "val bcr"
    with pytest.raises(SystemExit, match="exists"):  # never over an earlier release
        _tool("release").main([str(folder), "--out", str(out)])


def test_evaluate_scores_a_released_file_from_the_test_images_alone(run_folder, tmp_path):
    import evaluate

    folder, datadir = run_folder
    out = tmp_path / "weights" / "ce.pt"
    _tool("release").main([str(folder), "--out", str(out)])
    shutil.rmtree(folder)  # the run folder, the subset file and the training images are all gone
    for path in (datadir / CIFAR10.base_folder).glob("data_batch_*"):
        path.unlink()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    evaluate.main([str(out), "--out", str(tmp_path / "eval"), "DATASET.datadir", str(datadir)])

    results = read(tmp_path / "eval" / "results-seed0.json")
    assert results["num_per_cls"] == COUNTS  # the released counts, not the test split's
    # the same scores as the released weights give on the test images, normalised by the released mean and std
    test = CIFAR10LT(str(datadir), split="test", download=False)
    images = torch.as_tensor(test.data).permute(0, 3, 1, 2).float() / 255
    images = (images - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    model, _ = build_model("resnet32", 10, False, 32)
    model.load_state_dict(load_checkpoint(out)["model"])
    with torch.no_grad():
        logits = model.eval()(images)
    expected = summarize(logits, torch.as_tensor(test.targets), COUNTS)
    assert results["test"]["bcr"] == pytest.approx(expected["bcr"])
    assert results["test"]["many_acc"] == pytest.approx(expected["many_acc"])


def _released_twice(run_folder, tmp_path) -> list[Path]:
    """Two released files of the run, ce.pt and bs.pt, saved as a bf16 run saves its config (fp16)."""
    folder, _ = run_folder
    files = [tmp_path / "weights" / f"{name}.pt" for name in ("ce", "bs")]
    for path in files:
        _tool("release").main([str(folder), "--out", str(path)])
        state = load_checkpoint(path)
        state["config"]["TRAIN"]["mixed_precision"] = "fp16"
        path.unlink()
        save_torch(state, path)
    return files


def _evaluate(*args: str) -> None:
    import evaluate

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    evaluate.main(list(args))


def test_a_checkpoint_file_is_scored_in_fp32_on_a_cpu_into_a_folder_named_after_it(run_folder, tmp_path, monkeypatch,
                                                                                   capsys):
    _, datadir = run_folder
    files = _released_twice(run_folder, tmp_path)
    monkeypatch.chdir(tmp_path)
    for path in files:
        _evaluate(str(path), "DATASET.datadir", str(datadir))
        assert "precision no (fp32, the default on a CPU" in capsys.readouterr().out
    for path in files:  # outside weights/, one folder per file: the second did not write over the first
        results = read(tmp_path / "results" / "evaluation" / path.stem / "results-seed0.json")
        assert results["checkpoint"] == str(path.resolve())
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["bs.pt", "ce.pt"]
    # a precision asked for is the one that runs
    _evaluate(str(files[0]), "--out", str(tmp_path / "bf16"), "DATASET.datadir", str(datadir),
              "TRAIN.mixed_precision", "bf16")
    assert "precision bf16" in capsys.readouterr().out


def test_an_evaluation_of_another_checkpoint_is_never_written_over(run_folder, tmp_path, monkeypatch):
    _, datadir = run_folder
    ce, bs = _released_twice(run_folder, tmp_path)
    monkeypatch.chdir(tmp_path)
    _evaluate(str(ce), "--out", "mine", "DATASET.datadir", str(datadir))
    _evaluate(str(ce), "--out", "mine", "DATASET.datadir", str(datadir))  # the same checkpoint again: replaced
    with pytest.raises(SystemExit, match=r"holds the evaluation of another checkpoint .*ce\.pt.*pick another folder"):
        _evaluate(str(bs), "--out", "mine", "DATASET.datadir", str(datadir))
    assert read(tmp_path / "mine" / "results-seed0.json")["checkpoint"] == str(ce.resolve())
