"""Moving digits: the embedded default video data set and its own motion metric.

Each clip shows one coloured handwritten digit (scikit-learn's bundled 8x8 digits, so no
download) moving with constant velocity and bouncing off the frame borders. The class is the
digit. A model can only generate such clips well if it keeps the sprite's identity and colour
over time *and* moves it along a straight, constant-speed path, so the data set needs
temporal coherence, which frame-level FID cannot see.

:func:`bounce_fit_error` is the matching metric, with no pretrained network: track the
sprite's centre of mass in every frame and measure how far the track is from the best
constant-velocity-with-bounces trajectory. Sprites are splatted bilinearly at sub-pixel
positions, which moves the centre of mass exactly with the position, so real clips score
near zero (only the H.264 noise remains) and any wobble, jump or flicker in generated clips
shows up in pixels.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from modalities.media_common import generate_once
from modalities.splits import split_seed
from modalities.video.folder import VideoFolderDataset
from modalities.video.io import write_mp4

GENERATOR_VERSION = 1  # bump when the rendering changes: the cache name includes it
CLASS_NAMES = [str(d) for d in range(10)]


def _digit_sprites(sprite_size: int) -> dict[int, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, as float alpha maps in [0, 1], grouped by digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    imgs = torch.nn.functional.interpolate(imgs, size=(sprite_size, sprite_size), mode="bilinear",
                                           align_corners=False, antialias=False)[:, 0].clamp(0, 1).numpy()
    return {d: imgs[digits.target == d] for d in range(10)}


def render_clip(alpha: np.ndarray, colour: np.ndarray, pos0: np.ndarray, vel: np.ndarray,
                num_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one clip -> (uint8 frames ``(T, size, size, 3)``, top-left positions ``(T, 2)`` x,y).

    The sprite's top-left corner moves in ``[0, size - s]`` on each axis and reflects at the
    ends. Sub-pixel positions are splatted bilinearly over four integer offsets.
    """
    s = alpha.shape[0]
    travel = size - s
    pos, vel = pos0.astype(np.float64).copy(), vel.astype(np.float64).copy()
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    track = np.zeros((num_frames, 2))
    for t in range(num_frames):
        track[t] = pos
        canvas = np.zeros((size + 1, size + 1), np.float64)
        x0, y0 = int(np.floor(pos[0])), int(np.floor(pos[1]))
        fx, fy = pos[0] - x0, pos[1] - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                canvas[y0 + dy:y0 + dy + s, x0 + dx:x0 + dx + s] += wy * wx * alpha
        a = np.clip(canvas[:size, :size], 0, 1)[..., None]
        frames[t] = np.round(255 * a * colour).astype(np.uint8)
        pos = pos + vel
        for ax in range(2):  # reflect off the borders
            if pos[ax] < 0:
                pos[ax], vel[ax] = -pos[ax], -vel[ax]
            elif pos[ax] > travel:
                pos[ax], vel[ax] = 2 * travel - pos[ax], -vel[ax]
    return frames, track


def generate_moving_digits(out: Path, num_frames: int, size: int, sprite_size: int,
                           clips_per_class: int, seed: int, fps: float) -> int:
    """Write ``out/<digit>/<digit>_<i>.mp4`` plus ``trajectories.json``; return the file count."""
    sprites = _digit_sprites(sprite_size)
    travel = size - sprite_size
    meta = {}
    for d in range(10):
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, d, i])  # one stream per clip: order-independent
            alpha = sprites[d][rng.integers(len(sprites[d]))]
            colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), 1.0))
            pos0 = rng.uniform(0, travel, size=2)
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5)
            vel = speed * np.array([np.cos(angle), np.sin(angle)])
            frames, track = render_clip(alpha, colour, pos0, vel, num_frames, size)
            rel = f"{d}/{d}_{i:04d}.mp4"
            write_mp4(out / rel, frames, fps=fps)
            meta[rel] = {"pos0": pos0.round(4).tolist(), "vel": vel.round(4).tolist(),
                         "colour": colour.round(4).tolist()}
    (out / "trajectories.json").write_text(json.dumps(meta))
    return 10 * clips_per_class + 1


class MovingDigitsDataset(VideoFolderDataset):
    """Procedural clips of bouncing coloured digits; generated into the cache on first use.

    Args:
        num_frames, size: clip shape ``(num_frames, 3, size, size)``.
        sprite_size: side of the digit sprite in pixels.
        clips_per_class: clips per digit (10 classes).
        seed: generator seed; a different seed (or any other argument) is a different cache entry.
        fps: frame rate stored in the MP4s.
        backend: ``auto`` (decord, PyAV fallback), ``decord`` or ``pyav``.
        root: where generated data sets live (default ``$SELFFLOW_CACHE/data``).
        cache_frames: keep decoded clips in memory after their first read (the set is small).
        heldout_per_class: clips per digit of the held-out reference split (seed + 1000, its own
            cache folder; see modalities/splits.py); 0 = none.
    """

    def __init__(self, num_frames: int = 16, size: int = 32, sprite_size: int = 12,
                 clips_per_class: int = 64, seed: int = 0, fps: float = 8.0,
                 backend: str = "auto", root: str | None = None, cache_frames: bool = True,
                 heldout_per_class: int = 32):
        self._args = dict(num_frames=num_frames, size=size, sprite_size=sprite_size, fps=fps, backend=backend,
                          root=root, cache_frames=cache_frames)
        self.seed, self.heldout_per_class = int(seed), int(heldout_per_class)
        if not 0 < sprite_size < size:
            raise ValueError(f"sprite_size must be in (0, size={size}), got {sprite_size}")
        params = dict(version=GENERATOR_VERSION, num_frames=num_frames, size=size, sprite_size=sprite_size,
                      clips_per_class=clips_per_class, seed=seed, fps=fps)
        data_dir = generate_once(
            "moving_digits", params,
            lambda out: generate_moving_digits(out, num_frames, size, sprite_size, clips_per_class, seed, fps),
            root=Path(root).expanduser() if root else None,
        )
        self.sprite_size = sprite_size
        super().__init__(data_dir, num_frames=num_frames, frame_stride=1, size=size,
                         start="first", backend=backend, cache_frames=cache_frames)

    def split(self, name: str, clips_per_class: int) -> "MovingDigitsDataset":
        """Another split of the same generator (``heldout`` | ``classifier``), in its own folder."""
        return MovingDigitsDataset(clips_per_class=clips_per_class, seed=split_seed(self.seed, name),
                                   heldout_per_class=0, **self._args)

    def reference_dataset(self) -> "MovingDigitsDataset | None":
        return self.split("heldout", self.heldout_per_class) if self.heldout_per_class > 0 else None

    def reference_root(self) -> Path | None:
        ref = self.reference_dataset()
        return None if ref is None else ref.root


# --- metric -------------------------------------------------------------------------------

def track_centres(clips: Tensor, threshold: float = 0.15) -> tuple[Tensor, Tensor]:
    """Centre of mass of the bright sprite per frame.

    Args:
        clips: ``(B, T, 3, H, W)`` in [-1, 1] on a black background.
    Returns:
        centres ``(B, T, 2)`` as (x, y) pixels, and ``empty (B, T)`` bool for frames with no
        sprite (their centre is set to the frame centre, which the fit then penalises).
    """
    intensity = ((clips.float() + 1) / 2).clamp(0, 1).amax(dim=2)  # (B, T, H, W)
    w = (intensity - threshold).clamp(min=0)
    mass = w.sum(dim=(-1, -2))
    H, W = intensity.shape[-2:]
    xs = torch.arange(W, dtype=w.dtype)
    ys = torch.arange(H, dtype=w.dtype)
    safe = mass.clamp(min=1e-8)
    cx = (w.sum(-2) * xs).sum(-1) / safe
    cy = (w.sum(-1) * ys).sum(-1) / safe
    empty = mass < 1e-3
    cx = torch.where(empty, torch.full_like(cx, (W - 1) / 2), cx)
    cy = torch.where(empty, torch.full_like(cy, (H - 1) / 2), cy)
    return torch.stack([cx, cy], -1), empty


def _reflect(u: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Triangle wave: position in [0, length] of a point at unfolded coordinate u."""
    period = 2 * length
    return length - np.abs(np.mod(u, period) - length)


def fit_bounce(p: np.ndarray, max_speed: float = 4.0) -> tuple[float, np.ndarray]:
    """Best constant-velocity-with-reflections fit to a 1-D track ``p (T,)``.

    Model: ``p(t) = lo + reflect(u0 + v t, hi - lo)``. The walls may lie up to half a step
    beyond the observed extremes (a bounce between two frames is never observed at the
    wall), so ``lo``/``hi`` are searched just outside ``[min p, max p]``. A coarse grid over
    (u0, v, wall offsets) is followed by a finer grid around the best point.
    Returns (RMS residual in pixels, fitted track).
    """
    T = p.shape[0]
    t = np.arange(T, dtype=np.float64)
    pmin, pmax = float(p.min()), float(p.max())

    def search(u_grid, v_grid, e_lo, e_hi):
        lo = pmin - e_lo[:, None]                        # (E, 1)
        hi = pmax + e_hi[None, :]                        # (1, E)
        lo, hi = np.broadcast_arrays(lo, hi)
        lo, length = lo.reshape(-1), np.maximum((hi - lo).reshape(-1), 1e-6)   # (W,)
        u = u_grid[:, None, None, None] + v_grid[None, :, None, None] * t     # (U, V, 1, T)
        pred = lo[None, None, :, None] + _reflect(u, length[None, None, :, None])  # (U, V, W, T)
        err = ((pred - p) ** 2).mean(-1)
        i, j, k = np.unravel_index(np.argmin(err), err.shape)
        return err[i, j, k], u_grid[i], v_grid[j], lo[k], length[k], pred[i, j, k]

    ext = np.linspace(0, max_speed / 2, 3)
    span = max(pmax - pmin + 2 * ext[-1], 1e-3)
    best = search(np.linspace(0, 2 * span, 41), np.linspace(-max_speed, max_speed, 41), ext, ext)
    du, dv, de = 2 * span / 40, 2 * max_speed / 40, ext[1] - ext[0]
    for _ in range(2):  # two refinements, each 4x finer around the current best
        _, u0, v, lo, length, _ = best
        best = search(np.linspace(u0 - du, u0 + du, 9), np.linspace(v - dv, v + dv, 9),
                      np.clip(pmin - lo + np.linspace(-de, de, 5), 0, None),
                      np.clip(lo + length - pmax + np.linspace(-de, de, 5), 0, None))
        du, dv, de = du / 4, dv / 4, de / 4
    err, *_, pred = best
    return float(np.sqrt(err)), pred


SPRITE_MAX_RADIUS_PX = 7.0  # RMS radius of a sprite's mass: real 12 px digits <= 4.7 px, noise ~13 px


def bounce_fit_error(clips: Tensor, threshold: float = 0.15, max_radius_px: float = SPRITE_MAX_RADIUS_PX,
                     path_tol_px: float | None = None, shape_min_corr: float | None = None) -> dict:
    """Motion-consistency metric for moving-digit clips (lower is better; real clips ~0.05 px).

    Args:
        clips: ``(B, T, 3, H, W)`` in [-1, 1].
    Returns:
        ``tracked_frac``: fraction of clips with a sprite in every frame (a *tracked* clip); a
        frame has a sprite when its bright mass is non-empty and compact (RMS radius at most
        ``max_radius_px``). An empty frame has no position, and a clip of empty frames (or of
        noise, whose centre sits still) would otherwise fit a still track perfectly, so the
        error is taken over tracked clips only.
        ``track_rms_px``: mean over tracked clips of the per-clip RMS residual (x and y) of the
        best constant-velocity-with-bounces fit to the sprite's centre-of-mass track; None when
        no clip is tracked (never 0 for "nothing to track").
        ``mass_radius_px``: mean RMS radius of the bright mass around its centre; a compact
        sprite has ~3 px, a frame full of noise ~13 px (its centre sits still, so the track
        alone would call it perfect).
        ``radius_jitter_px``: mean over clips of the std over time of that radius (a sprite
        that changes shape or flickers scores high).
        ``empty_frame_frac``, ``track_rms_px_median`` and ``per_clip`` (list of track RMS,
        None for an untracked clip).
        ``path_dev_px``: mean over tracked clips of the largest per-frame distance of the centre
        from the fitted path (``per_clip_dev``: per clip, None when untracked).
        ``shape_corr``: mean over clips of :func:`shape_consistency` (the worst consecutive-frame
        correlation of the motion-aligned sprite; 1 = the same glyph in every frame).
        With ``path_tol_px`` and/or ``shape_min_corr`` the tracked criterion is strict: a clip is
        tracked only if, besides a compact sprite in every frame, every centre lies within
        ``path_tol_px`` of the fitted constant-velocity-with-bounces path and consecutive frames
        correlate at least ``shape_min_corr`` after alignment, so a sprite that morphs or is
        swapped for another glyph fails even when its centre moves on a good path.
        ``compact_frac`` is then the lenient fraction (sprite in every frame only).
    """
    if clips.dim() != 5:
        raise ValueError(f"bounce_fit_error expects clips (B, T, 3, H, W), got {tuple(clips.shape)}")
    clips = clips.detach().cpu()
    centres, empty = track_centres(clips, threshold)
    radius = _mass_radius(clips, centres, threshold)  # (B, T)
    compact = ~(empty | (radius > max_radius_px)).any(dim=1)  # (B,)
    per_clip, per_clip_dev = [], []
    for c, ok in zip(centres.double().numpy(), compact.tolist()):
        if not ok:
            per_clip.append(None)
            per_clip_dev.append(None)
            continue
        ex, px = fit_bounce(c[:, 0])
        ey, py = fit_bounce(c[:, 1])
        per_clip.append(float(np.sqrt((ex ** 2 + ey ** 2) / 2)))
        per_clip_dev.append(float(np.sqrt((c[:, 0] - px) ** 2 + (c[:, 1] - py) ** 2).max()))
    corr = shape_consistency(clips, centres, threshold)  # (B,)
    tracked = compact.clone()
    if path_tol_px is not None:
        tracked &= torch.tensor([d is not None and d <= path_tol_px for d in per_clip_dev], dtype=torch.bool)
    if shape_min_corr is not None:
        tracked &= corr >= shape_min_corr
    # the error is reported over the (lenient) compact clips: it says how far off the path they are
    arr = np.array([e for e in per_clip if e is not None])
    dev = np.array([d for d in per_clip_dev if d is not None])
    return {"track_rms_px": float(arr.mean()) if arr.size else None,
            "track_rms_px_median": float(np.median(arr)) if arr.size else None,
            "tracked_frac": float(tracked.float().mean()), "compact_frac": float(compact.float().mean()),
            "path_dev_px": float(dev.mean()) if dev.size else None, "shape_corr": float(corr.mean()),
            "mass_radius_px": float(radius.mean()), "radius_jitter_px": float(radius.std(dim=1).mean()),
            "empty_frame_frac": float(empty.float().mean()), "per_clip": per_clip, "per_clip_dev": per_clip_dev,
            "per_clip_shape_corr": corr.tolist()}


def shape_consistency(clips: Tensor, centres: Tensor | None = None, threshold: float = 0.15) -> Tensor:
    """Worst similarity of the moving sprite between any two frames of a clip, ``(B,)`` in [0, 1].

    For every pair of frames ``i < j``, frame ``i`` is shifted (bilinearly, sub-pixel) by the
    centre's displacement to frame ``j`` and compared with frame ``j`` by cosine similarity of
    the intensities. A rigidly moving sprite scores close to 1 (only resampling blur and codec
    noise differ); another glyph, a flickering blob, or a slow morph (all pairs, not only
    neighbours, so small steps add up) scores lower, even when the centre of mass moves on a
    perfect path (MNIST digits are centred by their mass, so swapping one for another barely
    moves the centre). A pair with an empty frame scores 0.

    Args:
        clips: ``(B, T, C, H, W)`` in [-1, 1] on a dark background.
        centres: ``(B, T, 2)`` (x, y) from :func:`track_centres` (computed when None).
    """
    if centres is None:
        centres, _ = track_centres(clips, threshold)
    intensity = ((clips.float() + 1) / 2).clamp(0, 1).amax(dim=2)  # (B, T, H, W)
    B, T, H, W = intensity.shape
    if T < 2:
        return torch.ones(B)
    i, j = torch.triu_indices(T, T, offset=1)                       # all pairs i < j: P = T(T-1)/2
    prev, nxt = intensity[:, i].reshape(-1, 1, H, W), intensity[:, j].reshape(-1, H, W)
    d = (centres[:, j] - centres[:, i]).reshape(-1, 2).float()        # (B*P, 2) displacement x, y
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    # sample frame i at (x - dx, y - dy): its sprite moved to where the sprite of frame j is
    gx = (xs[None] - d[:, 0, None, None]) * 2 / (W - 1) - 1
    gy = (ys[None] - d[:, 1, None, None]) * 2 / (H - 1) - 1
    moved = torch.nn.functional.grid_sample(prev, torch.stack([gx, gy], -1), mode="bilinear",
                                            padding_mode="zeros", align_corners=True)[:, 0]
    num = (moved * nxt).sum((-1, -2))
    den = (moved.square().sum((-1, -2)) * nxt.square().sum((-1, -2))).sqrt()
    sim = torch.where(den > 1e-8, num / den.clamp(min=1e-8), torch.zeros_like(num))
    return sim.view(B, -1).amin(1)


def _mass_radius(clips: Tensor, centres: Tensor, threshold: float) -> Tensor:
    """RMS distance ``(B, T)`` of the above-threshold mass from its centre."""
    w = (((clips.float() + 1) / 2).clamp(0, 1).amax(dim=2) - threshold).clamp(min=0)  # (B, T, H, W)
    H, W = w.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=w.dtype), torch.arange(W, dtype=w.dtype), indexing="ij")
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return ((w * d2).sum((-1, -2)) / w.sum((-1, -2)).clamp(min=1e-8)).sqrt()


def motion_report(fake: Tensor, dataset=None, num_real: int = 256, path_tol_px: float | None = None,
                  shape_min_corr: float | None = None) -> dict:
    """The motion metric on generated clips, next to the same metric on real clips.

    Intended for the run's evaluation step (``modality.metrics.motion`` in
    ``configs/modality/video.yaml``). Only meaningful for moving-digit-like data (one bright
    sprite on a dark background).

    Args:
        fake: generated clips ``(B, T, 3, H, W)`` in [-1, 1].
        dataset: the training dataset; the real clips scored next to the samples come from its
            held-out split (``reference_dataset()``) when it has one, evenly spaced.
        num_real: real clips to score.
        path_tol_px, shape_min_corr: the strict tracked criterion of :func:`bounce_fit_error`
            (None: the lenient one, a compact sprite in every frame).
    Returns:
        ``{"bounce_fit_px": ..., "tracked_frac": ..., "bounce_fit_px_real": ..., ...}``;
        ``bounce_fit_px`` is over tracked clips only (None when none is tracked), so read it
        together with ``tracked_frac`` (real clips: 1.0).
    """
    out = {}
    strict = dict(path_tol_px=path_tol_px, shape_min_corr=shape_min_corr)
    f = bounce_fit_error(fake, **strict)
    out.update({"bounce_fit_px": f["track_rms_px"], "tracked_frac": f["tracked_frac"],
                "compact_frac": f["compact_frac"], "path_dev_px": f["path_dev_px"], "shape_corr": f["shape_corr"],
                **{k: v for k, v in strict.items() if v is not None},
                "mass_radius_px": f["mass_radius_px"],
                "radius_jitter_px": f["radius_jitter_px"], "empty_frame_frac": f["empty_frame_frac"],
                "num_fake": int(fake.shape[0])})
    if f["track_rms_px"] is None:
        out["reason"] = "no generated clip has a sprite in every frame (tracked_frac = 0): nothing to fit"
    if dataset is not None and hasattr(dataset, "reference_dataset"):
        dataset = dataset.reference_dataset() or dataset
    if dataset is not None and len(dataset):
        n = min(num_real, len(dataset))
        idx = torch.linspace(0, len(dataset) - 1, n).round().long().unique().tolist()
        real = torch.stack([dataset[i][0] for i in idx])
        r = bounce_fit_error(real, **strict)
        out.update({"bounce_fit_px_real": r["track_rms_px"], "tracked_frac_real": r["tracked_frac"],
                    "compact_frac_real": r["compact_frac"], "path_dev_px_real": r["path_dev_px"],
                    "shape_corr_real": r["shape_corr"],
                    "mass_radius_px_real": r["mass_radius_px"],
                    "radius_jitter_px_real": r["radius_jitter_px"], "num_real": len(idx)})
    return out


def motion_metrics(fake: Tensor, dataset=None, num_real: int = 256, path_tol_px: float | None = None,
                   shape_min_corr: float | None = None) -> list[dict]:
    """:func:`motion_report` as two finished metric records for the evaluation hook.

    ``motion_tracked_frac`` (higher is better; real clips 1.0) and ``motion_bounce_fit_px``
    (over tracked clips only; lower is better) are reported side by side, so a table never shows
    a small bounce-fit error without the fraction of clips it was measured on. Each record has
    the real clips' value as ``real_value`` and the whole report as ``details``.

    With ``path_tol_px`` / ``shape_min_corr`` (Moving MNIST: 0.5 px, 0.88) ``motion_tracked_frac``
    is the strict fraction (on the path within the tolerance, one rigid glyph), and a third
    record ``motion_shape_corr`` (mean worst pairwise frame similarity, real ~0.97) follows.
    """
    rep = motion_report(fake, dataset, num_real=num_real, path_tol_px=path_tol_px, shape_min_corr=shape_min_corr)
    common = {"extractor": "none (network-free)", "details": rep}
    fit = {"metric": "motion_bounce_fit_px", "value": rep["bounce_fit_px"],
           "real_value": rep.get("bounce_fit_px_real"), **common}
    if rep["bounce_fit_px"] is None:
        fit.update(available=False, reason=rep["reason"])
    tracked = {"metric": "motion_tracked_frac", "value": rep["tracked_frac"],
               "real_value": rep.get("tracked_frac_real"), **common}
    if path_tol_px is None and shape_min_corr is None:
        return [tracked, fit]
    tracked["criterion"] = (f"compact sprite in every frame, centre within {path_tol_px} px of the fitted "
                            f"bounce path, pairwise aligned-frame similarity >= {shape_min_corr}")
    shape = {"metric": "motion_shape_corr", "value": rep["shape_corr"], "real_value": rep.get("shape_corr_real"),
             **common}
    return [tracked, fit, shape]
