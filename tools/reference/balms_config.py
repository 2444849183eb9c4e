"""Write a config for the official BALMS code's main.py from its shipped CIFAR-10-LT balanced_softmax config,
changing only what a shortened run on another imbalance factor and a CPU must change:

    python balms_config.py BALMS_DIR --imbalance-factor 100 --epochs 10 --out cfg.yaml [--seed 0]

- cifar_imb_ratio and the class-count file the loss reads (BALMS writes it, named by the factor);
- num_iterations: epochs x ceil(12,406 / 512) = 25 batches (BALMS runs ceil(iterations / batches) epochs);
- warmup_iterations: its 800 of 13,000 scaled alike, but at least 2 epochs' worth, which its scheduler asserts
  (BALMS rounds it up to whole epochs);
- log_dir: one per seed; num_workers: 1 (one core a run).
"""
import argparse
import math
from pathlib import Path

import yaml

SHIPPED = "config/CIFAR10_LT/balanced_softmax_imba200.yaml"
BATCHES = math.ceil(12406 / 512)  # CIFAR-10-LT at IF 100 has 12,406 training images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("balms_dir")
    parser.add_argument("--imbalance-factor", type=int, default=100)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="names the log folder only")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cfg = yaml.safe_load((Path(args.balms_dir) / SHIPPED).read_text())
    train = cfg["training_opt"]
    train["cifar_imb_ratio"] = args.imbalance_factor
    cfg["criterions"]["PerformanceLoss"]["loss_params"]["freq_path"] = (
        f"./cls_freq/CIFAR-10-LT_IMBA{args.imbalance_factor}.json")
    iterations = args.epochs * BATCHES
    train["num_iterations"] = iterations
    cfg["warmup_iterations"] = max(round(cfg["warmup_iterations"] * iterations / 13000), BATCHES + 1)
    train["log_dir"] = (f"./logs/CIFAR10_LT/models/resnet32_balanced_softmax_imba{args.imbalance_factor}_"
                        f"{args.epochs}ep_seed{args.seed}")
    train["num_workers"] = 1
    Path(args.out).write_text(yaml.safe_dump(cfg))


if __name__ == "__main__":
    main()
