"""Command line: ``python -m evals {fid,fvd,fad,weights} ...``; prints the records as JSON.

    python -m evals fid --real data/val --fake samples.npz            # fid, sfid, precision, recall
    python -m evals fvd --real videos/real --fake videos/fake --i3d i3d_torchscript.pt
    python -m evals fad --real wavs/real --fake wavs/fake --metrics fd_aisfx,fd_crepe
    python -m evals weights status                                    # same as python -m evals.weights
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULTS = {"fid": "fid,sfid,precision,recall", "fvd": "fvd,fid_frame", "fad": "fd_aisfx"}
MODALITY = {"fid": "image", "fvd": "video", "fad": "audio"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "weights":
        from .weights import main as weights_main

        return weights_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m evals", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in [("fid", "image metrics (TF-2015 Inception, ADM protocol)"),
                       ("fvd", "video metrics (I3D FVD, fid_frame)"), ("fad", "audio Frechet distances")]:
        p = sub.add_parser(cmd, help=help_)
        p.add_argument("--real", required=True, help="reference folder, ADM npz or statistics npz")
        p.add_argument("--fake", required=True, help="generated samples: folder or ADM npz")
        p.add_argument("--metrics", default=DEFAULTS[cmd], help=f"comma-separated (default {DEFAULTS[cmd]})")
        p.add_argument("--cache-dir", default=None, help="reference statistics cache")
        p.add_argument("--device", default="cpu")
        p.add_argument("--limit-real", type=int, default=None, help="use only the first N reference items")
        p.add_argument("--strict", action="store_true", help="fail instead of reporting a metric as unavailable")
        if cmd == "fvd":
            p.add_argument("--protocol", default="fvd2048_16f", help="fvd2048_16f | fvd2048_128f | fvd_any_16f")
            p.add_argument("--i3d", default=None, help="path to i3d_torchscript.pt (else $SELFFLOW_WEIGHTS_I3D)")
        if cmd == "fad":
            p.add_argument("--fad-ckpt-dir", default=None, help="frechet-audio-distance ckpt_dir for fad_* metrics")
    a = ap.parse_args(argv)
    if getattr(a, "i3d", None):
        os.environ["SELFFLOW_WEIGHTS_I3D"] = a.i3d
    if getattr(a, "fad_ckpt_dir", None):
        os.environ["SELFFLOW_FAD_CKPT_DIR"] = a.fad_ckpt_dir
    from .api import evaluate

    recs = evaluate(MODALITY[a.cmd], a.fake, a.real, [m.strip() for m in a.metrics.split(",") if m.strip()],
                    {"fake_source": a.fake}, a.cache_dir, device=a.device, limit_real=a.limit_real,
                    strict=a.strict, fvd_protocol=getattr(a, "protocol", "fvd2048_16f"))
    print(json.dumps(recs, indent=2))
    return 0 if all(r["available"] for r in recs) else 3


if __name__ == "__main__":
    sys.exit(main())
