"""Runs our main.py with one piece of BALMS's 10-epoch run swapped in, to find what separates the two codes.
Diagnosis only: nothing here is a product setting, and BALMS's code is loaded from its own checkout, never copied.

    AA=balms BALMS=/path/to/BalancedMetaSoftmax-Classification python tools/reference/swap.py DATADIR main.py ARGS
    DROP_LAST=1 python tools/reference/swap.py DATADIR main.py ARGS

- AA=balms: the classic loader's AutoAugment is BALMS's CIFAR10Policy (data/autoaugment.py) instead of torchvision's;
  run with DATASET.loader classic DATASET.num_workers 0.
- DROP_LAST=1: an epoch is int(N / batch) full batches and the rest of its shuffle is left out, as BALMS's loop
  does (`epoch_steps`), instead of ceil(N / batch) with a short last batch; in both loaders.
DATADIR and the rest go to tests/fake_cifar.py, which accepts the lossless copy's files; run from the repository root.
"""
import importlib.util
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import torch.utils.data

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import datasets.loaders as loaders  # noqa: E402  (after the path is set)

if os.environ.get("DROP_LAST"):
    keep_len = loaders.TensorLoader.__len__
    loaders.TensorLoader.__len__ = lambda self: (
        len(self.targets) // self.world_size // self.batch_size if self.train else keep_len(self))
    loaders.DataLoader = lambda *args, **kwargs: torch.utils.data.DataLoader(*args, **{**kwargs, "drop_last": True})
    print("swap: training epochs of full batches only", flush=True)
if os.environ.get("AA") == "balms":
    np.int = int  # removed in NumPy 1.24; BALMS's policy table uses it
    spec = importlib.util.spec_from_file_location("balms_autoaugment", Path(os.environ["BALMS"]) / "data/autoaugment.py")
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    loaders.AUGMENTATIONS["AutoAugment"] = lambda size, fill: policy.CIFAR10Policy()
    print("swap: AutoAugment is BALMS's CIFAR10Policy", flush=True)

sys.argv = [str(REPO / "tests/fake_cifar.py")] + sys.argv[1:]
runpy.run_path(str(REPO / "tests/fake_cifar.py"), run_name="__main__")
