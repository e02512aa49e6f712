"""``python -m evals`` through main(argv): mp3 input, --save-stats round trip, summary line, flags."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from evals_helpers import require, smooth_images

from evals.__main__ import build_parser, main, resolve_device, summary_line


def _tones(folder, freqs, fmt="WAV", ext="wav", seconds=1.0):
    folder.mkdir(parents=True)
    t = np.arange(int(16000 * seconds)) / 16000
    for f in freqs:
        sf.write(folder / f"{f}.{ext}", (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000, format=fmt)
    return folder


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_fad_reads_mp3_as_training_does(tmp_path, capsys):
    require("crepe_tiny")
    from evals.audio_io import decode_audio
    from modalities.audio.io import read_audio

    real = _tones(tmp_path / "real", (220, 440, 880), fmt="MP3", ext="mp3")
    fake = _tones(tmp_path / "fake", (230, 450, 870))
    a, sr = decode_audio(real / "440.mp3")
    b, sr2 = read_audio(real / "440.mp3")
    assert sr == sr2 == 16000 and np.array_equal(a, b.numpy())  # one decoder for training and evaluation
    rc, out, err = _run(capsys, "fad", "--real", real, "--fake", fake, "--metrics", "fd_crepe",
                        "--cache-dir", tmp_path / "cache", "--device", "auto")
    assert rc == 0, err
    rec = json.loads(out)[0]  # stdout is pure JSON
    assert rec["available"] and rec["n_real"] == 3 and rec["n_fake"] == 3 and rec["value"] > 0
    assert f"fd_crepe = {rec['value']:.4f} (3 fake vs 3 real, crepe_tiny" in err


def test_save_stats_round_trip_and_wrong_network_refused(tmp_path, capsys):
    require("crepe_tiny")
    real = _tones(tmp_path / "real", (220, 440, 880, 660))
    fake = _tones(tmp_path / "fake", (230, 450, 870))
    stats = tmp_path / "ref_crepe.npz"
    rc, out, err = _run(capsys, "fad", "--real", real, "--save-stats", stats, "--metrics", "fd_crepe",
                        "--cache-dir", tmp_path / "cache")
    assert rc == 0 and stats.is_file()
    assert json.loads(out)[0]["n_real"] == 4 and "saved fd_crepe reference statistics of 4 items" in err
    rc, out, _ = _run(capsys, "fad", "--real", real, "--fake", fake, "--metrics", "fd_crepe",
                      "--cache-dir", tmp_path / "cache2")
    from_folder = json.loads(out)[0]
    rc, out, err = _run(capsys, "fad", "--real", stats, "--fake", fake, "--metrics", "fd_crepe")
    from_stats = json.loads(out)[0]
    assert rc == 0 and from_stats["value"] == pytest.approx(from_folder["value"], rel=1e-9, abs=1e-9)
    assert from_stats["n_real"] == 4
    with pytest.raises(ValueError, match=r"ref_crepe.npz: statistics of 'crepe_tiny.*fd_aisfx needs"):
        main(["fad", "--real", str(stats), "--fake", str(fake), "--metrics", "fd_aisfx"])


def test_fid_save_stats_keeps_precision_recall(tmp_path, capsys):
    require("inception")
    from PIL import Image

    from evals.images import quantize, save_adm_npz

    real = tmp_path / "real" / "c"
    real.mkdir(parents=True)
    for i, img in enumerate(quantize(smooth_images(10, seed=1))):
        Image.fromarray(img).save(real / f"{i}.png")
    fake = save_adm_npz(tmp_path / "fake.npz", smooth_images(8, seed=2))
    stats = tmp_path / "ref.npz"
    rc, _, _ = _run(capsys, "fid", "--real", tmp_path / "real", "--save-stats", stats, "--batch-size", "4",
                    "--cache-dir", tmp_path / "cache", "--device", "cpu")
    assert rc == 0
    rc, out, _ = _run(capsys, "fid", "--real", tmp_path / "real", "--fake", fake, "--batch-size", "4",
                      "--cache-dir", tmp_path / "cache2", "--device", "cpu")
    folder = {r["metric"]: r["value"] for r in json.loads(out)}
    rc, out, err = _run(capsys, "fid", "--real", stats, "--fake", fake, "--batch-size", "4", "--device", "cpu")
    saved = {r["metric"]: r["value"] for r in json.loads(out)}
    assert rc == 0 and set(saved) == {"fid", "sfid", "precision", "recall"}
    assert saved == pytest.approx(folder, rel=1e-9, abs=1e-9)
    assert re.search(r"(^|\r)fid = \d+\.\d{4} \(8 fake vs 10 real, TF-2015 Inception", err, re.M)


def test_flags_and_help():
    help_text = build_parser()._subparsers._group_actions[0].choices["fid"].format_help()
    assert "evenly spaced over the sorted file list" in " ".join(help_text.split())
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(SystemExit):
        main(["fid", "--real", "x"])  # neither --fake nor --save-stats
    line = summary_line({"metric": "fvd", "available": False, "reason": "i3d missing"})
    assert line == "fvd: unavailable (i3d missing)"


def test_save_stats_without_the_network_says_why(tmp_path, capsys, monkeypatch):
    # main() sets the variable from --i3d; setenv first so that monkeypatch removes it again afterwards
    monkeypatch.setenv("SELFFLOW_WEIGHTS_I3D", str(tmp_path / "i3d_torchscript.pt"))
    (tmp_path / "real").mkdir()
    rc, out, err = _run(capsys, "fvd", "--real", tmp_path / "real", "--save-stats", tmp_path / "s.npz",
                        "--metrics", "fvd", "--i3d", tmp_path / "i3d_torchscript.pt")
    assert rc == 3 and out == "" and "i3d_torchscript.pt" in err and not (tmp_path / "s.npz").exists()


def test_an_empty_metric_list_does_no_work():
    from evals.api import evaluate

    # no reference at all: any feature extraction would have to fail
    assert evaluate("image", fake=torch.zeros(2, 3, 8, 8), real="/nonexistent", metrics=[]) == []
