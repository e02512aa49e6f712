"""conditioning=text end to end: short runs per modality and method, sampling from a prompt file,
the pretrained encoder's missing files."""

import json
from pathlib import Path

import pytest
import torch

import run
from app.config import ConfigError
from core.checkpoint import load_checkpoint

TEXT = ["conditioning=text", "model=micro", "train=smoke", "sample.num_samples=4", "sample.num_steps=3"]
DATA = {"image": ["modality.dataset.per_class=8", "modality.dataset.heldout_per_class=4"],
        "video": ["modality.dataset.clips_per_class=2", "modality.dataset.heldout_per_class=1"],
        "audio": ["modality.dataset.clips_per_class=2", "modality.dataset.heldout_per_class=1"]}


def _run(compose, tmp_path, modality, extra=()):
    cfg = compose(TEXT + DATA[modality] + [f"modality={modality}", f"run_dir={tmp_path}", "eval=none", *extra])
    return run.main(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("method,arch", [("fm", "joint"), ("selfflow", "joint"), ("repa_random", "joint"),
                                         ("selfflow", "cross")])
def test_image_text_runs_train_and_sample_from_a_prompt_file(compose, tmp_path, method, arch):
    out = _run(compose, tmp_path / "run", "image", [f"method={method}", f"conditioning.arch={arch}"])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert out["steps"] == 6 and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    state = load_checkpoint(tmp_path / "run")
    text = state["model_config"]["text"]
    assert text["text_arch"] == arch and text["vocab"][:2] == ["<pad>", "<unk>"] and "triangle" in text["vocab"]
    assert (tmp_path / "run" / "samples" / "final_grid.png").is_file()
    shown = (tmp_path / "run" / "samples" / "final_prompts.txt").read_text().splitlines()
    assert len(shown) == 4 and len(set(shown)) == 4  # held-out captions, classes interleaved
    assert f"text (offline encoder, {arch} attention" in (tmp_path / "run" / "report.md").read_text()

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red circle in the centre on a black background\n\na small blue cross\n")
    out = run.main(compose(TEXT + DATA["image"] + [
        "task=sample", f"checkpoint.path={tmp_path / 'run'}", f"sample.prompts={prompts}", "sample.per_prompt=3",
        "sample.cfg_scale=2.0", f"run_dir={tmp_path / 'sample'}", f"conditioning.arch={arch}"]))
    assert out["num_samples"] == 6
    assert (tmp_path / "sample" / "prompts.txt").read_text().splitlines() == \
        ["a large red circle in the centre on a black background"] * 3 + ["a small blue cross"] * 3
    import numpy as np

    with np.load(tmp_path / "sample" / "samples_prompts.npz") as z:
        assert z["samples"].shape == (6, 16, 16, 3) and z["samples"].dtype == np.uint8 and len(z["prompts"]) == 6
    assert (tmp_path / "sample" / "prompts_grid.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_video_and_audio_text_runs(compose, tmp_path, modality):
    out = _run(compose, tmp_path, modality, ["method=selfflow"])
    assert out["steps"] == 6 and (tmp_path / "report.md").is_file()
    caps = load_checkpoint(tmp_path)["model_config"]["text"]["vocab"]
    assert ("digit" in caps) if modality == "video" else ("melody" in caps or "note" in caps)


@pytest.mark.slow
def test_image_text_run_reports_prompt_adherence(compose, tmp_path):
    cfg = compose(TEXT + DATA["image"] + ["modality=image", f"run_dir={tmp_path}", "eval.num_samples=8",
                                          "eval.metrics=[]", "method=fm"])
    run.main(cfg)
    records = {r["metric"]: r for r in json.loads((tmp_path / "eval.json").read_text())}
    for name in ("prompt_shape_acc", "prompt_colour_acc", "prompt_all_acc", "class_acc_shapesnet"):
        assert 0.0 <= records[name]["value"] <= 1.0, name
    assert records["prompt_shape_acc"]["real_value"] > 0.5  # the reader's ceiling on real held-out items


def test_sampling_a_label_checkpoint_with_prompts_is_one_clear_error(compose, tmp_path):
    from app.text_sample import load_text_model

    ck = tmp_path / "label.pt"
    torch.save({"model_config": {"in_channels": 3}, "ema": {}}, ck)
    with pytest.raises(ConfigError, match="not a text-conditioned checkpoint"):
        load_text_model(ck)


def test_missing_prompt_file_is_one_clear_error(tmp_path):
    from app.text_build import read_prompts

    with pytest.raises(FileNotFoundError, match=r"sample.prompts=.*nope.txt: no such file"):
        read_prompts(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="has no prompt"):
        read_prompts(tmp_path / "blank.txt")


def test_missing_pretrained_encoder_files_give_one_line_naming_the_file(tmp_path):
    from core.text.pretrained import check_encoder_dir

    for name, expected in [(None, "conditioning.pretrained_path="), ("absent", "does not exist")]:
        with pytest.raises(FileNotFoundError, match=expected) as err:
            check_encoder_dir(None if name is None else tmp_path / name)
        assert "\n" not in str(err.value)
    d = tmp_path / "clip"
    d.mkdir()
    steps = [("config.json", "config.json is missing"), ("model.safetensors", "model.safetensors"),
             ("tokenizer.json", "tokenizer.json")]
    for i, (_, expected) in enumerate(steps):
        with pytest.raises(FileNotFoundError, match=expected) as err:
            check_encoder_dir(d)
        assert str(d) in str(err.value) and "\n" not in str(err.value)
        (d / steps[i][0]).write_text("{}")
    assert check_encoder_dir(d) == d


def test_pretrained_encoder_through_the_cli_is_one_clear_line(compose, tmp_path):
    cfg = compose(TEXT + DATA["image"] + ["modality=image", f"run_dir={tmp_path / 'run'}", "eval=none",
                                          "conditioning.encoder=pretrained",
                                          f"conditioning.pretrained_path={tmp_path / 'clip'}"])
    with pytest.raises(ConfigError, match=r"text encoder directory .*clip does not exist") as err:
        run.main(cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_a_folder_data_set_with_sidecar_captions_builds_a_text_model(compose, tmp_path):
    from PIL import Image

    from app.build import build

    root = tmp_path / "data"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / cls / f"{i}.png")
            (root / cls / f"{i}.txt").write_text(f"a photo of {cls} number {i}\n")
    cfg = compose(["modality=image_folder", f"modality.dataset.root={root}", "modality.dataset.image_size=8",
                   "modality.dataset.eval_fraction=0.3", "conditioning=text", "model=micro", "model.patch_size=4"])
    parts = build(cfg)
    raw, ids = parts["dataset"][0]
    assert raw.shape == (3, 8, 8) and ids.dtype == torch.long and ids.shape == (24,)
    vocab = parts["model"].vocabulary
    assert vocab.decode(ids).startswith("a photo of ") and "dogs" in vocab.index
    held = parts["base_dataset"].reference_dataset()
    assert held is not None and len(parts["prompts"].captions) == len(held)  # held-out sidecars, through links
    assert all(c.startswith("a photo of") for c in parts["prompts"].captions)
