"""The one call the training job makes: score generated samples against a reference set.

    from evals.api import evaluate
    records = evaluate("image", fake=samples, real="data/val", metrics=["fid", "sfid"],
                       protocol={"sampler": "euler", "nfe": 50, "cfg_scale": 1.0})

Returns one provenance record per requested metric (evals/provenance.py). A metric whose network
or optional package is missing becomes ``{"available": False, "reason": ...}`` rather than an
exception, unless ``strict=True``; bad *inputs* (wrong shapes, unreadable reference, missing
sample rate) always raise, because they are the caller's bug.

Inputs per modality:

* image: ``fake`` float (N, 3, H, W) in [-1, 1], uint8 (N, H, W, 3), an ADM npz or an image
  folder; ``real`` an image folder (ImageFolder layout), an ADM npz (samples or reference batch)
  or a statistics npz (``mu``/``sigma``[/``mu_s``/``sigma_s``]). Metrics: fid, sfid, precision,
  recall, is, fd_dinov2 (Frechet distance of DINOv2 ViT-L/14 class tokens; a network independent
  of the Inception, so it is the check when REPA aligned to the Inception).
* video: ``fake`` float (N, T, 3, H, W) in [-1, 1] (or a folder of videos); ``real`` a folder of
  videos (mp4, decoded with PyAV) or a statistics npz. Metrics: fid_frame, fvd.
* audio: ``fake`` float (N, samples) with ``sample_rate`` (or a folder of audio files); ``real`` a
  folder of audio files (wav/flac/ogg/mp3, decoded as the training data sets do) or a statistics
  npz. Metrics: fd_aisfx, fd_crepe, fad_vggish, fad_pann, fad_clap, fad_encodec.
"""

from __future__ import annotations

from pathlib import Path

from . import provenance as prov
from .frechet import frechet_distance, is_stats_file, load_stats
from .weights import MissingWeightsError

METRICS = {
    "image": ("fid", "sfid", "precision", "recall", "is", "fd_dinov2"),
    "video": ("fid_frame", "fvd"),
    "audio": ("fd_aisfx", "fd_crepe", "fad_vggish", "fad_pann", "fad_clap", "fad_encodec"),
}

# metrics=None ("auto" in configs/eval): what the training job reports by default
DEFAULT_METRICS = {
    "image": ("fid", "sfid", "precision", "recall"),
    "video": ("fid_frame", "fvd"),
    "audio": ("fd_aisfx",),
}

FID_FRAME_NOTE = ("FID over all frames with the TF-2015 Inception; blind to frame order and motion "
                  "by construction; not FVD")


def _check(modality: str, metrics) -> list[str]:
    if modality not in METRICS:
        raise ValueError(f"modality (metric family) must be one of {sorted(METRICS)}, got {modality!r}")
    metrics = list(DEFAULT_METRICS[modality] if metrics is None else metrics)
    bad = [m for m in metrics if m not in METRICS[modality]]
    if bad:
        raise ValueError(f"metrics {bad} are not defined for {modality}; available: {list(METRICS[modality])}")
    return metrics


def _src(x) -> str | None:
    return str(x) if isinstance(x, (str, Path)) else None


def evaluate(modality: str, fake, real, metrics, protocol: dict | None = None, cache_dir=None, *,
             sample_rate: int | None = None, device: str = "cpu", batch_size: int = 50,
             limit_real: int | None = None, strict: bool = False, fvd_protocol: str = "fvd2048_16f",
             extractors: dict | None = None, progress: bool = True, video_batch_size: int = 8) -> list[dict]:
    """Score ``fake`` against ``real``; returns a list of provenance records (one per metric).

    modality: the metric family, a key of ``METRICS`` (a run passes its ``modality.eval_family``, so
    any modality whose samples look like images, videos or audio reuses these metrics).
    metrics: names from ``METRICS[modality]``, or None for ``DEFAULT_METRICS[modality]``.
    real: None, a missing path or a folder without media gives "unavailable" records (the run
    has no reference set) rather than an exception, unless ``strict``.
    sample_rate (audio): rate of ``fake`` waveforms; ``protocol["sample_rate"]`` is used if absent.
    limit_real: score at most N reference items, evenly spaced over the sorted files (every class
        is represented), for CPU runs.
    protocol: caller facts recorded with every number (sampler, nfe, cfg_scale, checkpoint, step,
    seed, method, anything else). cache_dir: where reference statistics are cached by content hash
    (default ``~/.cache/selfflow-lab/stats``). extractors: injected networks for tests, e.g.
    ``{"fvd": I3DExtractor(module=...)}`` or ``{"fad_vggish": model}``.
    batch_size: images per Inception/DINOv2 call; video_batch_size: clips per I3D call.
    progress: tqdm bars on stderr over feature extraction (rank 0 only; core/progress.py).
    A statistics npz written by ``python -m evals ... --save-stats`` records its extractor, and a
    mismatch with the metric's network is an error rather than a meaningless number.
    """
    metrics = _check(modality, metrics)
    if not metrics:  # an explicit empty list (eval.metrics=[]): no network work at all
        return []
    protocol = dict(protocol or {})
    if sample_rate is None:
        sample_rate = protocol.get("sample_rate")
    if real is None or (isinstance(real, (str, Path)) and not Path(real).exists()):
        err = FileNotFoundError(f"no reference set: {real!r} does not exist; set the dataset root or pass a "
                                "statistics npz")
        return _unavailable(metrics, err, protocol, strict)
    run = {"image": _image, "video": _video, "audio": _audio}[modality]
    try:
        return run(fake, real, metrics, protocol, cache_dir, sample_rate=sample_rate, device=device,
                   batch_size=batch_size, limit_real=limit_real, strict=strict, fvd_protocol=fvd_protocol,
                   extractors=extractors or {}, progress=progress, video_batch_size=video_batch_size)
    except _NoReference as e:
        return _unavailable(metrics, e.__cause__ or e, protocol, strict)


class _NoReference(Exception):
    """The reference folder holds no usable media (raised inside, reported as unavailable)."""


def _reference(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except FileNotFoundError as e:
        raise _NoReference(str(e)) from e


def _unavailable(metrics, err, protocol, strict, **extra):
    if strict:
        raise err
    reason = " ".join(line.strip() for line in str(err).splitlines())  # one line, the fix included
    return [prov.unavailable(m, reason, protocol, **extra) for m in metrics]


# ---- image ----------------------------------------------------------------------------------------

def _image(fake, real, metrics, protocol, cache_dir, *, device, batch_size, limit_real, strict, progress, **_):
    extra = []
    if "fd_dinov2" in metrics:
        extra = _fd_dinov2(fake, real, protocol, cache_dir, device=device, batch_size=batch_size,
                           limit_real=limit_real, strict=strict, progress=progress)
        metrics = [m for m in metrics if m != "fd_dinov2"]
        if not metrics:
            return extra
    return _inception_metrics(fake, real, metrics, protocol, cache_dir, device=device, batch_size=batch_size,
                              limit_real=limit_real, strict=strict, progress=progress) + extra


def stats_extractor(path) -> str | None:
    """The extractor a statistics npz records (files from ``--save-stats``), else None."""
    import numpy as np

    if not (isinstance(path, (str, Path)) and Path(path).is_file() and is_stats_file(path)):
        return None
    with np.load(path) as f:
        return str(f["extractor"]) if "extractor" in f.files else None


def check_stats_extractor(path, expected: str, metric: str) -> None:
    """A statistics file made with another network gives a meaningless distance: refuse it."""
    found = stats_extractor(path)
    if found is not None and found != expected:
        raise ValueError(f"{path}: statistics of {found!r}, but {metric} needs {expected!r} (pass the statistics "
                         f"file saved for {metric}, or the reference folder)")


def _fd_dinov2(fake, real, protocol, cache_dir, *, device, batch_size, limit_real, strict, progress=False):
    from . import fid as F
    from .dinov2 import DINOv2Features, load_dinov2

    try:
        net, sha = load_dinov2(network="dinov2_l")
    except MissingWeightsError as e:
        return _unavailable(["fd_dinov2"], e, protocol, strict, extractor="dinov2_cls_edm2")
    model = DINOv2Features(net).to(device)
    extractor = f"dinov2_d{net.dim}_l{len(net.blocks)}_cls_edm2"
    fk = F.image_set(fake, model, batch_size, keep_features=False, progress=progress)
    if stats_extractor(real) == extractor:  # saved with --save-stats for fd_dinov2
        rf = F.reference_set(real, None, cache_dir, batch_size)
    elif Path(real).is_file() and is_stats_file(real):  # its mu/sigma are the Inception's: use its images
        check_stats_extractor(real, F.EXTRACTOR, "fd_dinov2 (an Inception statistics file with images)")
        import numpy as np

        with np.load(real) as f:
            has_images = "arr_0" in f.files
        if not has_images:
            return _unavailable(["fd_dinov2"], ValueError(
                f"{real}: holds Inception statistics only; fd_dinov2 needs the reference images (an image "
                "folder, or an ADM reference batch with arr_0)"), protocol, strict)
        rf = F.image_set(real, model, batch_size, limit_real, keep_features=False, progress=progress)
    else:
        rf = _reference(F.reference_set, real, model, cache_dir, batch_size, limit_real, weights_sha256=sha,
                        name="fd_dinov2", progress=progress)
    return [prov.record("fd_dinov2", frechet_distance(rf.pool3, fk.pool3), extractor=extractor, weights_sha256=sha,
                        n_real=rf.n or rf.pool3.n, n_fake=fk.n, reference_stats_hash=rf.pool3.content_hash(),
                        protocol=protocol, modality="image", real_source=_src(real),
                        note="224 px bicubic+antialias, ImageNet mean/std, class token (EDM2's FD_DINOv2); "
                             "the standard network is ViT-L/14")]


def _inception_metrics(fake, real, metrics, protocol, cache_dir, *, device, batch_size, limit_real, strict,
                       progress=False):
    from . import fid as F
    from .inception import load_inception

    try:
        model, sha = load_inception(device=device)
    except MissingWeightsError as e:
        return _unavailable(metrics, e, protocol, strict, extractor=F.EXTRACTOR)
    check_stats_extractor(real, F.EXTRACTOR, "fid")
    fk = F.image_set(fake, model, batch_size, progress=progress, desc="sample features")
    rf = _reference(F.reference_set, real, model, cache_dir, batch_size, limit_real, weights_sha256=sha,
                    progress=progress)
    base = dict(extractor=F.EXTRACTOR, weights_sha256=sha, n_real=rf.n or rf.pool3.n, n_fake=fk.n,
                reference_stats_hash=rf.pool3.content_hash(), protocol=protocol, modality="image",
                real_source=_src(real), n_fake_skipped=len(fk.skipped))
    out = []
    for m in metrics:
        if m == "fid":
            out.append(prov.record("fid", frechet_distance(rf.pool3, fk.pool3), **base))
        elif m == "sfid":
            if rf.spatial is None:
                out.append(prov.unavailable("sfid", f"{real}: reference has no mu_s/sigma_s", protocol))
            else:
                out.append(prov.record("sfid", frechet_distance(rf.spatial, fk.spatial),
                                       **{**base, "reference_stats_hash": rf.spatial.content_hash(),
                                          "extractor": F.EXTRACTOR + ":mixed_6/conv[:7]"}))
        elif m in ("precision", "recall"):
            if rf.feats is None:
                out.append(prov.unavailable(m, f"{real}: statistics only; precision/recall needs reference "
                                               "images (an image folder or an npz with arr_0)", protocol))
                continue
            p, r = F.precision_recall(rf.feats, fk.feats, k=3)
            out.append(prov.record(m, p if m == "precision" else r, **base, k=3))
        elif m == "is":
            try:
                w, wsha = F.load_is_logits_weight()
            except MissingWeightsError as e:
                out.extend(_unavailable(["is"], e, protocol, strict))
                continue
            out.append(prov.record("is", F.inception_score(fk.feats, w), **{**base, "weights_sha256": wsha,
                                   "reference_stats_hash": None, "n_real": 0}, split_size=5000))
    return out


# ---- video ----------------------------------------------------------------------------------------

def _video(fake, real, metrics, protocol, cache_dir, *, device, batch_size, limit_real, strict, fvd_protocol,
           extractors, progress=False, video_batch_size=8, **_):
    from . import fid as F
    from . import fvd as V

    out = []
    if "fid_frame" in metrics:
        try:
            model, sha = F.load_inception(device=device)
        except MissingWeightsError as e:
            out.extend(_unavailable(["fid_frame"], e, protocol, strict))
        else:
            check_stats_extractor(real, F.EXTRACTOR, "fid_frame")
            fk = F.image_set(F.video_frame_batches(fake, batch_size=batch_size), model, batch_size,
                             progress=progress, desc="sample frames")
            rf = _reference(F.reference_set, real, model, cache_dir, batch_size, limit_real, kind="video_frames",
                            weights_sha256=sha, progress=progress)
            out.append(prov.record("fid_frame", frechet_distance(rf.pool3, fk.pool3), extractor=F.EXTRACTOR,
                                   weights_sha256=sha, n_real=rf.n or rf.pool3.n, n_fake=fk.n,
                                   reference_stats_hash=rf.pool3.content_hash(), protocol=protocol,
                                   modality="video", unit="frames", real_source=_src(real), note=FID_FRAME_NOTE))
    if "fvd" in metrics:
        try:
            ex = extractors.get("fvd") or V.I3DExtractor(device=device)
        except MissingWeightsError as e:
            out.extend(_unavailable(["fvd"], e, protocol, strict, fvd_protocol=fvd_protocol,
                                    note="FVD needs the I3D file; fid_frame is reported instead"))
            return out
        check_stats_extractor(real, ex.name, "fvd")
        fk = V.video_set(fake, ex, fvd_protocol, real=False, batch_size=video_batch_size, progress=progress)
        if isinstance(real, (str, Path)) and Path(real).is_file() and is_stats_file(real):
            rs, n_real = load_stats(real), load_stats(real).n
        else:
            rv = _reference(V.video_set, real, ex, fvd_protocol, real=True, batch_size=video_batch_size,
                            limit=limit_real, progress=progress)
            rs, n_real = rv.stats, rv.n
        out.append(prov.record("fvd", frechet_distance(rs, fk.stats), extractor=ex.name, weights_sha256=ex.sha256,
                               n_real=n_real, n_fake=fk.n, reference_stats_hash=rs.content_hash(), ddof=0,
                               protocol=protocol, modality="video", fvd_protocol=fvd_protocol,
                               real_source=_src(real)))
    return out


# ---- audio ----------------------------------------------------------------------------------------

def _audio(fake, real, metrics, protocol, cache_dir, *, sample_rate, device, limit_real, strict, extractors,
           progress=False, **_):
    from . import fad as A
    from .audio_io import RESAMPLER

    out = []
    for m in metrics:
        try:
            if m in extractors:
                ex = A.ExternalFADExtractor(m, model=extractors[m]) if m in A.FAD_EXTERNAL else extractors[m]
            else:
                ex = A.make_extractor(m, device=device) if m in ("fd_aisfx", "fd_crepe") else A.make_extractor(m)
        except (MissingWeightsError, A.MissingExtraError) as e:
            out.extend(_unavailable([m], e, protocol, strict))
            continue
        check_stats_extractor(real, ex.extractor, m)
        fk = A.audio_set(fake, ex, sample_rate, progress=progress, desc=f"{m} samples")
        rf = _reference(A.reference_audio_set, real, ex, cache_dir, limit_real, progress=progress)
        out.append(prov.record(m, frechet_distance(rf.stats, fk.stats), extractor=ex.extractor,
                               weights_sha256=ex.sha256, n_real=rf.n_clips, n_fake=fk.n_clips,
                               reference_stats_hash=rf.stats.content_hash(), protocol=protocol, modality="audio",
                               n_real_vectors=rf.n_vectors, n_fake_vectors=fk.n_vectors,
                               extractor_sample_rate=ex.sample_rate, input_sample_rate=sample_rate,
                               resampler=RESAMPLER, real_source=_src(real), n_real_skipped=len(rf.skipped),
                               n_fake_skipped=len(fk.skipped), skipped_files=list(rf.skipped + fk.skipped)[:20]))
    return out
