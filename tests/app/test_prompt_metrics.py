"""Prompt adherence: readers scored on real held-out items reproduce their ceiling; wrong prompts score low."""

import random

import pytest
import torch

from app.prompt_metrics import prompt_adherence, register_rule
from modalities.captions import embedded_attributes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from modalities.image import ShapesDataset

    return ShapesDataset(tmp_path_factory.mktemp("shapes"), 16, 20, 0, 10, (0.3, 0.42))


def test_real_items_against_their_own_prompts_score_the_ceiling(shapes, tmp_path):
    ref = shapes.reference_dataset()
    real = torch.stack([ref[i][0] for i in range(len(ref))])
    attrs = embedded_attributes(ref)
    records = {r["metric"]: r for r in prompt_adherence(real, shapes, attrs, cache_dir=tmp_path)}
    assert set(records) == {"prompt_shape_acc", "prompt_colour_acc", "prompt_background_acc", "prompt_all_acc"}
    for name in ("prompt_shape_acc", "prompt_colour_acc", "prompt_background_acc"):
        assert records[name]["value"] == records[name]["real_value"] >= 0.9, name
    random.Random(0).shuffle(attrs)  # the same images, someone else's prompts
    shuffled = {r["metric"]: r["value"] for r in prompt_adherence(real, shapes, attrs, cache_dir=tmp_path)}
    assert shuffled["prompt_colour_acc"] < 0.5 and shuffled["prompt_all_acc"] < 0.2


def test_a_prompt_count_mismatch_is_reported_not_raised(shapes, tmp_path):
    out = prompt_adherence(torch.zeros(3, 3, 16, 16), shapes, [{}], cache_dir=tmp_path)
    assert out[0]["value"] is None and "1 prompts for 3 samples" in out[0]["reason"]


def test_register_rule_reads_pure_tones_relative_to_the_instrument():
    sr, t = 16000, torch.arange(16000) / 16000
    tone = lambda midi: torch.sin(2 * torch.pi * 440 * 2 ** ((midi - 69) / 12) * t)  # noqa: E731
    waves = torch.stack([tone(48 + 1), tone(48 + 11), tone(48 + 20), tone(72 + 2)])
    targets = [{"instrument": "organ"}] * 3 + [{"instrument": "flute"}]
    assert register_rule(waves, targets, sr) == ["low", "middle", "high", "low"]
