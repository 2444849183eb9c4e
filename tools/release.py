"""Write a run's selected (or last) weights as one self-contained file to publish:
`python tools/release.py RUN_FOLDER --out weights/NAME.pt [--seed 0] [--last]`.

The file holds the model's weights, the run's config and what evaluation needs as plain data (the training class
counts, class names, normalisation and image side, as main.py's checkpoints hold them), and the test scores the run
measured, without the optimizer state of a last checkpoint. `python evaluate.py weights/NAME.pt DATASET.datadir DIR` then needs the test images alone:
no training images, no subset file, no run folder. Its sha256 is printed for the README's table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from checkpoint import load_checkpoint, output_paths, save_torch, sha256  # noqa: E402


def release(folder: Path, seed: int, last: bool) -> dict:
    """The release record of seed `seed` of the finished run in `folder`."""
    paths = output_paths(folder, seed)
    for kind in ("results", "class_counts", "last" if last else "best"):
        if not paths[kind].is_file():
            sys.exit(f"error: {paths[kind]} is missing: pass the folder of a finished main.py run")
    state = load_checkpoint(paths["last" if last else "best"])
    with open(paths["results"]) as f:
        results = json.load(f)
    with open(paths["class_counts"]) as f:
        counts = json.load(f)
    config = state["config"]
    # checkpoints hold "data" as plain data; those written before they did get it from the run folder's class counts
    data = state.get("data") or {"num_per_cls": counts["num_per_cls"], "classes": counts["classes"],
                                 "mean": counts["mean"], "std": counts["std"],
                                 "img_size": config["DATASET"]["img_size"]}
    test = results["test_last_epoch"] if last else results["test"]
    return {"model": state["model"], "epoch": state["epoch"], "config": config, "data": data,
            "stage1": state.get("stage1"),
            "released": {"selected_by": "last epoch" if last else results["selected_by"], "epochs": results["epochs"],
                         "test": {key: test[key] for key in ("bcr", "acc") if key in test},
                         "ran_on": results.get("ran_on")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a finished run folder written by main.py")
    parser.add_argument("--out", type=Path, required=True, help="the file to write, e.g. weights/ce.pt")
    parser.add_argument("--seed", type=int, default=0, help="which seed of the run folder (default 0)")
    parser.add_argument("--last", action="store_true", help="the last epoch's weights instead of the selected ones")
    args = parser.parse_args(argv)
    if args.out.exists():
        sys.exit(f"error: {args.out} exists: remove it first or pick another --out")
    record = release(args.folder, args.seed, args.last)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_torch(record, args.out)
    digest = sha256(args.out)
    print(f"{args.out}: epoch {record['epoch']} ({record['released']['selected_by']}), test bcr "
          f"{100 * record['released']['test']['bcr']:.2f}, sha256 {digest}")


if __name__ == "__main__":
    main()
