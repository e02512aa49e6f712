"""The hydra app end to end: composed configs, short runs of each method, exact resume, bad values."""

import json
from pathlib import Path

import pytest
import torch

import run
from core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

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
@pytest.mark.parametrize("method", ["fm", "selfflow", "repa_random"])  # repa_random: no weight file needed
def test_each_method_runs_end_to_end(compose, tmp_path, method):
    cfg = compose(SMALL + [f"method={method}", f"run_dir={tmp_path}"])
    out = run.main(cfg)
    for name in ["config.yaml", "metrics.jsonl", "report.md", "loss.png", "samples/final_grid.png", "checkpoints/latest"]:
        assert (tmp_path / name).exists(), name
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 6 and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    expected_parts = {"fm": {"loss_gen"}, "selfflow": {"loss_gen", "loss_rep"}, "repa_random": {"loss_gen", "loss_proj"}}[method]
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
    done = subprocess.run(cmd, cwd=Path(run.__file__).parent, capture_output=True, text=True, timeout=300, env=env)
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

    with initialize_config_dir(config_dir=str(Path(run.__file__).parent / "configs"), version_base="1.3"):
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
    size = compose(SMALL).modality.dataset.image_size
    assert arr.shape == (5, size, size, 3) and arr.dtype == np.uint8
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


@pytest.mark.slow
def test_tensorboard_logger_mirrors_metrics_jsonl(compose, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run.main(compose(SMALL + ["train.logger=tensorboard", "train.log_every=2", "train.sample_every=3",
                              f"run_dir={tmp_path}"]))
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    events = acc.Scalars("loss")  # TensorBoard stores float32
    assert [e.step for e in events] == [m["step"] for m in logged]
    assert all(abs(e.value - m["loss"]) <= 1e-6 * abs(m["loss"]) for e, m in zip(events, logged))
    assert sorted({e.step for e in acc.Images("samples")}) == [3, 6]


@pytest.mark.parametrize("override,message", [
    ("train.lr=abc", "train.lr='abc': must be a number"),
    ("train.steps=-5", "train.steps=-5: must be >= 1"),
    ("method.objective.mask_ratio=0.9", "method.objective.mask_ratio=0.9: must be in [0, 0.5]"),
    ("modality=image_folder", "modality.dataset.root is required"),
])
def test_config_errors_are_one_message_and_leave_no_run_directory(compose, tmp_path, override, message):
    from app.cli import config_error_message

    run_dir = tmp_path / "run"
    with pytest.raises(run.ConfigError) as info:
        base = SMALL[:-1] if override.startswith("modality=") else SMALL  # per_class is the shapes' key
        run.main(compose(base + [override, f"run_dir={run_dir}"]))
    text = config_error_message(info.value)
    assert text.startswith("config error: ") and message in text and len(text.splitlines()) <= 2
    assert not run_dir.exists()  # validation failed before anything was written


def test_cli_prints_one_line_and_removes_hydra_bookkeeping(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "run.py"), "train.lr=abc", f"hydra.run.dir={tmp_path / 'r'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "config error: train.lr='abc': must be a number"
    assert not (tmp_path / "r").exists()


def test_remove_unused_run_dir_keeps_real_runs(tmp_path):
    from app.cli import remove_unused_run_dir

    fresh, real = tmp_path / "a" / "fresh", tmp_path / "b" / "real"
    for d in (fresh, real):
        (d / ".hydra").mkdir(parents=True)
        (d / "run.log").write_text("")
    (real / "checkpoints").mkdir()
    assert remove_unused_run_dir(fresh) and not fresh.exists() and not fresh.parent.exists()
    assert not remove_unused_run_dir(real) and (real / "checkpoints").exists()


@pytest.mark.slow
def test_resume_continues_in_the_run_directory(compose, tmp_path):
    common = SMALL + ["method=fm", "train.ckpt_every=3", "train.log_every=1"]
    first = run.main(compose(common + ["train.steps=3", f"run_dir={tmp_path / 'r'}"]))
    # no run_dir: the checkpoint path alone names the directory to continue in
    second = run.main(compose(common + [f"train.resume={tmp_path / 'r' / 'checkpoints'}"]))
    assert second["run_dir"] == first["run_dir"] == str(tmp_path / "r")
    steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert "Last logged step: " in (report := (tmp_path / "r" / "report.md").read_text()) and "step = 6" in report


def test_resume_run_dir_resolution(tmp_path):
    from app.config import _hydra_run_dir, resume_run_dir

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_00000010.pt").write_bytes(b"")
    for given in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "ckpt_00000010.pt"):
        assert resume_run_dir(given) == tmp_path
    assert resume_run_dir(None) is None and resume_run_dir(tmp_path / "elsewhere.pt") is None
    assert _hydra_run_dir(str(tmp_path), "runs/new") == str(tmp_path) and _hydra_run_dir(None, "runs/new") == "runs/new"


def test_benchmark_overrides_are_forwarded_to_the_suite():
    from experiments.__main__ import argv_from_overrides

    argv = argv_from_overrides(["benchmark=standard", "benchmark.modalities=[image,video]", "benchmark.seeds=[0,1]",
                                "benchmark.out=/tmp/s", "train.steps=500", "+model.extra=1"])
    assert argv == ["--budget", "standard", "--modalities", "image,video", "--seeds", "0,1", "--out", "/tmp/s",
                    "train.steps=500", "+model.extra=1"]
    with pytest.raises(SystemExit, match="benchmark.oops"):
        argv_from_overrides(["benchmark=quick", "benchmark.oops=1"])


@pytest.mark.slow
def test_sample_task_reproduces_the_trainers_samples_of_an_x_prediction_model(compose, tmp_path):
    # micro on 32 px images: 192-value patches > 64 wide, so `auto` trains with x-prediction; task=sample
    # must rebuild it as x (stored in the checkpoint), not the constructor default v.
    import numpy as np

    from app.build import build
    from app.config import fingerprint, sampler_config
    from core.sample_job import quantize
    from core.trainer import Trainer, TrainConfig
    from omegaconf import OmegaConf

    train_args = SMALL + ["model.prediction=auto", "train.batch_size=4"]
    run.main(compose(train_args + [f"run_dir={tmp_path / 'train'}"]))
    out = run.main(compose(train_args + ["task=sample", f"checkpoint.path={tmp_path / 'train'}", "sample.num_samples=6",
                                         "+sample.batch_size=4", "sample.seed=7", "+sample.class_mode=balanced",
                                         "model.prediction=v",  # a wrong request: the checkpoint's x wins
                                         f"run_dir={tmp_path / 'samples'}"]))
    cfg = compose(train_args + [f"run_dir={tmp_path / 'train'}"])
    parts = build(cfg)
    assert parts["model"].prediction == "x"
    trainer = Trainer(model=parts["model"], objective=parts["objective"], tokenizer=parts["tokenizer"],
                      dataset=parts["dataset"], cfg=TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True)),
                      run_dir=tmp_path / "replay", sampler_cfg=sampler_config(cfg), config_fingerprint=fingerprint(cfg))
    trainer.load(tmp_path / "train")
    mine, labels, _ = trainer.generate(6, seed=7, batch_size=4)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert np.array_equal(np.load(out["npz"])["arr_0"], quantize(mine, kind="image"))


def test_a_checkpoint_that_safe_loading_refuses_is_a_config_error(compose, tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"ema": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(run.ConfigError, match=r"evil\.pt.*weights_only"):
        run.main(compose(SMALL + ["task=sample", f"checkpoint.path={tmp_path / 'evil.pt'}", f"run_dir={tmp_path / 's'}"]))
    with pytest.raises(run.ConfigError, match="no checkpoint"):
        run.main(compose(SMALL + ["task=sample", f"checkpoint.path={tmp_path / 'none.pt'}", f"run_dir={tmp_path / 's'}"]))


def test_cpu_presets_read_the_modality_recipe(compose):
    image = compose([])
    assert (image.modality.dataset.image_size, image.model.prediction, image.sample.cfg_scale) == (16, "x", 3.0)
    assert (image.train.steps, image.train.batch_size, image.train.lr) == (1500, 64, 1e-3)
    audio = compose(["modality=audio"])
    assert (audio.train.steps, audio.model.prediction, audio.sample.cfg_scale, list(audio.modality.tokenizer.patch)) == (
        1000, "x", 3.0, [8, 16])
    video = compose(["modality=video"])
    assert (video.train.steps, video.train.batch_size, video.model.prediction, video.sample.cfg_scale) == (1500, 32, "x", 3.0)
    assert list(video.eval.metrics) == [] and compose(["modality=video", "eval.metrics=[fid_frame]"]).eval.metrics == ["fid_frame"]
    folder = compose(["modality=video_folder", "modality.dataset.root=/x", "modality.num_classes=2"])
    assert folder.train.steps == 1200 and folder.eval.metrics == "auto"  # no recipe block: the fallbacks
    paper = compose(["train=paper", "model=sit_xl2", "modality=image_latent"])
    assert paper.train.lr == 1e-4 and paper.sample.cfg_scale == 1.0
    assert compose(["train.steps=7", "sample.cfg_scale=1"]).train.steps == 7
