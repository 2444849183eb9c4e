"""Data-path speed for the list benchmarks (ImageNet-LT and the others), classic against fast, on this machine:
`python tools/bench_list_data.py [--images 1024] [--workers 2] [--device cpu]`.

It writes `--images` generated JPEGs of ImageNet's typical size (about 400x350; each a smooth colour field under
noise, ~60 KB at quality 90, near ImageNet's mean file size) and an ImageNet-LT-format train list, then times the
loaders that main.py builds for DATASET.name ImageNetLT (datasets.list_loaders.list_loaders), batch --batch-size,
crops of 224:

- classic: PIL decode, RandomResizedCrop, flip, ToTensor, Normalize per image in --workers DataLoader workers;
- fast: the one-time decode into the uint8 cache (timed apart), then batches that --workers workers read from it,
  cropped, resized and flipped in uint8, and normalised on --device;

and, in this process on one thread, what each image costs: PIL decode alone, torchvision.io.decode_jpeg alone (one
image at a time, and a list at once: the batched call, which on a GPU decodes on the device), the classic
per-image transform, the fast path's work in a worker and its normalisation on the device, and an alternative
fast path measured and not taken: the crop and resize of a whole batch of cached rows in one
torchvision.ops.roi_align on --device. No model runs: the figures are what the data path can feed. The last line
printed is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_config  # noqa: E402
from datasets import build_loaders, build_splits  # noqa: E402
from datasets.list_loaders import (CachedLoader, cache_side, ensure_cache, random_boxes,  # noqa: E402
                                   train_transform)
from torchvision.ops import roi_align  # noqa: E402


def write_images(root: Path, count: int, classes: int, seed: int = 0) -> None:
    """`count` JPEGs of about 400x350 (each side drawn within +-15%) and ImageNet_LT_{train,val,test}.txt."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        w, h = int(400 * rng.uniform(0.85, 1.15)), int(350 * rng.uniform(0.85, 1.15))
        y, x = np.mgrid[0:h, 0:w]
        field = np.stack([np.sin(x / rng.uniform(20, 80) + c) * np.cos(y / rng.uniform(20, 80) + 2 * c)
                          for c in range(3)], -1)
        pixels = 128 + 80 * field + rng.normal(0, 14, (h, w, 3))
        relative = f"train/c{i % classes:03d}/{i:06d}.JPEG"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / relative, quality=90)
        lines.append(f"{relative} {i % classes}")
    for split in ("train", "val", "test"):
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")


def rate(run, seconds: float, warmup: int = 1) -> float:
    """Images per second of `run()` (which returns the images it handled), repeated for at least `seconds`."""
    for _ in range(warmup):
        run()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += run()
    return done / (time.perf_counter() - start)


def loader_rate(loader, seconds: float, device: torch.device) -> float:
    """Images per second that a training loader yields (a fresh pass whenever one ends), first batch untimed."""
    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch) if hasattr(loader, "set_epoch") else None
            yield from loader
            epoch += 1

    stream = batches()
    next(stream)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(stream)
        images = images.to(device)
        done += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="generated JPEGs")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=224, help="crop side (DATASET.img_size)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both loaders")
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget of each measurement")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dir", default=None, help="where to write the images and the cache (default: a temp dir)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)  # the in-process measurements are per core; the loaders' workers run beside

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.dir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "ImageNet_LT_train.txt").is_file():
            write_images(root, args.images, args.classes)
        files = sorted(root.glob("train/*/*.JPEG"))[: args.images]
        results = {"images": len(files), "mean_jpeg_kb": sum(f.stat().st_size for f in files) / len(files) / 1e3}

        # --- one thread, in this process: what an image costs
        raw = [torchvision.io.read_file(str(f)) for f in files[:64]]

        def pil_decode():
            for f in files[:64]:
                with Image.open(f) as image:
                    image.convert("RGB").load()
            return 64

        results["pil_decode_img_s"] = rate(pil_decode, args.seconds / 4)
        results["decode_jpeg_img_s"] = rate(lambda: sum(1 for r in raw if torchvision.io.decode_jpeg(r) is not None),
                                            args.seconds / 4)
        results["decode_jpeg_list_img_s"] = rate(lambda: len(torchvision.io.decode_jpeg(raw, device=device)),
                                                 args.seconds / 4)
        transform = train_transform(["RandomResizedCrop", "RandomHorizontalFlip"], args.size, (0.485, 0.456, 0.406),
                                    (0.229, 0.224, 0.225))

        def classic_one_thread():
            for f in files[:64]:
                with Image.open(f) as image:
                    transform(image.convert("RGB"))
            return 64

        results["classic_transform_1thread_img_s"] = rate(classic_one_thread, args.seconds / 2)

        # --- the loaders main.py builds
        overrides = ["DATASET.name", "ImageNetLT", "DATASET.datadir", str(root), "DATASET.strict_sizes", "false",
                     "DATASET.img_size", str(args.size),
                     "DATASET.aug_info", "[RandomResizedCrop, RandomHorizontalFlip]",
                     "DATASET.num_workers", str(args.workers), "DATASET.batch_size", str(args.batch_size),
                     "DATASET.test_batch_size", str(args.batch_size)]
        process = SimpleNamespace(num_processes=1, process_index=0, device=device, gradient_accumulation_steps=1,
                                  local_main_process_first=contextlib.nullcontext, print=lambda *a: None)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the generated lists are not the published sizes
            cfg = load_config(Path(__file__).resolve().parents[1] / "configs.yaml",
                              overrides + ["DATASET.loader", "classic"])
            splits = build_splits(cfg.DATASET, 0)
        classic = build_loaders(cfg.DATASET, splits, 0, process)["train"]
        results["classic_loader_img_s"] = loader_rate(classic, args.seconds, device)
        del classic

        side, cache_dir = cache_side(args.size), root / "cache"
        for stale in cache_dir.glob("*"):
            stale.unlink()
        start = time.perf_counter()
        path = ensure_cache(splits["train"], cache_dir, side, threads=args.workers, log=lambda *a: None)
        results["cache_build_img_s"] = len(splits["train"]) / (time.perf_counter() - start)
        results["cache_mb_per_image"] = side * side * 3 / 1e6
        fast = CachedLoader(path, splits["train"].targets, args.batch_size, args.size, (0.485, 0.456, 0.406),
                            (0.229, 0.224, 0.225), device=device, train=True, crop=True, flip=True,
                            num_workers=args.workers)
        results["fast_loader_img_s"] = loader_rate(fast, args.seconds, device)
        results["fast_worker_1thread_img_s"] = rate(lambda: len(fast.crops[0, 0][0]), args.seconds / 2)
        crops = fast.crops[0, 0][0]
        results["fast_normalise_1thread_img_s"] = rate(lambda: len(fast.normalise(crops)), args.seconds / 4)
        rows = torch.from_numpy(np.load(path, mmap_mode="r")[: args.batch_size].copy()).to(device)
        boxes = random_boxes(len(rows), side, torch.Generator().manual_seed(0))
        boxes = torch.cat([torch.arange(len(rows), dtype=torch.float32)[:, None], boxes], 1).to(device)

        def roi_align_crops():  # the alternative: uint8 rows to float, then crop and resize all at once
            out = roi_align(rows.permute(0, 3, 1, 2).float(), boxes, args.size, 1.0, -1, True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return len(out)

        results["alt_roi_align_1thread_img_s"] = rate(roi_align_crops, args.seconds / 4)

    results["fast_over_classic"] = results["fast_loader_img_s"] / results["classic_loader_img_s"]
    results.update(cpu=cpu_name(), workers=args.workers, device=str(device), torch=torch.__version__,
                   torchvision=torchvision.__version__, batch_size=args.batch_size, size=args.size)
    for key, value in results.items():
        print(f"{key}: {value:,.1f}" if isinstance(value, float) else f"{key}: {value}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
