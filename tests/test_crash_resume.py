"""Crash-proof training: SIGKILL at a random step, or in the middle of a checkpoint write, then resume."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ARGS = ["model=micro", "train=smoke", "eval=none", "sample.num_samples=2", "sample.num_steps=2",
        "modality.dataset.per_class=16", "method=selfflow", "train.steps=14", "train.ckpt_every=2",
        "train.keep_last=2", "train.log_every=1"]

# Runs the real CLI with torch.save slowed down: it writes part of the file, then stalls.
SLOW_WRITER = """
import os, sys, time
import core.checkpoint as c
real_save = c.torch.save
def slow_save(obj, f):
    name = os.readlink(f"/proc/self/fd/{f.fileno()}")
    if ".ckpt_00000004" in name:
        f.write(b"partial")
        f.flush()
        time.sleep(600)
    real_save(obj, f)
c.torch.save = slow_save
sys.argv = ["run.py"] + sys.argv[1:]
import runpy
runpy.run_path("run.py", run_name="__main__")
"""


def _start(run_dir, *extra, script=None):
    cmd = [sys.executable, "-c", script] if script else [sys.executable, "run.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd + ARGS + [f"run_dir={run_dir}", *extra], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _finish(run_dir, *extra):
    p = _start(run_dir, *extra)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]


def _latest_step(run_dir):
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return -1
    return int(pointer.read_text().strip()[5:13])


def _assert_same_final_state(a, b):
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == 14
    for part in ("model", "objective"):
        for k, v in sa[part].items():
            assert torch.equal(v, sb[part][k]), f"{part}.{k}"
    for k, v in sa["ema"]["model"].items():
        assert torch.equal(v, sb["ema"]["model"][k]), f"ema.{k}"
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    _finish(tmp_path / "clean")
    kill_after = random.Random(os.getpid()).choice([4, 6, 8])
    victim = tmp_path / "killed"
    p = _start(victim)
    _wait_for(lambda: _latest_step(victim) >= kill_after, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert _latest_step(victim) < 14
    _finish(victim, f"train.resume={victim}")
    _assert_same_final_state(tmp_path / "clean", victim)


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    victim = tmp_path / "killed"
    p = _start(victim, script=SLOW_WRITER)
    ckpts = victim / "checkpoints"
    _wait_for(lambda: any(ckpts.glob(".ckpt_00000004.pt.*.tmp")), p)
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert load_checkpoint(victim)["step"] == 2  # the complete previous checkpoint still loads
    assert any(ckpts.glob(".*.tmp"))  # the half-written file is there, but never pointed to
    _finish(victim, f"train.resume={victim}")
    assert load_checkpoint(victim)["step"] == 14 and not any(ckpts.glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    victim = tmp_path / "term"
    p = _start(victim, "train.steps=100000", "train.ckpt_every=100000")
    _wait_for(lambda: (victim / "metrics.jsonl").exists() and len((victim / "metrics.jsonl").read_text().splitlines()) >= 3, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    step = load_checkpoint(victim)["step"]
    assert 3 <= step < 100000
