"""benchmarks/joint_budget_gpu.{py,sh}: the scaled `joint` budget composes, keeps joint and separate
runs at equal total steps, prints its cells on CPU, and its parallel driver lays out a suite."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import validate
from app.joint import is_joint, validate_joint
from experiments.runner import cells, compose, load_budget

REPO = Path(__file__).resolve().parents[2]
SCALED = ("train.steps", "train.eval_every")


@pytest.fixture(scope="module")
def gpu():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("joint_budget_gpu")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _value(overrides, key):
    return next(int(o.split("=", 1)[1]) for o in overrides if o.split("=", 1)[0] == key)


def test_scaled_budget_composes_and_keeps_equal_total_steps(gpu):
    base, scaled = load_budget("joint"), gpu.gpu_budget(4)
    assert scaled.name == "joint_gpu_x4"
    extra = gpu.GPU_OVERRIDES + ["train.precision=bf16"]
    grid = cells(scaled, seeds=[0], extra=extra)
    assert [c.key for c in grid] == [c.key for c in cells(base, seeds=[0])]
    for c, b in zip(grid, cells(base, seeds=[0])):
        for key in SCALED:  # every step count x4; every other override as in the base budget, plus the extras
            assert _value(c.overrides, key) == 4 * _value(b.overrides, key), (c.key, key)
        rest = [o for o in c.overrides if o.split("=", 1)[0] not in SCALED]
        assert rest == [o for o in b.overrides if o.split("=", 1)[0] not in SCALED][:-1] + extra + ["seed=0"]
    cfgs = {c.key: compose(c.overrides) for c in grid}
    for key, cfg in cfgs.items():
        validate_joint(cfg) if is_joint(cfg) else validate(cfg)
        assert (cfg.train.device, cfg.train.precision, cfg.model.name) == ("cuda", "bf16", "tiny"), key
    joint = cfgs["joint/selfflow/seed0"].train.steps
    separate = {m: cfgs[f"{m}/selfflow/seed0"].train.steps for m in ("image", "video", "audio")}
    assert joint == 12000 and separate == {"image": 6840, "video": 3600, "audio": 1560}
    assert sum(separate.values()) == joint


@pytest.mark.parametrize("scale", [0, -2, 1.5, True])
def test_scale_must_be_a_positive_integer(gpu, scale):
    with pytest.raises(ValueError, match="--scale"):
        gpu.gpu_budget(scale)


def test_first_seed_runs_alone_then_round_robin(gpu):
    assert gpu._split([0, 1, 2, 3, 4, 5], 2) == [[0], [1, 3, 5], [2, 4]]
    assert gpu._split([3, 4], 5) == [[3], [4]]
    assert gpu._split([7], 5) == [[7]]


def test_shell_wrapper_prints_the_cells_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "SCALE": "2", "SEEDS": "0,1", "SUITE": str(tmp_path / "suite"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/joint_budget_gpu.sh", "--print-commands", "train.precision=bf16"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 20 and all(line.startswith("python run.py modality=") for line in lines)
    assert all("train.device=cuda train.precision=bf16 seed=" in line for line in lines)
    assert "train.steps=6000" in lines[0] and "train.steps=3420" in lines[8]  # joint 2 x 3000, image 2 x 1710
    assert lines[-1].endswith(f"run_dir={tmp_path / 'suite'}/audio/selfflow/seed1")
    assert not (tmp_path / "suite").exists()  # nothing was run


@pytest.mark.slow
def test_parallel_driver_writes_one_suite(gpu, tmp_path):
    """Two seeds of a two-step budget on CPU (--no-gpu): seed 0 alone, then seed 1 in a worker."""
    budget = tmp_path / "mini.yaml"
    budget.write_text("\n".join([
        "name: mini", "modalities: [image]", "seeds: [0, 1]", "variants: {fm: [method=fm]}",
        "common: [model=micro, train=smoke, train.steps=1, sample.num_samples=2, sample.num_steps=2,",
        "         eval=none, modality.dataset.per_class=16]"]))
    out = tmp_path / "suite"
    assert gpu.main(["--base", str(budget), "--scale", "2", "--workers", "3", "--no-gpu", "--out", str(out)]) == 0
    manifest = json.loads((out / "suite.json").read_text())
    assert manifest["cells"] == ["image/fm/seed0", "image/fm/seed1"]
    (invocation,) = manifest["invocations"]
    assert invocation["failed"] == [] and invocation["finished"] and invocation["workers"] == 3
    for seed in (0, 1):
        record = json.loads((out / "image" / "fm" / f"seed{seed}" / "suite_cell.json").read_text())
        assert record["status"] == "finished" and record["steps"] == 2  # train.steps=1 scaled x2
        assert record["commits"] == [invocation["commit"]]  # the same checkout ran the driver and the cell
    assert "Benchmark `mini_gpu_x2`" in (out / "report.md").read_text()
