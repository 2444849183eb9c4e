"""Class names and probabilities for image files: `python predict.py CHECKPOINT IMAGE_OR_FOLDER... [--top K]`.

CHECKPOINT is a run's checkpoint (model-seed0-best.pt) or a released file of weights/; each image (PNG or JPEG, any
size; a folder gives every such file under it) is resized as the checkpoint's data record says: its shorter side to
the model's image side and the centre square kept, as ImageFolderLT prepares its images (the list benchmarks: to
256/224 of that side first, as their evaluation crops). Each line names the file and its K most probable classes.
The probabilities are the softmax of the model's logits, which under Balanced Softmax or logit adjustment already
answer for a balanced test set (the training prior is added to the logits in training only).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision.transforms as T
from accelerate import Accelerator
from PIL import Image

from checkpoint import load_checkpoint
from config import with_defaults
from datasets import LIST_DATASETS
from datasets.list_loaders import eval_side
from errors import ConfigError
from models import build_model
from runtime import cpu_only
from stage2 import Stage2Model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCH = 256  # images per forward pass


def image_files(paths: list[Path]) -> list[Path]:
    """The files that `paths` name: each file as given, and every PNG or JPEG under each folder, sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not inside:
                raise ConfigError(f"{path} holds no PNG or JPEG file")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path} is neither an image file nor a folder")
    return found


def load_model(path: Path) -> tuple[torch.nn.Module, dict, str]:
    """The checkpoint's model in eval mode, its data record (classes, mean, std, img_size) and its DATASET.name."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(f"{path} is not a checkpoint written by main.py (it lacks 'model' and 'config')")
    if not state.get("data"):
        raise ConfigError(f"{path} holds no data record (class names, normalisation, image side), as checkpoints "
                          "written before it lack: write one with `python tools/release.py RUN_FOLDER --out FILE.pt`")
    cfg = with_defaults(state["config"], Path(__file__).resolve().parent / "configs.yaml")
    data = state["data"]
    model, note = build_model(cfg.MODEL.name, len(data["classes"]), False, data["img_size"],
                              classifier=cfg.MODEL.classifier)
    if cfg.TRAIN.stage2_from is not None:  # a stage-2 checkpoint holds the frozen parts and its own classifier
        model = Stage2Model(model, cfg.TRAIN.stage2_classifier)
    model.load_state_dict(state["model"])
    return model.eval(), data, cfg.DATASET.name


def read_image(path: Path, transform) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return transform(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ConfigError(f"{path} is not an image PIL can read ({' '.join(str(error).split())[:80]})") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by main.py, or a file of weights/")
    parser.add_argument("images", type=Path, nargs="+", help="image files (PNG, JPEG) or folders of them")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list per image (default 3)")
    args = parser.parse_args(argv)
    try:
        if args.top < 1:
            raise ConfigError(f"--top must be >= 1, got {args.top}")
        model, data, dataset = load_model(args.checkpoint)
        files = image_files(args.images)
        side = data["img_size"]
        resize = eval_side(side) if dataset in LIST_DATASETS else side
        transform = T.Compose([T.Resize(resize), T.CenterCrop(side), T.ToTensor(),
                               T.Normalize(data["mean"], data["std"])])
        accelerator = Accelerator(cpu=cpu_only())
        model = accelerator.prepare(model)
        top = min(args.top, len(data["classes"]))
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            images = torch.stack([read_image(path, transform) for path in batch]).to(accelerator.device)
            with torch.no_grad():
                probabilities = model(images).float().softmax(dim=1)
            values, indices = probabilities.topk(top, dim=1)
            for path, p, i in zip(batch, values.tolist(), indices.tolist()):
                print(f"{path}: " + ", ".join(f"{data['classes'][c]} {v:.3f}" for c, v in zip(i, p)))
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
