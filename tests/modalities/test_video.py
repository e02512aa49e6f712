"""Video modality: tubelet round trips, generated data, folder datasets, bad input, writer, metric."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from modalities.media_common import MediaError, generate_once
from modalities.video import (MovingDigitsDataset, TubeletTokenizer, VideoFolderDataset, VideoSampleWriter,
                              bounce_fit_error, probe, read_frames, write_mp4)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))


def _write(path: Path, frames: np.ndarray, codec: str = "libx264", fps: int = 8) -> Path:
    """Write a clip with an arbitrary container/codec (write_mp4 only does H.264 MP4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _ramp(n: int, h: int, w: int) -> np.ndarray:
    """Frames whose brightness encodes the frame index (decoded index is checkable)."""
    return np.stack([np.full((h, w, 3), 10 + 12 * i, np.uint8) for i in range(n)])


# --- tokenizer ----------------------------------------------------------------------------

def test_tubelet_round_trip_is_exact_and_coords_are_raster():
    tok = TubeletTokenizer(num_frames=8, height=16, width=24, patch=(2, 4, 8))
    x = torch.randn(3, 8, 3, 16, 24)
    z = tok.encode(x)
    assert z.shape == (3, 4 * 4 * 3, 3 * 2 * 4 * 8) and tok.token_dim == 192
    assert torch.equal(tok.decode(z), x)
    c = tok.coords()
    assert c.dtype == torch.long and c.shape == (48, 3) and tok.num_tokens == 48
    assert c[0].tolist() == [0, 0, 0] and c[1].tolist() == [0, 0, 1] and c[3].tolist() == [0, 1, 0]
    assert c[-1].tolist() == [3, 3, 2]
    # token k holds exactly the tubelet at its coordinates
    t, h, w = c[13].tolist()
    block = x[0, 2 * t:2 * t + 2, :, 4 * h:4 * h + 4, 8 * w:8 * w + 8]      # (pt, C, ph, pw)
    assert torch.equal(z[0, 13], block.permute(0, 2, 3, 1).reshape(-1))


def test_tubelet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        TubeletTokenizer(num_frames=16, height=30, width=32, patch=(2, 4, 4))
    tok = TubeletTokenizer()
    with pytest.raises(ValueError, match="num_frames/size"):
        tok.encode(torch.zeros(1, 8, 3, 32, 32))


# --- generated data -----------------------------------------------------------------------

def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def test_moving_digits_are_deterministic_and_decode_with_both_backends(tmp_path):
    a = MovingDigitsDataset(clips_per_class=2, root=str(tmp_path / "a"))
    b = MovingDigitsDataset(clips_per_class=2, root=str(tmp_path / "b"))
    assert a.root != b.root and _digest(a.root) == _digest(b.root) and len(_digest(a.root)) == 20
    assert a.num_classes == 10 and a.class_names == [str(d) for d in range(10)] and len(a.skipped) == 0
    assert sorted(set(a.labels)) == list(range(10))
    x, y = a[5]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert y == a.labels[5]
    path = a.items[5][0]
    dec, pav = read_frames(path, range(16), "decord"), read_frames(path, range(16), "pyav")
    assert dec.shape == pav.shape == (16, 32, 32, 3)
    assert np.abs(dec.astype(int) - pav.astype(int)).max() <= 2   # same frames, colour-conversion rounding
    # A second construction reuses the cache instead of regenerating.
    mtime = path.stat().st_mtime_ns
    MovingDigitsDataset(clips_per_class=2, root=str(tmp_path / "a"))
    assert path.stat().st_mtime_ns == mtime
    # Default location is under $SELFFLOW_CACHE/data.
    c = MovingDigitsDataset(clips_per_class=1)
    assert c.root.parent == tmp_path / "cache" / "data"


def test_generation_is_atomic_and_verified(tmp_path):
    def killed(out: Path) -> int:
        (out / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt  # a generation killed half way

    with pytest.raises(KeyboardInterrupt):
        generate_once("demo", {"a": 1}, killed, root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half data set, no temp dir left
    target = generate_once("demo", {"a": 1}, lambda out: (out / "f").write_bytes(b"1") and 1, root=tmp_path)
    assert json.loads((target / "manifest.json").read_text())["count"] == 1
    (target / "f").unlink()  # a file lost later fails the count check and is rebuilt
    assert generate_once("demo", {"a": 1}, lambda out: (out / "f").write_bytes(b"2") and 1, root=tmp_path) == target
    assert (target / "f").read_bytes() == b"2"

    # Another process (a DDP rank) finishes the same data set while we build: theirs is kept.
    def racing(out: Path) -> int:
        generate_once("race", {"a": 1}, lambda o: (o / "f").write_bytes(b"theirs") and 1, root=tmp_path)
        (out / "f").write_bytes(b"mine")
        return 1

    raced = generate_once("race", {"a": 1}, racing, root=tmp_path)
    assert (raced / "f").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, raced.name])  # no temp dirs left


def test_bounce_metric_separates_real_from_broken_motion(tmp_path):
    ds = MovingDigitsDataset(clips_per_class=1, root=str(tmp_path))
    real = torch.stack([ds[i][0] for i in range(len(ds))])
    m = bounce_fit_error(real)
    assert m["track_rms_px"] < 0.25 and m["empty_frame_frac"] == 0 and len(m["per_clip"]) == 10
    shuffled = real[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    assert bounce_fit_error(shuffled)["track_rms_px"] > 5 * m["track_rms_px"] + 1.0
    noise = bounce_fit_error(torch.rand(2, 16, 3, 32, 32) * 2 - 1)
    assert noise["mass_radius_px"] > 2 * m["mass_radius_px"]
    assert noise["tracked_frac"] == 0.0 and noise["track_rms_px"] is None and m["tracked_frac"] == 1.0
    blank = bounce_fit_error(-torch.ones(1, 16, 3, 32, 32))
    assert blank["empty_frame_frac"] == 1.0


# --- folder dataset -----------------------------------------------------------------------

def test_video_folder_sampling_resize_and_containers(tmp_path):
    root = tmp_path / "ucf"
    _write(root / "Run" / "g01" / "a.mp4", _ramp(20, 48, 40))
    _write(root / "Run" / "b.mkv", _ramp(20, 48, 40))
    _write(root / "Swim" / "c.avi", _ramp(20, 48, 40), codec="mpeg4")
    _write(root / "Swim" / "d.webm", _ramp(20, 48, 40), codec="libvpx")
    (root / "Swim" / "notes.txt").write_text("ignored: not a video extension")
    ds = VideoFolderDataset(root, num_frames=4, frame_stride=3, size=(16, 24), start="center")
    assert ds.class_names == ["Run", "Swim"] and ds.num_classes == 2 and len(ds) == 4 and len(ds.skipped) == 0
    assert ds.labels == [0, 0, 1, 1]
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.shape == (4, 3, 16, 24)
        # 20 frames, span 10 -> centre start 5: frames 5, 8, 11, 14
        level = ((x.mean(dim=(1, 2, 3)) + 1) * 127.5 - 10) / 12
        assert torch.allclose(level, torch.tensor([5.0, 8, 11, 14]), atol=0.5), (ds.items[i][0], level)
    first = VideoFolderDataset(root, num_frames=4, start="first", backend="pyav")
    lv = ((first[0][0].mean(dim=(1, 2, 3)) + 1) * 127.5 - 10) / 12
    assert torch.allclose(lv, torch.tensor([0.0, 1, 2, 3]), atol=0.5)
    rnd = VideoFolderDataset(root, num_frames=16, start="random")
    torch.manual_seed(0)
    starts = {round(float(((rnd[0][0][0].mean() + 1) * 127.5 - 10) / 12)) for _ in range(12)}
    assert starts <= set(range(5)) and len(starts) > 1


def test_video_folder_label_file(tmp_path):
    _write(tmp_path / "clips" / "x.mp4", _ramp(8, 16, 16))
    _write(tmp_path / "clips" / "y.mp4", _ramp(8, 16, 16))
    labels = tmp_path / "labels.csv"
    labels.write_text("# path,class\nclips/x.mp4,zebra\nclips/y.mp4\tant\n")
    ds = VideoFolderDataset(tmp_path, num_frames=8, size=16, label_file=str(labels))
    assert ds.class_names == ["ant", "zebra"] and ds.labels == [1, 0]
    labels.write_text("clips/x.mp4\n")
    with pytest.raises(ValueError, match=r"labels.csv:1: expected 'relative/path,class'"):
        VideoFolderDataset(tmp_path, label_file=str(labels))


def test_bad_videos_are_skipped_counted_and_named(tmp_path):
    root = tmp_path / "data"
    good = write_mp4(root / "a" / "good.mp4", _ramp(16, 32, 32))
    blob = good.read_bytes()
    (root / "a" / "truncated.mp4").write_bytes(blob[: len(blob) // 2])
    (root / "a" / "zero.mp4").write_bytes(b"")
    (root / "a" / "text.mkv").write_text("this is not a video\n")
    write_mp4(root / "a" / "short.mp4", _ramp(5, 32, 32))
    ds = VideoFolderDataset(root, num_frames=16, size=32)
    assert len(ds) == 1 and len(ds.skipped) == 4
    reasons = dict(ds.skipped)
    assert "0 bytes" in reasons[str(root / "a" / "zero.mp4")]
    assert "not a readable video" in reasons[str(root / "a" / "truncated.mp4")]
    assert "not a readable video" in reasons[str(root / "a" / "text.mkv")]
    assert "has 5 frames, needs 16" in reasons[str(root / "a" / "short.mp4")]
    assert "4 file(s) skipped" in ds.skipped.summary() and "short.mp4" in ds.skipped.summary()
    # Direct use names the file.
    with pytest.raises(MediaError, match="truncated.mp4"):
        probe(root / "a" / "truncated.mp4")
    # A file that breaks after probing is skipped at load time and the next item is returned.
    write_mp4(root / "b" / "late.mp4", _ramp(16, 32, 32))
    ds = VideoFolderDataset(root, num_frames=16, size=32)
    (root / "b" / "late.mp4").write_bytes(b"garbage")
    x, y = ds[1]
    assert y == 0 and x.shape == (16, 3, 32, 32) and str(root / "b" / "late.mp4") in dict(ds.skipped)


def test_empty_or_all_bad_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no video files"):
        VideoFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFolderDataset(tmp_path / "missing")
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "z.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no usable video files[\s\S]*z.mp4"):
        VideoFolderDataset(tmp_path / "bad")


# --- writer -------------------------------------------------------------------------------

def test_video_writer_outputs(tmp_path):
    clips = torch.rand(5, 6, 3, 16, 16) * 2 - 1
    paths = VideoSampleWriter(fps=4, scale=2, strip_rows=3).write(clips, torch.arange(5), tmp_path, "step10")
    assert set(paths) == {"video", "gif", "strip", "clips"}
    assert probe(paths["video"]).num_frames == 6
    gif = Image.open(paths["gif"])
    assert gif.n_frames == 6
    strip = Image.open(paths["strip"])
    assert strip.size == (2 * (6 * 17 + 1), 2 * (3 * 17 + 1))   # 6 frames wide, 3 clips tall, 1px borders
    files = sorted(paths["clips"].glob("*.mp4"))
    assert [f.name for f in files] == [f"{i:04d}_c{i}.mp4" for i in range(5)]
    back = torch.from_numpy(read_frames(files[0], range(6))).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert back.shape == (6, 3, 16, 16)


def test_frame_cache_serves_later_epochs(tmp_path):
    root = tmp_path / "data"
    write_mp4(root / "a" / "x.mp4", _ramp(16, 32, 32))
    ds = VideoFolderDataset(root, num_frames=16, size=32, start="first", cache_frames=True)
    first = ds[0][0]
    (root / "a" / "x.mp4").write_bytes(b"")   # decoding again would now fail
    assert torch.equal(ds[0][0], first) and len(ds.skipped) == 0
    with pytest.raises(ValueError, match="deterministic"):
        VideoFolderDataset(root, cache_frames=True, start="random", probe=False)
