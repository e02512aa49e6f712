"""Captions: deterministic, derived from the generators' own draws, consistent with the rendered items."""

import colorsys

import numpy as np
import pytest
import torch

from modalities.captions import (CaptionedDataset, colour_name, dataset_captions, folder_captions, hue_name,
                                 shape_caption)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from modalities.image import ShapesDataset

    return ShapesDataset(tmp_path_factory.mktemp("shapes"), 16, 25, 0, 0, (0.3, 0.42))


def test_shape_captions_are_deterministic_and_read_like_the_issue(shapes, tmp_path):
    from modalities.image import ShapesDataset

    caps, attrs = dataset_captions(shapes)
    again = ShapesDataset(tmp_path, 16, 25, 0, 0, (0.3, 0.42))  # regenerated elsewhere
    assert dataset_captions(again)[0] == caps and len(caps) == 100
    assert all(c.startswith("a ") and c.endswith(" background") for c in caps)
    assert shape_caption({"size": "small", "colour": "red", "shape": "triangle", "row": "upper", "column": "left",
                          "background": "dark blue"}) == "a small red triangle in the upper left on a dark blue background"
    assert [a["shape"] for a in attrs] == [p.parent.name for p, _ in shapes.samples]  # item order
    assert len(set(caps)) > 80  # information beyond the class


def test_shape_captions_match_the_rendered_pixels(shapes):
    """Colour word vs the pixel at the drawn centre, background word vs a corner pixel; sizes and
    positions vs the foreground mask of the image."""
    from modalities.image import shape_params  # noqa: F401 -- the replay the captions use

    _, attrs = dataset_captions(shapes)
    fg_ok = bg_ok = 0
    area = {"small": [], "large": []}
    xpos = {"left": [], "right": []}
    for (raw, _), a in zip((shapes[i] for i in range(len(shapes))), attrs):
        img = ((raw + 1) * 127.5).round().clamp(0, 255)  # (3, 16, 16)
        corner = img[:, 0, 0]
        diff = (img - corner[:, None, None]).abs().sum(0) > 60  # foreground mask
        ys, xs = torch.nonzero(diff, as_tuple=True)
        centre = img[:, int(ys.float().mean().round()), int(xs.float().mean().round())]
        fg_ok += colour_name(centre.tolist()) == a["colour"]
        bg_ok += colour_name(corner.tolist(), background=True) == a["background"]
        if a["size"] in area:
            area[a["size"]].append(float(diff.sum()))
        if a["column"] in xpos:
            xpos[a["column"]].append(float(xs.float().mean()))
    n = len(attrs)
    assert fg_ok / n >= 0.9 and bg_ok / n >= 0.9, (fg_ok, bg_ok)
    assert np.mean(area["large"]) > np.mean(area["small"]) + 10
    assert np.mean(xpos["right"]) > np.mean(xpos["left"]) + 1


def test_colour_names():
    assert hue_name(0.0) == "red" and hue_name(0.99) == "red" and hue_name(1 / 3) == "green"
    assert colour_name((250, 40, 40)) == "red" and colour_name((240, 240, 235)) == "white"
    assert colour_name((5, 5, 5), background=True) == "black" and colour_name((10, 10, 80), background=True) == "dark blue"


@pytest.mark.slow
def test_digit_captions_match_the_clips(tmp_path):
    from app.prompt_metrics import direction_rule, sprite_colour_rule
    from modalities.video import MovingDigitsDataset

    ds = MovingDigitsDataset(clips_per_class=3, heldout_per_class=0, root=str(tmp_path))
    caps, attrs = dataset_captions(ds)
    assert caps == dataset_captions(ds)[0]
    assert caps[0].startswith("a ") and " digit 0 moving " in caps[0]
    clips = torch.stack([ds[i][0] for i in range(len(ds))])
    directions, colours = direction_rule(clips), sprite_colour_rule(clips)
    assert [a["digit"] for a in attrs] == [str(label) for label in ds.labels]
    assert np.mean([d == a["direction"] for d, a in zip(directions, attrs)]) >= 0.8
    assert np.mean([c == a["colour"] for c, a in zip(colours, attrs)]) >= 0.9


@pytest.mark.slow
def test_instrument_captions_replay_the_exact_files(tmp_path):
    from modalities.audio import SynthInstrumentsDataset

    ds = SynthInstrumentsDataset(clips_per_class=3, heldout_per_class=2, root=str(tmp_path))
    caps, attrs = dataset_captions(ds)  # raises unless a replayed draw reproduces every file byte for byte
    assert caps == dataset_captions(ds)[0] and len(caps) == 18
    assert {a["instrument"] for a in attrs} == {p.parent.name for p, _ in ds.items}
    assert all(("single" in c) == (a["notes"] == 1) for c, a in zip(caps, attrs))
    held = ds.reference_dataset()  # a split that may re-draw clips (attempt > 0) still replays
    assert len(dataset_captions(held)[0]) == len(held)


def _folder(tmp_path):
    from PIL import Image

    from modalities.image import ImageFolderDataset

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(tmp_path / cls / f"{i}.png")
    return ImageFolderDataset(tmp_path, image_size=8)


def test_folder_captions_from_sidecars_and_csv(tmp_path):
    ds = _folder(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"no caption for .*0\.png: write .*0\.txt"):
        folder_captions(ds)
    for p, _ in ds.samples:
        p.with_suffix(".txt").write_text(f"  a picture\nof {p.parent.name}{p.stem} \n")
    assert folder_captions(ds) == ["a picture of a0", "a picture of a1", "a picture of b0", "a picture of b1"]
    csv = tmp_path / "caps.csv"
    csv.write_text("file,text\na/0.png,zero\na/1.png,one\nb/0.png,two\nb/1.png,three\n")
    assert folder_captions(ds, str(csv), "file", "text") == ["zero", "one", "two", "three"]
    with pytest.raises(ValueError, match="no column 'caption'"):
        folder_captions(ds, str(csv), "file", "caption")
    csv.write_text("file,text\na/0.png,zero\n")
    with pytest.raises(ValueError, match="no caption for a/1.png"):
        folder_captions(ds, str(csv), "file", "text")


def test_captioned_dataset_yields_encoded_captions_and_reads_through(shapes):
    caps, attrs = dataset_captions(shapes)
    enc = torch.arange(len(caps))[:, None].repeat(1, 3)
    ds = CaptionedDataset(shapes, caps, enc, attrs)
    raw, y = ds[7]
    assert torch.equal(raw, shapes[7][0]) and torch.equal(y, enc[7])
    assert ds.num_classes == 4 and ds.root == shapes.root and len(ds) == len(shapes)
