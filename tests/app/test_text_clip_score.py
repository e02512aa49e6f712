"""``eval.metrics=[clip_score]`` in a text-conditioned run: scored with a local CLIP directory
(``eval.clip_path``), an "unavailable" record without one, refused for label runs."""

import json

import pytest

transformers = pytest.importorskip("transformers")

import run  # noqa: E402
from tiny_hf_models import tiny_clip  # noqa: E402

TEXT = ["conditioning=text", "model=micro", "train=smoke", "sample.num_samples=4", "sample.num_steps=3",
        "modality=image", "modality.dataset.per_class=8", "modality.dataset.heldout_per_class=4", "method=fm",
        "eval.num_samples=6", "eval.metrics=[clip_score]"]


def _records(run_dir):
    return {r["metric"]: r for r in json.loads((run_dir / "eval.json").read_text())}


@pytest.mark.slow
def test_text_run_reports_clip_score_with_real_value(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("SELFFLOW_WEIGHTS_CLIP", raising=False)
    # seed 2: positive cosines for these images and captions, so the values are not all clipped to 0
    clip = tiny_clip(tmp_path / "my-clip", seed=2, image_size=32)  # the 16 x 16 samples are resized to 32
    run.main(compose(TEXT + [f"run_dir={tmp_path / 'run'}", f"eval.clip_path={clip}"]))
    records = _records(tmp_path / "run")
    r = records["clip_score"]
    assert 0.0 < r["value"] <= 100.0 and 0.0 < r["real_value"] <= 100.0 and r["value"] != r["real_value"]
    assert r["n_fake"] == 6 and r["n_real"] == 6 and r["model"] == "my-clip" and r["step"] == 6
    assert "prompt_shape_acc" in records and "fid" not in records  # clip_score is not handed to evals.api

    run.main(compose(TEXT + [f"run_dir={tmp_path / 'bare'}"]))  # no CLIP directory: a record, not a crash
    bare = _records(tmp_path / "bare")["clip_score"]
    assert bare["available"] is False and bare["value"] is None and "eval.clip_path=" in bare["reason"]


def test_clip_score_in_a_label_run_is_one_clear_error(compose, tmp_path):
    cfg = compose(["model=micro", "train=smoke", "eval.metrics=[clip_score]", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(run.ConfigError, match="lists clip_score, .* it needs conditioning=text") as err:
        run.main(cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_real_items_are_the_items_their_prompts_describe(compose):
    from app.build import build
    from app.prompt_metrics import background_rule, shape_colour_rule

    parts = build(compose(TEXT))
    prompts = parts["prompts"]
    x, captions = prompts.real_items(10)
    assert captions == prompts.captions[:10] and x.shape == (10, 3, 16, 16)
    # the network-free readers see, on each item, the colours its own caption names
    attrs = prompts.attributes[:10]
    assert background_rule(x) == [a["background"] for a in attrs]
    assert sum(c == a["colour"] for c, a in zip(shape_colour_rule(x), attrs)) >= 9
    assert prompts.real_items(10_000)[0].shape[0] == len(prompts.captions)  # each item once, no cycling
