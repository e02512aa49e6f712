"""`python run.py modality=joint conditioning=text`: one caption encoder over all members, every
method trains, per-member prompt metrics, bit-exact kill/resume, export + sampling from a prompt
file, clear errors for what is not supported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import run
from app.config import ConfigError
from app.joint import build_joint
from core.checkpoint import load_checkpoint
from core.joint import ModalitySchedule
from modalities.captions import dataset_captions
from run_helpers import assert_same_state, one_and_two_gloo_processes, sigkill_then_resume, trained_run_dir

REPO = Path(__file__).resolve().parents[2]
MEMBERS = ("image", "video", "audio")
SMALL = ["modality=joint", "conditioning=text", "model=micro", "train=smoke", "eval=none", "sample.num_samples=2",
         "sample.num_steps=2", "train.log_every=1",
         "modality.members.image.dataset.per_class=8", "modality.members.image.dataset.heldout_per_class=2",
         "modality.members.video.dataset.clips_per_class=2", "modality.members.video.dataset.heldout_per_class=1",
         "modality.members.audio.dataset.clips_per_class=2", "modality.members.audio.dataset.heldout_per_class=1",
         "modality.weights.image=1", "modality.weights.video=1", "modality.weights.audio=1"]
ALL = {"image": 1.0, "video": 1.0, "audio": 1.0}


def test_one_encoder_over_every_members_captions_and_prompts_from_each_members_held_out_split(compose):
    parts = build_joint(compose(SMALL))
    model, members = parts["model"], parts["members"]
    vocab = model.view("image").vocab
    assert {"triangle", "digit", "melody"} <= set(vocab)  # one vocabulary: words of all three generators
    for m in MEMBERS:
        view, p = model.view(m), members[m]
        assert view.vocab == vocab and view.text_encoder is model.text_encoder
        base = p["base_dataset"]
        own, _ = dataset_captions(base)
        assert p["dataset"].captions == own  # each member trains on its own captions
        held, _ = dataset_captions(base.reference_dataset())
        assert set(p["prompts"].captions) <= set(held) and len(p["prompts"].captions) == len(held)
        assert torch.equal(p["prompts"].conditions[0], view.vocabulary.encode(p["prompts"].captions[:1], 24)[0])


@pytest.mark.slow
@pytest.mark.parametrize("method,arch", [("fm", "joint"), ("selfflow", "joint"), ("repa_random", "joint"),
                                         ("selfflow", "cross")])
def test_each_method_trains_jointly_with_text(compose, tmp_path, method, arch):
    out = run.main(compose(SMALL + [f"method={method}", f"conditioning.arch={arch}", f"run_dir={tmp_path}"]))
    counts = ModalitySchedule(ALL, seed=0).counts_before(6)
    assert out["steps_per_member"] == counts and all(v > 0 for v in counts.values())
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    part = {"fm": "loss_gen", "selfflow": "loss_rep", "repa_random": "loss_proj"}[method]
    assert {m for rec in metrics for m in MEMBERS if f"{m}/{part}" in rec} == set(MEMBERS)
    assert all(np.isfinite(rec["loss"]) for rec in metrics)
    arch_cfg = load_checkpoint(tmp_path)["model_config"]
    texts = [arch_cfg["members"][m]["text"] for m in MEMBERS]
    assert all(t == texts[0] for t in texts) and texts[0]["text_arch"] == arch
    for m in MEMBERS:
        shown = (tmp_path / "samples" / m / "final_prompts.txt").read_text().splitlines()
        assert len(shown) == 2 and len(set(shown)) == 2  # two held-out captions of two classes
    assert shown[0].startswith(("a single", "a low", "a middle", "a high"))  # audio's own captions
    assert f"offline encoder shared by image, video, audio, {arch} attention" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_each_member_writes_its_prompt_adherence_with_its_domain_metrics(compose, tmp_path):
    cfg = compose(SMALL + ["method=fm", "eval=default", "eval.metrics=[]", "eval.num_samples=4", f"run_dir={tmp_path}"])
    run.main(cfg)
    evals = json.loads((tmp_path / "eval.json").read_text())
    expected = {"image": ("shape", "colour", "background", "shapesnet"), "video": ("digit", "direction", "colour", "digitnet"),
                "audio": ("instrument", "register", "timbrenet")}
    logged = {}
    for rec in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()):
        logged.update(rec)
    report = (tmp_path / "report.md").read_text()
    for m, (*attrs, net) in expected.items():
        records = {r["metric"]: r for r in evals[m]}
        for name in [f"prompt_{a}_acc" for a in attrs] + ["prompt_all_acc", f"class_acc_{net}"]:
            r = records[name]
            assert r["modality"] == m and 0.0 <= r["value"] <= 1.0 and r["step"] == 6, (m, name)
            assert logged[f"{m}/{name}"] == r["value"]
            assert f"**{m}/{name}**" in report
        assert records[f"prompt_{attrs[0]}_acc"]["real_value"] > 0.5  # the reader's ceiling on real items


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    args = SMALL + ["method=selfflow", "train.steps=10", "train.ckpt_every=2", "train.keep_last=2"]
    clean, resumed = sigkill_then_resume(args, tmp_path, kill_after=4)
    assert clean["model_config"] == resumed["model_config"]
    assert_same_state(clean, resumed)
    for k, v in clean["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], resumed["optimizer"]["state"][k]["exp_avg"])


@pytest.fixture(scope="module")
def joint_text_run(tmp_path_factory):
    return trained_run_dir(tmp_path_factory, "joint_text_run", SMALL + ["method=fm"])


@pytest.mark.slow
def test_an_exported_member_samples_from_a_prompt_file_as_a_single_modality_text_checkpoint(
        compose, tmp_path, joint_text_run):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red circle in the centre on a black background\na small blue cross\n")
    done = subprocess.run([sys.executable, "-m", "app.joint", "export", str(joint_text_run), "--modality", "image",
                           "--out", str(tmp_path / "image.pt")], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    exported = load_checkpoint(tmp_path / "image.pt")
    assert "text" in exported["model_config"] and "triangle" in exported["model_config"]["text"]["vocab"]
    out = run.main(compose(["modality=image", "conditioning=text", "model=micro", "task=sample", "sample.num_steps=2",
                            f"checkpoint.path={tmp_path / 'image.pt'}", f"sample.prompts={prompts}", "sample.per_prompt=2",
                            f"run_dir={tmp_path / 's'}"]))
    assert out["num_samples"] == 4
    with np.load(tmp_path / "s" / "samples_prompts.npz") as z:
        assert z["samples"].shape == (4, 16, 16, 3) and z["samples"].dtype == np.uint8
    assert (tmp_path / "s" / "prompts.txt").read_text().splitlines() == \
        ["a large red circle in the centre on a black background"] * 2 + ["a small blue cross"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("member,shape", [("video", (2, 8, 16, 16, 3)), ("audio", (2, 16000))])
def test_task_sample_of_a_joint_text_checkpoint_takes_a_member_and_prompts(compose, tmp_path, joint_text_run,
                                                                            member, shape):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text({"video": "a red digit 3 moving left slowly\n",
                        "audio": "a single low flute note\n"}[member])
    out = run.main(compose(SMALL + ["task=sample", f"checkpoint.path={joint_text_run}", f"sample.modality={member}",
                                    f"sample.prompts={prompts}", "sample.per_prompt=2", f"run_dir={tmp_path}"]))
    assert out["num_samples"] == 2 and (tmp_path / f"member_{member}.pt").exists()
    with np.load(tmp_path / "samples_prompts.npz") as z:
        assert z["samples"].shape == shape


def test_a_member_without_captions_is_one_clear_error(compose, tmp_path):
    from PIL import Image

    from app.joint_text import joint_text_parts

    root = tmp_path / "photos" / "cats"
    root.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / f"{i}.png")
    cfg = compose(["modality=joint", "conditioning=text"])
    folder = compose(["modality=image_folder", f"modality.dataset.root={tmp_path / 'photos'}",
                      "modality.dataset.image_size=8"])
    with pytest.raises(ConfigError, match=r"^modality\.members\.photos: conditioning=text needs a caption for every "
                                          r"item .*no caption for .*0\.png: write .*0\.txt.*modality\.weights\.photos=0"):
        joint_text_parts(cfg, {"photos": folder})
    wave = OmegaConf.create({"modality": {"dataset": {"_target_": "toy_signal_modality.WaveDataset"}}})
    with pytest.raises(ConfigError, match=r"member 'wave' \(WaveDataset\).*has no list of files"):
        joint_text_parts(cfg, {"wave": wave})


def test_one_captions_csv_for_several_members_is_refused(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"conditioning\.captions_csv=.*cannot caption several members"):
        run.main(compose(SMALL + [f"conditioning.captions_csv={tmp_path / 'c.csv'}", f"run_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_sampling_a_joint_text_checkpoint_without_prompts_says_how(compose, tmp_path, joint_text_run):
    with pytest.raises(ConfigError, match=r"is text-conditioned: sample it from prompts with sample.prompts="):
        run.main(compose(SMALL + ["task=sample", f"checkpoint.path={joint_text_run}", "sample.modality=image",
                                  f"run_dir={tmp_path}"]))


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(compose, tmp_path, free_port):
    args = SMALL + ["method=selfflow", "train.steps=4", "train.batch_size=4"]
    one, two = one_and_two_gloo_processes(compose, args, tmp_path, free_port)
    for part in ("model", "objective"):
        for k, v in one[part].items():
            torch.testing.assert_close(two[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
