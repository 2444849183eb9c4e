"""Write the CIFAR-LT training subset that the LDAM-DRW lineage draws, as a file for DATASET.train_subset
(`DATASET.draw ldam` trains on the same images without a file).

LDAM-DRW (kaidic/LDAM-DRW, imbalance_cifar.py) seeds NumPy's global generator, then for each class in turn
shuffles the indices of its images and keeps the first n of them. The official Balanced Softmax code
(data/ImbalanceCIFAR.py) draws the same way but seeds nothing, so each of its runs draws other images; this draw is
the one it makes once NumPy is seeded. Given that file, this repository trains on exactly their images:

    python tools/ldam_subset.py CIFAR10LT DATA --imbalance-factor 100 --seed 0 --out subset.txt
    python main.py --config configs.yaml DATASET.datadir DATA DATASET.train_subset subset.txt ...

The class counts follow the same profile as DATASET.imbalance_type (long_tail_counts). Labels are read straight
from torchvision's files, without its md5 check, so a copy written anew (a lossless PNG mirror) works too.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from datasets import CIFAR10LT, CIFAR100LT, ldam_draw, long_tail_counts  # noqa: E402

DATASETS = {"CIFAR10LT": CIFAR10LT, "CIFAR100LT": CIFAR100LT}


def training_labels(dataset: type, datadir: str) -> np.ndarray:
    """The labels of the 50,000 training images in torchvision's order, from datadir/<seed folder>/ or datadir."""
    root, folders = dataset.roots(datadir)
    folder = root / dataset.base_folder
    if not folder.is_dir():
        sys.exit(f"error: no {dataset.base_folder} in {' or '.join(map(str, folders))}")
    labels = []
    for name, _ in dataset.train_list:
        with open(folder / name, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        labels += entry.get("labels", entry.get("fine_labels"))
    return np.asarray(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("datadir", help="as DATASET.datadir")
    parser.add_argument("--imbalance-type", default="exp", choices=["exp", "step"])
    parser.add_argument("--imbalance-factor", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0, help="LDAM-DRW's --rand_number (its default is 0)")
    parser.add_argument("--out", required=True, help="the file to write, one index per line")
    args = parser.parse_args(argv)
    labels = training_labels(DATASETS[args.dataset], args.datadir)
    n_max = int(np.bincount(labels).max())
    counts = long_tail_counts(n_max, int(labels.max()) + 1, args.imbalance_type, args.imbalance_factor)
    indices = ldam_draw(labels, counts, args.seed)
    header = (f"# {args.dataset} training images drawn as LDAM-DRW draws them: {args.imbalance_type} profile, "
              f"imbalance factor {args.imbalance_factor:g}, NumPy seed {args.seed}; {len(indices)} images\n")
    Path(args.out).write_text(header + "".join(f"{i}\n" for i in indices))
    print(f"wrote {len(indices)} indices to {args.out}: classes from {max(counts)} to {min(counts)} images")


if __name__ == "__main__":
    main()
