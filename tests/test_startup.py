"""Start-up work done once: the seconds before the first training step are mostly library imports and reading the
data, so reading the data does nothing twice."""
from __future__ import annotations

import pytest

import datasets.cifar

from config import load_config
from conftest import ROOT
from datasets import CIFAR10LT, build_splits


@pytest.mark.parametrize("download", ["false", "true"])
def test_each_cifar_file_is_hashed_once(cifar_root, monkeypatch, download):
    """Building the train, val and test splits checks each of CIFAR's six data files' md5 once, not once per split
    (and, when downloading, twice per split): 180 MB of hashing, 2 s a check on a CPU."""
    hashed = []
    md5 = datasets.cifar.calculate_md5
    monkeypatch.setattr(datasets.cifar, "calculate_md5", lambda path: hashed.append(path) or md5(path))
    monkeypatch.setattr(CIFAR10LT, "_verified", set(), raising=False)  # as in a fresh process
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.datadir", str(cifar_root), "DATASET.download", download,
                                              "DATASET.val_per_class", "5"])
    splits = build_splits(cfg.DATASET, 0)
    assert set(splits) == {"train", "val", "test"}
    data_files = [path for path in hashed if not str(path).endswith("batches.meta")]
    assert len(data_files) == len(set(data_files)) == 6, data_files
