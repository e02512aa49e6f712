"""`python run.py modality=joint`: composition, all methods, per-member gradients, exact resume,
2-process gloo = 1 process, per-member evaluation, task=sample of one member, bad weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

import run
from app.joint import build_joint, member_config
from core.checkpoint import load_checkpoint
from core.joint import ModalitySchedule
from run_helpers import assert_same_state, one_and_two_gloo_processes, sigkill_then_resume, trained_run_dir

REPO = Path(__file__).resolve().parents[2]
SMALL = ["modality=joint", "model=micro", "train=smoke", "eval=none", "sample.num_samples=2", "sample.num_steps=2",
         "modality.members.image.dataset.per_class=16", "modality.members.video.dataset.clips_per_class=4",
         "modality.members.audio.dataset.clips_per_class=4", "train.log_every=1"]
WEIGHTS = {"image": 0.57, "video": 0.30, "audio": 0.13}


def test_joint_config_composes_the_three_members_with_their_own_settings(compose):
    cfg = compose(["modality=joint", "modality.weights.image=0.3"])
    assert list(cfg.modality.members) == ["image", "video", "audio"]
    assert dict(cfg.modality.weights) == {"image": 0.3, "video": 0.30, "audio": 0.13}
    got = {}
    for m in cfg.modality.members:
        mcfg = member_config(cfg, m)
        got[m] = (mcfg.method.objective.mask_ratio, mcfg.modality.time.dist, mcfg.sample.cfg_scale)
    assert got == {"image": (0.25, "uniform", 3.0), "video": (0.1, "logit_normal", 3.0),
                   "audio": (0.5, "logit_normal", 3.0)}
    # the members' relative interpolations resolve inside the joint tree
    assert cfg.modality.members.image.tokenizer.image_size == cfg.modality.members.image.dataset.image_size


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fm", "selfflow", "repa_random"])  # repa_random: REPA with no weight file
def test_each_method_trains_jointly(compose, tmp_path, method):
    out = run.main(compose(SMALL + [f"method={method}", f"run_dir={tmp_path}", "modality.weights.video=1",
                                    "modality.weights.audio=1", "modality.weights.image=1"]))
    counts = ModalitySchedule({"image": 1, "video": 1, "audio": 1}, seed=0).counts_before(6)
    assert out["steps_per_member"] == counts and all(v > 0 for v in counts.values())
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    part = {"fm": "loss_gen", "selfflow": "loss_rep", "repa_random": "loss_proj"}[method]
    seen = {m for rec in metrics for m in ("image", "video", "audio") if f"{m}/{part}" in rec}
    assert seen == {"image", "video", "audio"} and all(np.isfinite(rec["loss"]) for rec in metrics)
    for m in ("image", "video", "audio"):
        assert any((tmp_path / "samples" / m).iterdir()), m
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["model_config"]["joint"] and set(ckpt["model_config"]["members"]) == {"image", "video", "audio"}
    assert {k.split(".")[1] for k in ckpt["tokenizer"]} <= {"image", "video", "audio"}
    assert "joint (image, video, audio)" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_member_without_steps_keeps_its_initial_projections(compose, tmp_path):
    cfg = compose(SMALL + ["method=selfflow", f"run_dir={tmp_path}"])
    counts = ModalitySchedule(WEIGHTS, seed=0).counts_before(6)
    assert counts["video"] == 0 and counts["image"] > 0 and counts["audio"] > 0  # seed 0: no video step in 6
    torch.manual_seed(0)
    init = build_joint(cfg)["model"].state_dict()
    run.main(cfg)
    final = load_checkpoint(tmp_path)["model"]
    for name in ("x_embedders", "out_projs", "label_embedders"):
        for m in ("image", "video", "audio"):
            keys = [k for k in init if k.startswith(f"{name}.{m}.")]
            moved = any(not torch.equal(init[k], final[k]) for k in keys)
            assert moved == (counts[m] > 0), (name, m)
    assert not torch.equal(init["blocks.0.attn.qkv.weight"], final["blocks.0.attn.qkv.weight"])


@pytest.mark.slow
def test_resume_is_bit_identical_and_continues_the_modality_sequence(compose, tmp_path):
    common = SMALL + ["method=selfflow", "train.steps=8", "train.ckpt_every=4"]
    run.main(compose(common + [f"run_dir={tmp_path / 'full'}"]))
    run.main(compose(common + ["train.steps=4", f"run_dir={tmp_path / 'part'}"]))
    out = run.main(compose(common + [f"train.resume={tmp_path / 'part'}", f"run_dir={tmp_path / 'part'}"]))
    assert out["steps_this_run"] == 4
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    assert_same_state(full, resumed)
    for k, v in full["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], resumed["optimizer"]["state"][k]["exp_avg"])
    assert full["data_position"] == resumed["data_position"]
    # another weighting is another schedule: refused on resume, with the key named
    bad = compose(common + ["train.steps=12", "modality.weights.image=0.1", f"train.resume={tmp_path / 'part'}",
                            f"run_dir={tmp_path / 'part'}"])
    with pytest.raises(ValueError, match="modality.weights"):
        run.main(bad)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    args = SMALL + ["method=selfflow", "train.steps=14", "train.ckpt_every=2", "train.keep_last=2"]
    assert_same_state(*sigkill_then_resume(args, tmp_path, kill_after=6))


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(compose, tmp_path, free_port, sharding):
    args = SMALL + ["method=selfflow", "train.steps=6", "train.batch_size=8"]
    one, two = one_and_two_gloo_processes(compose, args, tmp_path, free_port, f"train.fsdp={sharding == 'fsdp'}")
    assert_same_state(one, two, exact=False)
    assert one["data_position"] == two["data_position"]
    # AdamW skipped each member's projections on the other members' steps in both runs (DDP left their
    # gradients None, as one process does): per-parameter step counts are the members' step counts
    counts = ModalitySchedule(WEIGHTS, seed=0).counts_before(6)
    for state in (one, two):
        assert {int(v["step"]) for v in state["optimizer"]["state"].values()} == {6, *(c for c in counts.values() if c)}
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7)) and all(m["world_size"] == 2 for m in metrics)


def _with_cheap_metrics(cfg):
    """Every member scored by a network-free statistic (the tests' stand-in for the domain metrics)."""
    with open_dict(cfg):
        for m in cfg.modality.members:
            cfg.modality.members[m].metrics = {"stats": {"_target_": "joint_stats.sample_stats", "_partial_": True}}
            cfg.modality.members[m].dataset.heldout_per_class = 2
    return cfg


@pytest.mark.slow
def test_each_member_is_evaluated_into_eval_json(compose, tmp_path):
    cfg = _with_cheap_metrics(compose(SMALL + ["method=fm", "eval=default", "eval.metrics=[]", "eval.num_samples=4",
                                               "train.eval_every=3", f"run_dir={tmp_path}"]))
    run.main(cfg)
    evals = json.loads((tmp_path / "eval.json").read_text())
    assert set(evals) == {"image", "video", "audio"}
    classes = {"image": 4, "video": 10, "audio": 6}
    for m, records in evals.items():
        stats = {r["metric"]: r for r in records}["stats_mean"]
        assert stats["modality"] == m and stats["details"]["n"] == 4 and stats["details"]["num_classes"] == classes[m]
        assert stats["step"] == 6 and str(stats["reference"]).startswith("held-out split")
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = {m: [r["step"] for r in logged if f"{m}/stats_mean" in r] for m in classes}
    assert steps == {m: [3, 6] for m in classes}
    assert "image/stats_mean" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    return trained_run_dir(tmp_path_factory, "joint_run", SMALL + ["method=fm"])


@pytest.mark.slow
@pytest.mark.parametrize("member,shape", [("video", (3, 8, 16, 16, 3)), ("audio", (3, 16000))])
def test_task_sample_generates_one_member(compose, tmp_path, joint_run, member, shape):
    args = SMALL + ["task=sample", f"checkpoint.path={joint_run}", f"sample.modality={member}", "sample.num_samples=3",
                    "+sample.batch_size=2", f"run_dir={tmp_path}"]
    out = run.main(compose(args))
    arr = np.load(out["npz"])["arr_0"]
    assert arr.shape == shape
    assert (tmp_path / f"member_{member}.pt").exists()  # the exported single-modality checkpoint


@pytest.mark.slow
def test_an_exported_member_loads_into_the_single_modality_sampler(compose, tmp_path, joint_run):
    from app.joint import export_member_checkpoint
    from core.convert import load_pretrained

    path = export_member_checkpoint(joint_run, "image", tmp_path / "image.pt")
    single, _ = load_pretrained(path, "ours")
    cfg = compose(SMALL + ["method=fm"])
    torch.manual_seed(0)
    joint = build_joint(cfg)["model"]
    joint.load_state_dict(load_checkpoint(joint_run)["ema"]["model"])
    x, t = torch.randn(2, 4, 192), torch.rand(2)
    coords = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(2), torch.arange(2), indexing="ij"), -1).reshape(-1, 3)
    y = torch.tensor([1, single.null_class])
    with torch.no_grad():
        assert torch.equal(single(x, t, y, coords), joint.eval().member("image")(x, t, y, coords))
    # and the same run samples as a plain single-modality run would
    out = run.main(compose(["model=micro", "eval=none", "task=sample", f"checkpoint.path={path}", "sample.num_samples=2",
                            "sample.num_steps=2", "modality.dataset.per_class=16", f"run_dir={tmp_path / 's'}"]))
    assert np.load(out["npz"])["arr_0"].shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_a_single_modality_sampler_pointed_at_a_joint_checkpoint_says_how(compose, tmp_path, joint_run):
    args = ["model=micro", "task=sample", f"checkpoint.path={joint_run}", f"run_dir={tmp_path}"]
    with pytest.raises(run.ConfigError, match="is a joint checkpoint.*modality=joint sample.modality=image"):
        run.main(compose(args))


def test_sample_modality_needs_a_joint_config(compose, tmp_path):
    with pytest.raises(run.ConfigError, match="sample.modality=video: picks a member"):
        run.main(compose(["task=sample", f"checkpoint.path={tmp_path}", "sample.modality=video", f"run_dir={tmp_path}"]))


def test_sample_task_of_a_joint_config_names_the_member_key(compose, tmp_path):
    with pytest.raises(run.ConfigError, match="sample.modality is missing"):
        run.main(compose(SMALL + ["task=sample", f"checkpoint.path={tmp_path}", f"run_dir={tmp_path / 'out'}"]))


@pytest.mark.parametrize("overrides,message", [
    (["modality.weights.image=-0.5"], r"modality\.weights\.image=-0\.5: must be >= 0"),
    (["modality.weights.image=0", "modality.weights.video=0", "modality.weights.audio=0"], r"modality\.weights are all zero"),
    (["+modality.weights.text=0.2"], r"modality\.weights\.text: unknown member"),
    (["modality.weights.video=lots"], r"modality\.weights\.video='lots': must be a number"),
    (["modality.loss_weights.audio=-1"], r"modality\.loss_weights\.audio=-1: must be >= 0"),
    (["~modality.weights.audio"], r"modality\.weights has no value for member\(s\) \['audio'\]"),
    (["modality.members.audio.mask_ratio=0.7"], r"^modality\.members\.audio\.mask_ratio=0\.7: must be in"),
    (["modality.members.video.time.dist=cosine"], r"^modality\.members\.video\.time\.dist='cosine'"),
    (["train.precision=fp8"], r"^train\.precision='fp8': must be one of"),  # a run-wide key stays as it is
])
def test_bad_weights_fail_with_one_message_naming_the_key(compose, tmp_path, overrides, message):
    with pytest.raises(run.ConfigError, match=message):
        run.main(compose(SMALL + overrides + [f"run_dir={tmp_path}"]))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing was written


def test_bad_weight_on_the_command_line_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "run.py", "modality=joint", "modality.weights.image=-1", f"run_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "config error: modality.weights.image=-1: must be >= 0"
