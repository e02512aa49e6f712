import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from evals_helpers import require

from evals.api import DEFAULT_METRICS, evaluate

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "evals", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_cli_fad_prints_provenance_json(tmp_path):
    require("crepe_tiny")
    import soundfile as sf

    t = np.arange(16000) / 16000
    for side, freqs in [("real", (220, 440, 880)), ("fake", (230, 450, 870))]:
        (tmp_path / side).mkdir()
        for f in freqs:
            sf.write(tmp_path / side / f"{f}.wav", 0.5 * np.sin(2 * np.pi * f * t), 16000, subtype="FLOAT")
    res = run_cli("fad", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                  "--metrics", "fd_crepe", "--cache-dir", str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)[0]
    assert rec["metric"] == "fd_crepe" and rec["value"] > 0 and rec["n_real"] == 3 and rec["n_fake"] == 3
    assert rec["fake_source"] == str(tmp_path / "fake")


def test_cli_reports_unavailable_metric_with_exit_code_3(tmp_path):
    (tmp_path / "a").mkdir()
    res = run_cli("fvd", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "a"), "--metrics", "fvd",
                  "--i3d", str(tmp_path / "i3d_torchscript.pt"))
    assert res.returncode == 3, res.stderr
    rec = json.loads(res.stdout)[0]
    assert rec["available"] is False and "i3d_torchscript.pt" in rec["reason"]


def test_cli_weights_show_names_the_fix():
    res = run_cli("weights", "show", "i3d")
    assert res.returncode == 0 and "SELFFLOW_WEIGHTS_I3D" in res.stdout and "i3d_torchscript.pt" in res.stdout


@pytest.mark.parametrize("modality", sorted(DEFAULT_METRICS))
def test_no_reference_set_gives_unavailable_records(modality, tmp_path):
    recs = evaluate(modality, None, None, None, {"step": 7})
    assert [r["metric"] for r in recs] == list(DEFAULT_METRICS[modality])
    assert all(not r["available"] and "no reference set" in r["reason"] and r["step"] == 7 for r in recs)
    with pytest.raises(FileNotFoundError):
        evaluate(modality, None, tmp_path / "missing", None, {}, strict=True)
