"""CLIP score (evals/clip_score.py) on a tiny random CLIPModel saved locally: the value against an
independent computation with the model's own processor and feature functions, resizing and
cropping, video, and the records without weights."""

import json
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from evals.clip_score import ClipScorer, clip_score_record  # noqa: E402
from tiny_hf_models import tiny_clip, tiny_clip_text  # noqa: E402

CAPTIONS = ["a small red triangle", "a large blue circle", "a green cross on a black background", "a white square"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    # seed 3: cosines of both signs on the test images, so the clipping at 0 is exercised
    return tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip", seed=3, image_size=32)


def _images(n, h=32, w=32, seed=0):
    """Images in [-1, 1] whose pixels are exact 8-bit levels (so a uint8 copy is the same image)."""
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return u8.float() / 127.5 - 1, u8


def test_value_is_torchmetrics_clip_score_from_the_models_own_features(clip_dir):
    images, u8 = _images(4)
    record = clip_score_record(clip_dir, images, CAPTIONS, "image")
    # independent: CLIP's processor (already at the model's size: no resize), the tokenizer, the
    # model's feature functions, then torchmetrics' formula
    model = transformers.CLIPModel.from_pretrained(str(clip_dir)).eval()
    proc = transformers.CLIPImageProcessor.from_pretrained(str(clip_dir))
    tok = transformers.AutoTokenizer.from_pretrained(str(clip_dir))
    pixels = proc([im.permute(1, 2, 0).numpy() for im in u8], do_resize=False, do_center_crop=False,
                  return_tensors="pt")["pixel_values"]
    text = tok(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(**text)
    img, txt = [getattr(f, "pooler_output", f) for f in (img, txt)]
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    cos = (img * txt).sum(-1)
    assert (cos > 0).any() and (cos < 0).any()
    expected = (100 * cos).clamp_min(0)
    assert record["value"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert record["n_fake"] == 4 and record["model"] == "tiny-clip" and record["image_size"] == 32
    assert len(record["model_key"]) == 16
    scores = ClipScorer(clip_dir).scores(images, CAPTIONS)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
    assert ((scores >= 0) & (scores <= 100)).all()
    # the prompt matters: the same images against shuffled captions score differently
    assert clip_score_record(clip_dir, images, CAPTIONS[::-1], "image")["value"] != pytest.approx(record["value"])


def test_resize_to_the_model_size_and_centre_crop(clip_dir):
    scorer = ClipScorer(clip_dir)
    flat = torch.tensor([0.6, -0.2, 0.1]).view(1, 3, 1, 1)
    small, large = flat.expand(1, 3, 32, 32), flat.expand(1, 3, 64, 64)  # resizing a flat image keeps it
    torch.testing.assert_close(scorer.scores(large, CAPTIONS[:1]), scorer.scores(small, CAPTIONS[:1]),
                               rtol=0, atol=1e-4)
    images, _ = _images(2, seed=1)
    wide = torch.full((2, 3, 32, 48), -1.0)
    wide[..., 8:40] = images  # short side already 32: only the centre 32 x 32 is seen
    torch.testing.assert_close(scorer.scores(wide, CAPTIONS[:2]), scorer.scores(images, CAPTIONS[:2]),
                               rtol=0, atol=1e-3)
    assert scorer.prepare(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 32, 32)


def test_video_is_the_mean_over_frames_of_the_frame_scores(clip_dir):
    scorer = ClipScorer(clip_dir)
    frames, _ = _images(6, seed=2)
    clips = frames.view(2, 3, 3, 32, 32)
    per_frame = scorer.scores(frames, [CAPTIONS[0]] * 3 + [CAPTIONS[1]] * 3).view(2, 3)
    torch.testing.assert_close(scorer.scores(clips, CAPTIONS[:2]), per_frame.mean(1), rtol=0, atol=1e-4)
    record = clip_score_record(clip_dir, clips, CAPTIONS[:2], "video",
                               real=lambda: (clips.flip(0), CAPTIONS[1::-1]))
    assert record["real_value"] == pytest.approx(record["value"], abs=1e-4) and record["n_real"] == 2


def test_without_weights_or_for_audio_the_record_says_why(clip_dir, tmp_path):
    images, _ = _images(2)
    never = lambda: pytest.fail("real items loaded although no score can be computed")  # noqa: E731
    none = clip_score_record(None, images, CAPTIONS[:2], "image", real=never)
    assert none["available"] is False and none["value"] is None and "eval.clip_path=" in none["reason"]
    gone = clip_score_record(tmp_path / "nope", images, CAPTIONS[:2], "image", real=never)
    assert "nope does not exist (eval.clip_path)" in gone["reason"] and "\n" not in gone["reason"]
    partial = shutil.copytree(clip_dir, tmp_path / "partial")
    (partial / "model.safetensors").unlink()
    assert "model.safetensors is missing" in clip_score_record(partial, images, CAPTIONS[:2], "image")["reason"]
    text_only = tiny_clip_text(tmp_path / "text-only")
    reason = clip_score_record(text_only, images, CAPTIONS[:2], "image")["reason"]
    assert "model_type 'clip_text_model'" in reason and "full CLIP model" in reason
    audio = clip_score_record(clip_dir, torch.zeros(2, 1, 800), CAPTIONS[:2], "audio", real=never)
    assert audio["available"] is False and "CLAP" in audio["reason"]
    assert json.loads((clip_dir / "config.json").read_text())["model_type"] == "clip"


def test_real_items_give_real_value(clip_dir):
    images, _ = _images(4, seed=3)
    record = clip_score_record(clip_dir, images[:2], CAPTIONS[:2], "image", real=lambda: (images, CAPTIONS))
    expected = ClipScorer(clip_dir).scores(images, CAPTIONS).mean()
    assert record["real_value"] == pytest.approx(float(expected), abs=1e-5) and record["n_real"] == 4
    reuse = clip_score_record(clip_dir, images[:2], CAPTIONS[:2], "image", known_real=(12.5, 7),
                              real=lambda: pytest.fail("recomputed"))
    assert (reuse["real_value"], reuse["n_real"]) == (12.5, 7)
    assert np.isfinite(record["std"])
