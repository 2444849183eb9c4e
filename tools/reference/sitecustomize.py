"""Runs the reference code (LDAM-DRW, the official BALMS code) unmodified on a CPU without network: put this
folder first on PYTHONPATH and Python imports this file before anything else. Their code is never copied here.

Every change made to their behaviour is here, in run_ldam.py or in balms_config.py, and listed in
docs/reproducing.md:
- .cuda() on tensors and modules, torch.cuda.set_device, torch.cuda.max_memory_allocated: no-ops (the CPU runs
  everything); torch.cuda.FloatTensor, which LDAM-DRW's LDAMLoss builds its margins with, is torch.FloatTensor;
- torchvision's CIFAR md5 check accepts the lossless copy, whose pickle files were written anew (same pixels);
- yaml.load without a Loader (PyYAML >= 6 requires one): FullLoader, as PyYAML 5 defaulted to;
- np.int, removed in NumPy 1.24, is the builtin int it was an alias of;
- REF_NUMPY_SEED: NumPy's global generator is seeded at start-up (BALMS seeds nothing, so its draw of the
  long-tailed subset would differ run to run; seeded, it draws exactly what LDAM-DRW draws with that seed).
"""
import os

import numpy as np
import torch
import torchvision
import yaml

torch.Tensor.cuda = lambda self, *args, **kwargs: self
torch.nn.Module.cuda = lambda self, *args, **kwargs: self
torch.cuda.set_device = lambda *args, **kwargs: None
torch.cuda.max_memory_allocated = lambda *args, **kwargs: 0
torch.cuda.FloatTensor = torch.FloatTensor
torchvision.datasets.cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)

np.int = int

_load = yaml.load
yaml.load = lambda stream, Loader=yaml.FullLoader: _load(stream, Loader=Loader)

if os.environ.get("REF_NUMPY_SEED"):
    np.random.seed(int(os.environ["REF_NUMPY_SEED"]))
