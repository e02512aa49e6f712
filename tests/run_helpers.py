"""Helpers for the tests that run ``run.py`` in subprocesses: kill-and-resume and one-vs-two-process
comparisons of whole runs (used by the joint and joint-text run tests)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

import run
from core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def latest_step(run_dir) -> int:
    """Step of the run's newest checkpoint (``checkpoints/latest`` names ``ckpt_XXXXXXXX.pt``), -1 if none."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    return int(pointer.read_text().strip()[5:13]) if pointer.exists() else -1


def assert_same_state(a: dict, b: dict, exact: bool = True, parts=("model", "objective", "ema")):
    """Checkpoints ``a`` and ``b`` hold the same step and weights: bit-equal when ``exact``, else
    within float summation-order noise (rtol 1e-5, atol 1e-6)."""
    assert a["step"] == b["step"]
    for part in parts:
        sa, sb = (a["ema"]["model"], b["ema"]["model"]) if part == "ema" else (a[part], b[part])
        assert sa.keys() == sb.keys(), part
        for k, v in sa.items():
            if exact:
                assert torch.equal(v, sb[k]), f"{part}.{k}"
            else:
                torch.testing.assert_close(sb[k], v, rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")


def sigkill_then_resume(args: list[str], tmp_path: Path, kill_after: int) -> tuple[dict, dict]:
    """Run ``run.py args`` to the end once ("clean"); run it again, SIGKILL it once a checkpoint at
    step >= ``kill_after`` exists, resume it to the end. Returns the two final checkpoints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def start(run_dir, *extra):
        return subprocess.Popen([sys.executable, "run.py", *args, f"run_dir={run_dir}", *extra], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    clean = start(tmp_path / "clean")
    assert clean.wait(timeout=300) == 0, clean.stderr.read()[-3000:]
    victim = tmp_path / "killed"
    p = start(victim)
    deadline = time.time() + 240
    while latest_step(victim) < kill_after:
        assert p.poll() is None and time.time() < deadline, p.stderr.read()[-2000:] if p.poll() is not None else "timeout"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    final = load_checkpoint(tmp_path / "clean")
    assert latest_step(victim) < final["step"]  # killed before the end
    again = start(victim, f"train.resume={victim}")
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    return final, load_checkpoint(victim)


def trained_run_dir(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    """Train ``run.py overrides`` once in this process (for module-scoped fixtures); returns its run dir."""
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp(name)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        run.main(compose(config_name="config", overrides=overrides + [f"run_dir={out}"]))
    return out


def one_and_two_gloo_processes(compose, args: list[str], tmp_path: Path, port: int, *extra_two) -> tuple[dict, dict]:
    """The same run in this process (``tmp_path/one``) and under ``torchrun --nproc_per_node=2`` on
    gloo (``tmp_path/two``, plus ``extra_two`` overrides). Returns both final checkpoints."""
    run.main(compose(args + [f"run_dir={tmp_path / 'one'}"]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "run.py", *args, f"run_dir={tmp_path / 'two'}", *extra_two]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
