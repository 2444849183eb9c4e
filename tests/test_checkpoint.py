"""checkpoint.py: every checkpoint is read with torch.load(weights_only=True), so a crafted file runs no code; the
random state travels as tensors and plain containers; each process saves and restores its own CUDA device's
generator, whatever the number of devices visible then and now (simulated here on the CPU)."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import checkpoint
from errors import ConfigError


class Payload:
    """What a crafted .pt holds: unpickled with weights_only=False, it creates the folder `marker`."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _crafted(tmp_path):
    path, marker = tmp_path / "model_seed0.pt", tmp_path / "ran"
    torch.save({"model": {}, "config": {}, "epoch": 1, "extra": Payload(marker)}, path)
    return path, marker


def test_a_crafted_checkpoint_is_refused_in_one_line_without_running_its_code(tmp_path):
    path, marker = _crafted(tmp_path)
    with pytest.raises(ConfigError) as error:
        checkpoint.load_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert "\n" not in message and "posix.mkdir" in message and "refused" in message, message


def test_evaluate_refuses_a_crafted_checkpoint_without_running_its_code(tmp_path):
    import evaluate

    path, marker = _crafted(tmp_path)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(path)])
    assert not marker.exists()
    assert str(stop.value).startswith("error: ") and "\n" not in str(stop.value), stop.value


def test_resume_refuses_a_crafted_last_checkpoint_without_running_its_code(tmp_path):
    from omegaconf import OmegaConf

    path, marker = _crafted(tmp_path)
    cfg = OmegaConf.create({"DEFAULT": {"resume": True, "overwrite": False, "seed": 0}})
    with pytest.raises(ConfigError):
        checkpoint.resume_state(cfg, checkpoint.output_paths(tmp_path, 0))
    assert not marker.exists()


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_the_random_state_loads_with_weights_only_and_restores_every_stream(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    torch.save({"rng": [checkpoint.rng_state()]}, tmp_path / "state.pt")
    expected = _draws()
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)["rng"]
    checkpoint.set_rng_state(saved, 0)
    assert _draws() == expected


def test_a_checkpoint_written_before_the_random_state_was_tensors_is_still_read(tmp_path):
    """Older last checkpoints hold NumPy's state as its legacy tuple, with a uint32 array in it."""
    np.random.seed(5)
    torch.save({"rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
                "epoch": 1}, tmp_path / "old.pt")
    expected = np.random.rand(3).tolist()
    state = checkpoint.load_checkpoint(tmp_path / "old.pt")
    checkpoint.set_rng_state(state["rng"], 0)
    assert np.random.rand(3).tolist() == expected


class FakeCuda:
    """`visible` CUDA devices, each generator's state a one-element tensor; this process runs on `current`. A device
    index beyond the visible ones raises, as torch.cuda does."""

    def __init__(self, visible: int, current: int, states: dict | None = None) -> None:
        self.visible, self.current = visible, current
        self.states = states if states is not None else {d: torch.tensor([100 + d]) for d in range(visible)}

    def index(self, device) -> int:
        index = self.current if device is None or device == "cuda" else \
            device if isinstance(device, int) else torch.device(device).index
        if index >= self.visible:
            raise IndexError(f"device {index} of {self.visible}")
        return index

    def install(self, monkeypatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: self.visible)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "get_rng_state", lambda device="cuda": self.states[self.index(device)].clone())
        monkeypatch.setattr(cuda, "set_rng_state",
                            lambda state, device="cuda": self.states.__setitem__(self.index(device), state.clone()))
        monkeypatch.setattr(cuda, "get_rng_state_all", lambda: [self.states[d].clone() for d in range(self.visible)])
        monkeypatch.setattr(cuda, "set_rng_state_all",
                            lambda states: [cuda.set_rng_state(s, d) for d, s in enumerate(states)])


def test_each_process_saves_its_own_device_generator_alone(monkeypatch):
    FakeCuda(visible=4, current=2).install(monkeypatch)
    assert torch.equal(checkpoint.rng_state()["cuda"], torch.tensor([102]))


@pytest.mark.parametrize("saved_with", [1, 4])
def test_a_run_resumes_on_fewer_visible_devices(monkeypatch, saved_with):
    """Saved by 4 processes on 4 visible GPUs (or one on 1), resumed by one process that sees one GPU: it restores
    its own device's generator, from its own entry. With 4 saved, the older code restored all 4 and hit IndexError."""
    FakeCuda(visible=saved_with, current=0).install(monkeypatch)
    saved = [checkpoint.rng_state() for _ in range(saved_with)]
    resumed = FakeCuda(visible=1, current=0, states={0: torch.tensor([0])})
    resumed.install(monkeypatch)
    checkpoint.set_rng_state(saved, 0)
    assert resumed.states == {0: torch.tensor([100])}


def test_an_older_checkpoint_with_every_visible_device_restores_the_process_own_one(monkeypatch):
    """Older checkpoints held torch.cuda.get_rng_state_all(): one state per device visible then. Process 1, on
    device 1 of 2 visible now, restores entry 1 of its own saved list, and leaves device 0 alone."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "cuda": [torch.tensor([7]), torch.tensor([8]), torch.tensor([9]), torch.tensor([10])]}
    resumed = FakeCuda(visible=2, current=1, states={0: torch.tensor([0]), 1: torch.tensor([1])})
    resumed.install(monkeypatch)
    checkpoint.set_rng_state([state, state], 1)
    assert resumed.states == {0: torch.tensor([0]), 1: torch.tensor([8])}


def test_report_reads_a_crafted_last_checkpoint_as_no_checkpoint_without_running_its_code(tmp_path):
    from reporting.runs import read_checkpoint

    path, marker = _crafted(tmp_path)
    assert read_checkpoint(path) is None
    assert not marker.exists()
