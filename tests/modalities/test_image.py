import json

import numpy as np
import pytest
import torch
from PIL import Image

from modalities.image import (ImageFolderDataset, ImageGridWriter, PixelPatchTokenizer, ShapesDataset, load_image,
                              to_uint8)


@pytest.mark.parametrize("size,patch,channels", [(32, 4, 3), (32, 2, 4), (16, 8, 3)])
def test_patch_tokenizer_round_trip_and_layout(size, patch, channels):
    tok = PixelPatchTokenizer(size, channels, patch)
    x = torch.randn(2, channels, size, size)
    tokens = tok.encode(x)
    grid = size // patch
    assert tokens.shape == (2, grid * grid, channels * patch * patch) and tok.token_dim == tokens.shape[-1]
    assert torch.equal(tok.decode(tokens), x)
    # token k is patch (k // grid, k % grid), flattened in (c, p1, p2) order
    k = grid + 1
    expected = x[0, :, patch:2 * patch, patch:2 * patch].reshape(-1)
    assert torch.equal(tokens[0, k], expected)
    coords = tok.coords()
    assert coords.shape == (grid * grid, 3) and coords[:, 0].eq(0).all()
    assert coords[k].tolist() == [0, 1, 1] and coords[-1].tolist() == [0, grid - 1, grid - 1]


def test_tokenizer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        PixelPatchTokenizer(30, 3, 4)
    with pytest.raises(ValueError, match="expected images"):
        PixelPatchTokenizer(32, 3, 4).encode(torch.zeros(1, 3, 16, 16))


def test_shapes_are_deterministic_and_verified(tmp_path):
    a = ShapesDataset(tmp_path / "a", image_size=16, per_class=3, seed=1)
    b = ShapesDataset(tmp_path / "b", image_size=16, per_class=3, seed=1)
    assert len(a) == 12 and a.num_classes == 4 and a.class_names == sorted(["circle", "square", "triangle", "cross"])
    for (pa, la), (pb, lb) in zip(a.samples, b.samples):
        assert pa.read_bytes() == pb.read_bytes() and la == lb
    x, y = a[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 and x.std() > 0.1
    # damage the cache: the dataset notices and regenerates identical files
    victim = a.samples[5][0]
    victim.write_bytes(b"garbage")
    c = ShapesDataset(tmp_path / "a", image_size=16, per_class=3, seed=1)
    assert c.samples[5][0].read_bytes() == b.samples[5][0].read_bytes()
    other_seed = ShapesDataset(tmp_path / "a", image_size=16, per_class=3, seed=2)
    assert other_seed.samples[0][0].read_bytes() != a.samples[0][0].read_bytes()


def test_shape_classes_differ_visibly(tmp_path):
    ds = ShapesDataset(tmp_path, image_size=32, per_class=20, seed=0)
    # fraction of foreground pixels differs by class (a square fills more than a cross)
    fill = {}
    for x, y in (ds[i] for i in range(len(ds))):
        lum = x.mean(0)
        fill.setdefault(y, []).append(float((lum > lum.mean()).float().mean()))
    means = sorted(np.mean(v) for v in fill.values())
    assert means[-1] - means[0] > 0.03


def _folder(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_image_folder_skips_corrupt_files_and_reports_them(tmp_path):
    root = _folder(tmp_path)
    good = (root / "cats" / "0.png").read_bytes()
    (root / "cats" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dogs" / "notes.png").write_text("this is not an image")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    ds = ImageFolderDataset(root, image_size=32)
    assert len(ds) == 6 and ds.class_names == ["cats", "dogs"]
    skipped = {p.split("/")[-1] for p, _ in ds.skipped}
    assert skipped == {"truncated.png", "notes.png", "empty.jpg"}
    x, label = ds[0]
    assert x.shape == (3, 32, 32) and label == 0


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_text("nope")
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolderDataset(tmp_path / "bad")


def test_load_image_resizes_shorter_side_and_centre_crops(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255  # bright centre band
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 10)
    assert x.shape == (3, 10, 10) and x.mean() > 0.9  # the crop kept the bright centre


def test_grid_writer_and_uint8_quantisation(tmp_path):
    x = torch.linspace(-1, 1, 4 * 3 * 8 * 8).view(4, 3, 8, 8)
    out = ImageGridWriter(nrow=2, padding=0).write(x, None, tmp_path, "s")
    img = np.asarray(Image.open(out["grid"]))
    assert img.shape == (16, 16, 3)
    assert np.array_equal(img[:8, :8].transpose(2, 0, 1), to_uint8(x[0]).numpy())
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]


def _foreground_fraction(ds) -> float:
    """Mean fraction of pixels brighter than the background can be (backgrounds are < 96/255)."""
    return float(np.mean([float(((x + 1) * 127.5).amax(0).gt(112).float().mean()) for x, _ in (ds[i] for i in range(len(ds)))]))


def test_shape_radius_option_makes_larger_shapes_and_its_own_cache(tmp_path):
    default = ShapesDataset(tmp_path, image_size=16, per_class=10, seed=3)
    large = ShapesDataset(tmp_path, image_size=16, per_class=10, seed=3, radius=[0.3, 0.42])
    assert default.root != large.root and default.root.name == "shapes16-n10-s3"
    assert "radius" not in json.loads((default.root / "manifest.json").read_text())  # old caches stay valid
    assert json.loads((large.root / "manifest.json").read_text())["radius"] == [0.3, 0.42]
    # area grows with the radius squared: (0.36 / 0.26)^2 = 1.9 on average
    assert _foreground_fraction(large) > 1.5 * _foreground_fraction(default)
    with pytest.raises(ValueError, match="modality.dataset.radius"):
        ShapesDataset(tmp_path, image_size=16, per_class=2, seed=3, radius=[0.3, 0.6])
