"""Command line: ``python -m evals {fid,fvd,fad,weights} ...``; prints the records as JSON.

    python -m evals fid --real data/val --fake samples.npz            # fid, sfid, precision, recall
    python -m evals fid --real data/val --save-stats val.npz          # reference statistics, once
    python -m evals fid --real val.npz --fake samples.npz --device auto --batch-size 200
    python -m evals fvd --real videos/real --fake videos/fake --i3d i3d_torchscript.pt
    python -m evals fad --real wavs/real --fake wavs/fake --metrics fd_aisfx,fd_crepe
    python -m evals weights status                                    # same as python -m evals.weights

stdout carries only the JSON records (safe to redirect into a file); stderr carries the progress
bars and one human line per metric, e.g. ``fid = 12.34 (1000 fake vs 5000 real, TF-2015 Inception ...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULTS = {"fid": "fid,sfid,precision,recall", "fvd": "fvd,fid_frame", "fad": "fd_aisfx"}
MODALITY = {"fid": "image", "fvd": "video", "fad": "audio"}
MEDIA = {"fid": "images (folder, ADM npz)", "fvd": "videos (folder of mp4/avi/...)",
         "fad": "audio files (folder of wav/flac/ogg/mp3)"}
EXTRACTOR_NAMES = {"inception_tf2015_adm": "TF-2015 Inception, ADM preprocessing",
                   "i3d_k400_tfhub": "I3D Kinetics-400 (StyleGAN-V's TorchScript)"}
BATCH_HELP = {"fid": "images per network call (default 50)",
              "fvd": "frames per Inception call for fid_frame (default 50) and clips per I3D call (default 8)",
              "fad": "unused: audio clips are embedded one file at a time"}
LIMIT_HELP = ("use at most N reference items, evenly spaced over the sorted file list (so a class-per-folder "
              "tree keeps every class), not the first N; for fvd, N clips from N evenly spaced videos. "
              "Cached statistics are keyed by N")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def summary_line(rec: dict) -> str:
    """One line for people: ``fid = 12.34 (1000 fake vs 5000 real, TF-2015 Inception, ...)``."""
    m = rec["metric"]
    if not rec.get("available"):
        return f"{m}: unavailable ({rec.get('reason', 'no reason given')})"
    unit = f" {rec['unit']}" if rec.get("unit") else ""
    real = f"{rec['n_real']} real{unit}" if rec.get("n_real") else "real statistics from file"
    parts = [f"{rec['n_fake']} fake{unit} vs {real}",
             EXTRACTOR_NAMES.get(rec.get("extractor"), rec.get("extractor") or "?")]
    if rec.get("fvd_protocol"):
        parts.append(f"protocol {rec['fvd_protocol']}")
    if rec.get("k"):
        parts.append(f"k={rec['k']}")
    skipped = (rec.get("n_fake_skipped") or 0) + (rec.get("n_real_skipped") or 0)
    if skipped:
        parts.append(f"{skipped} unreadable file(s) skipped")
    return f"{m} = {rec['value']:.4f} ({', '.join(parts)})"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evals", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in [("fid", "image metrics (TF-2015 Inception, ADM protocol)"),
                       ("fvd", "video metrics (I3D FVD, fid_frame)"), ("fad", "audio Frechet distances")]:
        p = sub.add_parser(cmd, help=help_)
        p.add_argument("--real", required=True,
                       help=f"reference {MEDIA[cmd]}, or a statistics npz (e.g. from --save-stats)")
        p.add_argument("--fake", default=None, help=f"generated {MEDIA[cmd]}; may be omitted with --save-stats")
        p.add_argument("--metrics", default=DEFAULTS[cmd], help=f"comma-separated (default {DEFAULTS[cmd]})")
        p.add_argument("--save-stats", default=None, metavar="PATH.npz",
                       help="write the reference statistics of --real to PATH.npz (one file per network: "
                            "PATH_<metric>.npz when the metrics need several), for use as --real later")
        p.add_argument("--cache-dir", default=None, help="reference statistics cache "
                                                         "(default ~/.cache/selfflow-lab/stats)")
        p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
        p.add_argument("--batch-size", type=int, default=None, help=BATCH_HELP[cmd])
        p.add_argument("--limit-real", type=int, default=None, metavar="N", help=LIMIT_HELP)
        p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
        p.add_argument("--strict", action="store_true", help="fail instead of reporting a metric as unavailable")
        if cmd == "fvd":
            p.add_argument("--protocol", default="fvd2048_16f", help="fvd2048_16f | fvd2048_128f | fvd_any_16f")
            p.add_argument("--i3d", default=None, help="path to i3d_torchscript.pt (else $SELFFLOW_WEIGHTS_I3D)")
        if cmd == "fad":
            p.add_argument("--fad-ckpt-dir", default=None, help="frechet-audio-distance ckpt_dir for fad_* metrics")
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "weights":
        from .weights import main as weights_main

        return weights_main(argv[1:])
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.fake is None and a.save_stats is None:
        ap.error(f"{a.cmd}: pass --fake (samples to score) and/or --save-stats (write reference statistics)")
    if a.batch_size is not None and a.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if getattr(a, "i3d", None):
        os.environ["SELFFLOW_WEIGHTS_I3D"] = a.i3d
    if getattr(a, "fad_ckpt_dir", None):
        os.environ["SELFFLOW_FAD_CKPT_DIR"] = a.fad_ckpt_dir
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]
    common = dict(cache_dir=a.cache_dir, device=resolve_device(a.device), batch_size=a.batch_size or 50,
                  video_batch_size=a.batch_size or 8, limit_real=a.limit_real, progress=not a.no_progress,
                  fvd_protocol=getattr(a, "protocol", "fvd2048_16f"))
    if a.save_stats:
        from .reference_stats import save_reference_stats
        from .weights import MissingWeightsError

        try:
            written = save_reference_stats(MODALITY[a.cmd], a.real, metrics, a.save_stats, **common)
        except (MissingWeightsError, FileNotFoundError) as e:  # nothing to save: say why, no traceback
            if a.strict:
                raise
            print(f"error: --save-stats {a.save_stats}: {e}", file=sys.stderr)
            return 3
        for w in written:
            print(f"saved {w['group']} reference statistics of {w['n_real']} items ({w['extractor']}, "
                  f"{w['dim']}-d) to {w['path']}", file=sys.stderr)
        if a.fake is None:
            print(json.dumps(written, indent=2))
            return 0
    from .api import evaluate

    recs = evaluate(MODALITY[a.cmd], a.fake, a.real, metrics, {"fake_source": a.fake}, strict=a.strict,
                    **common)
    print(json.dumps(recs, indent=2))
    for r in recs:
        print(summary_line(r), file=sys.stderr)
    return 0 if all(r["available"] for r in recs) else 3


if __name__ == "__main__":
    sys.exit(main())
