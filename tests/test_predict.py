"""predict.py: class names and probabilities for real image files of any size, resized and normalised as the
checkpoint's data record says; a folder gives every PNG and JPEG under it; bad input is one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from omegaconf import OmegaConf
from PIL import Image

from checkpoint import save_torch
from conftest import ROOT
from config import load_config
from models import build_model

CLASSES = [f"kind{i}" for i in range(10)]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture
def checkpoint(tmp_path):
    """A released-style file: a ResNet-32's weights, its config and its data record."""
    cfg = load_config([str(ROOT / "configs.yaml")], ["MODEL.name", "resnet32", "TRAIN.wandb.use", "false"])
    torch.manual_seed(0)
    model, _ = build_model("resnet32", 10, False, 32)
    path = tmp_path / "model.pt"
    save_torch({"model": model.state_dict(), "epoch": 3, "config": OmegaConf.to_container(cfg),
                "data": {"num_per_cls": [5] * 10, "classes": CLASSES, "mean": MEAN, "std": STD, "img_size": 32}}, path)
    return path, model.eval()


def _photos(folder):
    """A PNG of 70x50 with an alpha channel, a JPEG of 300x200 and a 32x32 PNG, in a folder with a subfolder."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    paths = [folder / "wide.png", folder / "sub" / "photo.JPG", folder / "small.png"]
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(paths[0])
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(paths[1], quality=90)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[2])
    (folder / "notes.txt").write_text("not an image")
    return paths


def _expected(model, path) -> list[tuple[str, float]]:
    """The top-3 classes as computed here: shorter side to 32, the centre 32x32, normalised by the record."""
    with Image.open(path) as image:
        image = F.center_crop(F.resize(image.convert("RGB"), 32), 32)
    x = F.normalize(F.to_tensor(image), MEAN, STD)[None]
    with torch.no_grad():
        values, indices = model(x).softmax(1).topk(3)
    return [(CLASSES[i], round(v, 3)) for v, i in zip(values[0].tolist(), indices[0].tolist())]


def _printed(out: str) -> list[tuple[str, list[tuple[str, float]]]]:
    lines = []
    for line in out.strip().splitlines():
        name, _, rest = line.rpartition(": ")
        lines.append((name, [(word.split()[0], float(word.split()[1])) for word in rest.split(", ")]))
    return lines


def test_predict_names_classes_and_probabilities_for_images_of_any_size(checkpoint, tmp_path, capsys):
    import predict

    path, model = checkpoint
    photos = _photos(tmp_path / "photos")
    predict.main([str(path), str(tmp_path / "photos"), str(photos[2])])  # a folder and a file
    lines = _printed(capsys.readouterr().out)
    assert [name for name, _ in lines] == [str(photos[2]), str(photos[1]), str(photos[0]), str(photos[2])]  # no .txt
    printed = dict(lines)
    for photo in photos:
        assert printed[str(photo)] == pytest.approx(_expected(model, photo), abs=1e-3)
    # a 32x32 image is the model's input as it is
    x = F.normalize(F.to_tensor(Image.open(photos[2])), MEAN, STD)[None]
    with torch.no_grad():
        best = model(x).softmax(1).max(1)
    assert printed[str(photos[2])][0] == (CLASSES[best.indices.item()], pytest.approx(best.values.item(), abs=1e-3))


@pytest.mark.parametrize("make, named", [
    (lambda tmp: (tmp / "broken.png").write_bytes(b"\x89PNG not really") and tmp / "broken.png", "is not an image"),
    (lambda tmp: tmp / "nowhere.png", "is neither an image file nor a folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "holds no PNG or JPEG file"),
])
def test_bad_images_are_one_line(checkpoint, tmp_path, make, named):
    import predict

    with pytest.raises(SystemExit) as info:
        predict.main([str(checkpoint[0]), str(make(tmp_path))])
    assert named in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_without_its_data_record_names_the_fix(checkpoint, tmp_path):
    import predict

    state = torch.load(checkpoint[0], weights_only=True)
    del state["data"]
    save_torch(state, tmp_path / "old.pt")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SystemExit, match="holds no data record .*tools/release.py"):
        predict.main([str(tmp_path / "old.pt"), str(tmp_path / "a.png")])
