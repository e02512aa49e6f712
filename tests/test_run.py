"""The hydra app end to end: composed configs, short runs of each method, exact resume, bad values."""

import json

import pytest
import torch

import run
from core.checkpoint import load_checkpoint

SMALL = ["model=micro", "train=smoke", "eval=none", "sample.num_samples=4", "sample.num_steps=4",
         "modality.dataset.per_class=16"]


def test_default_config_is_the_documented_main_job(compose):
    cfg = compose([])
    assert (cfg.modality.name, cfg.method.name, cfg.model.name) == ("image", "selfflow", "tiny")
    assert cfg.method.objective.gamma == 0.8 and cfg.method.objective.mask_ratio == 0.25
    assert cfg.modality.tokenizer.patch_size == cfg.model.patch_size


@pytest.mark.parametrize("size,expected", [("sit_s2", (384, 12, 6, 2)), ("sit_b2", (768, 12, 12, 2)),
                                           ("sit_l2", (1024, 24, 16, 2)), ("sit_xl2", (1152, 28, 16, 2))])
def test_model_configs_match_the_size_registry(compose, size, expected):
    from core.transformer import parse_model_name

    m = compose([f"model={size}"]).model
    assert (m.hidden_size, m.depth, m.num_heads, m.patch_size) == expected == parse_model_name(m.name)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fm", "selfflow", "repa"])
def test_each_method_runs_end_to_end(compose, tmp_path, method):
    cfg = compose(SMALL + [f"method={method}", f"run_dir={tmp_path}"])
    out = run.main(cfg)
    for name in ["config.yaml", "metrics.jsonl", "report.md", "loss.png", "samples/final_grid.png", "checkpoints/latest"]:
        assert (tmp_path / name).exists(), name
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 6 and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    expected_parts = {"fm": {"loss_gen"}, "selfflow": {"loss_gen", "loss_rep"}, "repa": {"loss_gen", "loss_proj"}}[method]
    assert expected_parts <= set(metrics[-1])
    assert f"{method} on image" in (tmp_path / "report.md").read_text()
    assert "method:" in (tmp_path / "config.yaml").read_text() and "${" not in (tmp_path / "config.yaml").read_text()
    assert out["steps"] == 6


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(compose, tmp_path):
    common = SMALL + ["method=selfflow", "train.ckpt_every=3", "train.log_every=1"]
    run.main(compose(common + [f"run_dir={tmp_path / 'full'}"]))
    run.main(compose(common + ["train.steps=3", f"run_dir={tmp_path / 'part'}"]))
    run.main(compose(common + [f"train.resume={tmp_path / 'part'}", f"run_dir={tmp_path / 'part'}"]))
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    assert full["step"] == resumed["step"] == 6
    for part in ["model", "objective"]:
        for k, v in full[part].items():
            assert torch.equal(v, resumed[part][k]), f"{part}.{k}"
    for k, v in full["ema"]["model"].items():
        assert torch.equal(v, resumed["ema"]["model"][k]), f"ema.{k}"
    # the resumed run's metric log continues the first one without duplicate steps
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


@pytest.mark.slow
def test_resume_with_another_model_lists_the_mismatch(compose, tmp_path):
    run.main(compose(SMALL + [f"run_dir={tmp_path / 'a'}"]))
    cfg = compose(SMALL + ["model.depth=3", "train.steps=8", f"train.resume={tmp_path / 'a'}", f"run_dir={tmp_path / 'b'}"])
    with pytest.raises(ValueError, match="different configuration.*model"):
        run.main(cfg)


@pytest.mark.parametrize("override,key", [
    ("modality.mask_ratio=0.7", "modality.mask_ratio"),
    ("model.num_heads=3", "model.num_heads"),
    ("train.precision=fp8", "train.precision"),
    ("sample.method=rk4", "sample.method"),
    ("modality.time.dist=cosine", "time.dist"),
    ("method.objective.gamma=-1", "gamma"),
    ("task=eval", "task"),
])
def test_bad_config_values_name_the_key(compose, tmp_path, override, key):
    cfg = compose(SMALL + [override, f"run_dir={tmp_path}"])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        run.main(cfg)


def test_missing_user_folder_is_a_clear_error(compose, tmp_path):
    cfg = compose(SMALL[:-1] + ["modality=image_folder", f"modality.dataset.root={tmp_path / 'nope'}", f"run_dir={tmp_path}"])
    with pytest.raises(Exception, match=r"nope does not exist \(set modality\.dataset\.root\)"):
        run.main(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_torchrun_two_processes_through_the_cli(tmp_path, sharding, free_port):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port}",
           "run.py", *SMALL, "method=selfflow", f"run_dir={tmp_path}", "train.batch_size=8",
           f"train.fsdp={sharding == 'fsdp'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=run.Path(run.__file__).parent, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 6]  # one writer: no duplicated lines
    assert all(m["world_size"] == 2 for m in metrics)
    assert (tmp_path / "samples" / "final_grid.png").exists() and (tmp_path / "report.md").exists()
    assert load_checkpoint(tmp_path)["step"] == 6


def test_slurm_launcher_config_composes(compose):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `slurm` extra is not installed")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(run.Path(run.__file__).parent / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2"],
                            return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.nodes == 2
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8


def test_train_tokenizer_needs_a_learned_tokenizer(compose, tmp_path):
    with pytest.raises(run.ConfigError, match="modality=image has no learned tokenizer"):
        run.main(compose(SMALL + ["task=train_tokenizer", f"run_dir={tmp_path}"]))


@pytest.mark.slow
def test_train_tokenizer_task_for_audio(compose, tmp_path):
    cfg = compose(["modality=audio", "task=train_tokenizer", "modality.tokenizer_training.steps=3",
                   "modality.dataset.clips_per_class=4", "modality.tokenizer.fit_max_items=16", f"run_dir={tmp_path}"])
    run.main(cfg)
    assert (tmp_path / "config.yaml").exists()
    assert list(tmp_path.rglob("*.pt")), "the tokenizer job wrote no checkpoint"


def test_benchmark_group_selects_a_suite_budget(compose):
    assert compose([]).get("benchmark") is None
    cfg = compose(["benchmark=standard"])
    assert cfg.benchmark.name == "standard" and set(cfg.benchmark.variants) >= {"fm", "repa", "selfflow"}


@pytest.mark.slow
def test_sample_task_from_our_checkpoint_is_resumable(compose, tmp_path):
    import numpy as np

    run.main(compose(SMALL + [f"run_dir={tmp_path / 'train'}"]))
    args = SMALL + ["task=sample", f"checkpoint.path={tmp_path / 'train'}", "sample.num_samples=5",
                    "+sample.batch_size=2", f"run_dir={tmp_path / 'samples'}"]
    first = run.main(compose(args))
    arr = np.load(first["npz"])["arr_0"]
    assert arr.shape == (5, 32, 32, 3) and arr.dtype == np.uint8
    again = run.main(compose(args))
    assert again["skipped_batches"] == 3 and again["generated_batches"] == 0
    assert np.array_equal(np.load(again["npz"])["arr_0"], arr)


def test_sample_task_without_a_checkpoint_names_the_key(compose, tmp_path):
    with pytest.raises(run.ConfigError, match="checkpoint.path is missing"):
        run.main(compose(SMALL + ["task=sample", f"run_dir={tmp_path}"]))


@pytest.mark.parametrize("name", ["selfflow_imagenet256", "repa_sit_xl2", "sit_xl2"])
def test_experiment_configs_compose_with_the_paper_protocol(compose, name):
    cfg = compose([f"+experiment={name}"])
    assert cfg.model.hidden_size == 1152 and cfg.model.depth == 28
    assert cfg.sample.method == "sde" and cfg.sample.num_steps == 250
    if name == "repa_sit_xl2":
        assert cfg.sample.cfg_scale == 1.8 and cfg.sample.guidance_high == 0.7
    else:
        assert cfg.sample.cfg_scale == 1.0


def test_cpu_presets_read_the_modality_recipe(compose):
    image = compose([])
    assert (image.modality.dataset.image_size, image.model.prediction, image.sample.cfg_scale) == (16, "x", 3.0)
    assert (image.train.steps, image.train.batch_size, image.train.lr) == (1500, 64, 1e-3)
    audio = compose(["modality=audio"])
    assert (audio.train.steps, audio.model.prediction, audio.sample.cfg_scale, list(audio.modality.tokenizer.patch)) == (
        1000, "x", 3.0, [8, 16])
    video = compose(["modality=video"])  # no recipe block: the train=cpu / tiny / sample fallbacks
    assert (video.train.steps, video.train.batch_size, video.model.prediction, video.sample.cfg_scale) == (1200, 32, "auto", 1.0)
    paper = compose(["train=paper", "model=sit_xl2", "modality=image_latent"])
    assert paper.train.lr == 1e-4 and paper.sample.cfg_scale == 1.0
    assert compose(["train.steps=7", "sample.cfg_scale=1"]).train.steps == 7
