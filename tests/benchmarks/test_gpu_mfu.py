"""benchmarks/gpu_mfu.py: the analytical FLOP counter against a hand count, and its CPU smoke run."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def mfu():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("gpu_mfu")
    finally:
        sys.path.remove(str(BENCH))


def test_flop_count_matches_a_hand_count_for_a_tiny_config(mfu):
    # D = 4, one block, N = 3 tokens, C = 2 in, 4 out, batch 1, mlp ratio 4 (hidden 16).
    a = mfu.Arch(hidden=4, depth=1, tokens=3, in_channels=2, out_channels=4)
    qkv, proj, fc1, fc2 = 2 * 4 * 12, 2 * 4 * 4, 2 * 4 * 16, 2 * 16 * 4  # per token
    attn = 2 * 3 * 4 + 2 * 3 * 4  # per token: its row of Q K^T and of A V
    embed, final = 2 * 2 * 4, 2 * 4 * 4
    per_token = embed + qkv + proj + fc1 + fc2 + attn + final  # = 16 + 96 + 32 + 128 + 128 + 48 + 32 = 480
    assert per_token == 480
    per_row = 2 * (256 * 4 + 4 * 4) + 2 * 4 * 24 + 2 * 4 * 8  # t-MLP, block adaLN, final adaLN = 2336
    fwd = 3 * per_token + per_row
    assert mfu.forward_flops(a, batch=1, blocks=1, rows=1) == fwd
    assert mfu.flops_per_step("fm", a, batch=5)["total"] == 3 * 5 * fwd
    # Self-Flow: DTS doubles the conditioning rows, the head costs 2 (D 2D + 2D D) per token, and the
    # teacher's truncated forward (embedding + conditioning + 1 block, no final layer) is added once.
    head = 2 * (4 * 8 + 8 * 4)
    teacher = 3 * (embed + qkv + proj + fc1 + fc2 + attn) + 2 * (256 * 4 + 4 * 4) + 2 * 4 * 24
    sf = mfu.flops_per_step("selfflow", a, batch=1, teacher_layer=1)
    assert sf["teacher"] == teacher
    assert sf["total"] == 3 * (3 * per_token + 2 * per_row + 3 * head) + teacher


def test_sit_xl_step_is_about_six_times_params_per_token(mfu):
    a = mfu.Arch(hidden=1152, depth=28, tokens=256, in_channels=16, out_channels=32)
    fm = mfu.flops_per_step("fm", a, batch=1)["total"]
    params_in_matmuls = 28 * 12 * 1152**2  # qkv + proj + mlp weights: 24 D^2 FLOPs per token per block
    assert 1.0 < fm / (6 * 256 * params_in_matmuls) < 1.1  # + attention (4 N D / 24 D^2 = 3.7 %) + the rest


def test_cpu_smoke_run_prints_both_methods(mfu, tmp_path, capsys):
    out = tmp_path / "mfu.json"
    assert mfu.main(["--quick", "--modes", "eager", "--device", "cpu", "--peak-tflops", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["mode"]) for r in rows] == [("fm", "eager"), ("selfflow", "eager")]
    for r in rows:
        assert r["median_ms"] > 0 and r["nonfinite_steps"] == 0 and 0 < r["mfu"] < 1
    assert rows[1]["teacher_gflop_per_step"] > 0 and rows[0]["teacher_gflop_per_step"] == 0
    assert "TARGET mfu fm eager: MISSED" in capsys.readouterr().out  # a CPU step is far from 40 % of 1 TFLOP/s
