"""The pretrained text encoder path (``conditioning.encoder=pretrained``) on tiny random CLIP and T5
text encoders saved locally: loading, the caption cache keyed by content, and short training runs."""

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

import run  # noqa: E402
from core.text.pretrained import PretrainedTextEncoder  # noqa: E402
from tiny_hf_models import tiny_clip, tiny_clip_text, tiny_t5_encoder  # noqa: E402

BUILDERS = {"clip_text": tiny_clip_text, "t5": tiny_t5_encoder, "clip_full": tiny_clip}
TEXT = ["conditioning=text", "model=micro", "train=smoke", "sample.num_samples=4", "sample.num_steps=3",
        "modality=image", "modality.dataset.per_class=8", "modality.dataset.heldout_per_class=4", "eval=none"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_features_are_the_encoders_last_hidden_state_with_the_valid_flag(encoders, tmp_path, name):
    enc = PretrainedTextEncoder(encoders[name], max_len=12, cache_root=tmp_path)
    captions = ["a red cat", "", "a small blue triangle in the upper left"]
    feats = enc.encode(captions)
    assert feats.shape == (3, 12, 1 + 16) and enc.feature_dim == 16
    batch = enc.tokenizer(captions[0], padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model(**batch).last_hidden_state[0]
    n = int(batch["attention_mask"].sum())
    assert 3 < n < 12 and torch.equal(feats[0, :, 0], batch["attention_mask"][0].float())
    torch.testing.assert_close(feats[0, :n, 1:], hidden[:n], rtol=0, atol=1e-6)
    assert feats[0, n:].abs().sum() == 0 and feats[1].abs().sum() == 0  # padding and the empty prompt
    assert feats[2, :, 0].sum() == 12  # a long caption is cut at max_len


def test_cache_is_keyed_by_content_not_location(encoders, tmp_path):
    first = PretrainedTextEncoder(encoders["t5"], max_len=8, cache_root=tmp_path)
    feats = first.encode(["a red cat", "a dog"])
    copy = shutil.copytree(encoders["t5"], tmp_path / "elsewhere" / "t5copy")
    second = PretrainedTextEncoder(copy, max_len=8, cache_root=tmp_path)
    assert second.key == first.key
    second._run = lambda captions: pytest.fail(f"re-encoded {captions} despite identical files")
    assert torch.equal(second.encode(["a dog", "a red cat"]), feats[[1, 0]])
    # other weights (same names, same sizes) or another max_len: another key
    other = tiny_t5_encoder(tmp_path / "other", seed=1)
    assert PretrainedTextEncoder(other, max_len=8, cache_root=tmp_path).key != first.key
    assert PretrainedTextEncoder(copy, max_len=9, cache_root=tmp_path).key != first.key


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip_text", "t5"])
def test_a_few_training_steps_with_a_pretrained_encoder(compose, encoders, tmp_path, name):
    cfg = compose(TEXT + [f"run_dir={tmp_path / 'run'}", "conditioning.encoder=pretrained",
                          f"conditioning.pretrained_path={encoders[name]}", "conditioning.max_len=16"])
    out = run.main(cfg)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert out["steps"] == 6 and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    from core.checkpoint import load_checkpoint

    text = load_checkpoint(tmp_path / "run")["model_config"]["text"]
    assert text["vocab"] is None and text["feature_dim"] == 16 and text["max_text_len"] == 16
    assert text["pretrained_encoder"]["key"] == PretrainedTextEncoder(encoders[name], 16).key
    assert (tmp_path / "run" / "samples" / "final_grid.png").is_file()

    # sampling from a prompt file: the checkpoint remembers its encoder, another one is refused
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red circle\na small blue cross\n")
    sample = TEXT + ["task=sample", f"checkpoint.path={tmp_path / 'run'}", f"sample.prompts={prompts}",
                     "sample.per_prompt=2", "sample.cfg_scale=2.0"]
    out = run.main(compose(sample + [f"run_dir={tmp_path / 'sample'}"]))
    assert out["num_samples"] == 4 and (tmp_path / "sample" / "prompts_grid.png").is_file()
    other = "clip_text" if name == "t5" else "t5"
    with pytest.raises(run.ConfigError, match="holds another text encoder than the checkpoint") as err:
        run.main(compose(sample + [f"run_dir={tmp_path / 'sample2'}",
                                   f"conditioning.pretrained_path={encoders[other]}"]))
    assert "\n" not in str(err.value)


def test_missing_tokenizer_or_unknown_model_type_is_one_clear_line(compose, encoders, tmp_path):
    broken = shutil.copytree(encoders["t5"], tmp_path / "t5")
    (broken / "tokenizer.json").unlink()
    cfg = compose(TEXT + [f"run_dir={tmp_path / 'run'}", "conditioning.encoder=pretrained",
                          f"conditioning.pretrained_path={broken}"])
    with pytest.raises(run.ConfigError, match=r"tokenizer .*t5/tokenizer.json .*is missing") as err:
        run.main(cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    bert = shutil.copytree(encoders["t5"], tmp_path / "bert")
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"bert/config.json: model_type 'bert' is neither a CLIP nor a T5 "
                                         r"text encoder \(supported: clip, clip_text_model, t5, mt5, umt5\)") as err:
        PretrainedTextEncoder(bert, cache_root=tmp_path)
    assert "\n" not in str(err.value)
