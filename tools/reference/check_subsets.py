"""Check that LDAM-DRW's and BALMS's own data set classes draw exactly the images of our subset file.

    PYTHONPATH=tools/reference python tools/reference/check_subsets.py LDAM_DIR BALMS_DIR DATA SUBSET --seed S

DATA holds cifar-10-batches-py; SUBSET is what tools/ldam_subset.py wrote for CIFAR-10-LT IF 100 and seed S.
LDAM-DRW draws with --rand_number S; BALMS, which seeds nothing, with NumPy seeded S at start-up
(REF_NUMPY_SEED, sitecustomize.py). Prints one line per codebase and exits 1 on a mismatch.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from datasets import CIFAR10LT  # noqa: E402


def images(data, targets) -> list[tuple[int, bytes]]:
    return sorted((int(t), d.tobytes()) for d, t in zip(data, targets))


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("ldam_dir", "balms_dir", "data", "subset"):
        parser.add_argument(name)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ours = CIFAR10LT(args.data, split="train", subset=args.subset)
    expected = images(ours.data, ours.targets)
    sys.path.insert(0, args.ldam_dir)
    from imbalance_cifar import IMBALANCECIFAR10 as LDAM  # noqa: E402
    ldam = LDAM(root=args.data, imb_type="exp", imb_factor=0.01, rand_number=args.seed, train=True)
    sys.path.insert(0, args.balms_dir)
    os.chdir(args.balms_dir)  # BALMS writes its class-count file under the working directory
    from data.ImbalanceCIFAR import IMBALANCECIFAR10 as BALMS  # noqa: E402
    np.random.seed(args.seed)
    balms = BALMS("train", imbalance_ratio=100, root=args.data)
    ok = True
    for name, theirs in (("LDAM-DRW", ldam), ("BALMS", balms)):
        same = images(theirs.data, theirs.targets) == expected
        ok &= same
        print(f"{name}: {len(theirs.data)} images, {'the same' if same else 'NOT the same'} as {args.subset} "
              f"({len(expected)} images)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
