"""Shared fixtures: generated CIFAR files in torchvision's format, and a helper that runs main.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_cifar import accept_files_in, make_cifar  # noqa: E402

# The files a finished main.py run of seed 0 leaves in its run folder
OUTPUTS = {"configs-seed0.yaml", "model-seed0.pt", "model-seed0-best.pt", "results-seed0-best.json",
           "results-seed0.json", "results-seed0-per-class.json", "class-counts-seed0.json"}
# Settings that make a main.py run small and offline; tests add their own overrides after these
FAST_RUN = ["TRAIN.wandb.use", "false", "DATASET.download", "false", "MODEL.name", "resnet32",
            "DATASET.batch_size", "32", "TRAIN.log_interval", "2"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (end to end through main.py, run.sh's real sweep, "
                          "several processes): the whole suite, as .ci/run runs it")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains in fresh processes (end to end or several processes); skipped "
                                       "unless pytest is given --slow (or -m slow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """CIFAR-10 with 100 training and 20 test images per class, CIFAR-100 with 30 and 4, md5 checks patched."""
    root = tmp_path_factory.mktemp("cifar")
    make_cifar(root, 10, train_per_class=100, test_per_class=20)
    make_cifar(root, 100, train_per_class=30, test_per_class=4)
    accept_files_in(root)
    return root


def run_script(script: str, datadir: Path, *args: str, nproc: int = 1, timeout: int = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """`script` (main.py or evaluate.py) in a fresh process, under torchrun when nproc > 1, reading the generated
    data in `datadir`."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                 "--master_port", str(29500 + os.getpid() % 1000)] if nproc > 1 else [sys.executable])
    command = launcher + [str(ROOT / "tests" / "fake_cifar.py"), str(datadir), script, *args]
    environment = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1" if nproc > 1 else
                   os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def main_args(datadir: Path, savedir: Path, *overrides: str) -> list[str]:
    """The KEY VALUE pairs that run_main passes to main.py, in its order: data, savedir, FAST_RUN, `overrides`."""
    return ["DATASET.datadir", str(datadir), "DEFAULT.savedir", str(savedir), *FAST_RUN, *overrides]


def run_main(datadir: Path, savedir: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    """main.py with the shipped configs.yaml, FAST_RUN and then `overrides`, writing runs under `savedir`."""
    return run_script("main.py", datadir, "--config", str(ROOT / "configs.yaml"),
                      *main_args(datadir, savedir, *overrides), **kwargs)



def cpu_main_in_process() -> pytest.MonkeyPatch:
    """main.py run in this process as on a machine without a GPU, with CIFAR-10's file lists kept as they are now
    (a test that accepts generated files edits them): undo() the patch it returns to restore both."""
    import main
    from torchvision.datasets import CIFAR10

    from runtime import mixed_precision

    patch = pytest.MonkeyPatch()
    for name in ("train_list", "test_list", "meta"):
        patch.setattr(CIFAR10, name, getattr(CIFAR10, name))
    patch.setattr(main, "cpu_only", lambda: True)
    patch.setattr(main, "mixed_precision", lambda requested: mixed_precision(requested, on_gpu=False))
    return patch

def read(path: Path) -> dict:
    return json.loads(path.read_text())


def check_ok(proc: subprocess.CompletedProcess) -> None:
    """A run that succeeded: exit status 0 and no traceback."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps its state in process-wide singletons: a test that builds an Accelerator in the test process
    starts with none and leaves none behind."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class Batches(list):
    """A fixed list of (images, targets) batches with the one loader method train_one_epoch calls."""

    def set_epoch(self, epoch: int) -> None:
        pass
