"""Image latents: an SD-VAE tokenizer, a generic latent cache and a pre-encoding command.

* :class:`SDVAETokenizer` - diffusers ``AutoencoderKL`` (optional extra ``vae``, imported
  lazily) loaded from a local directory such as a downloaded ``stabilityai/sd-vae-ft-ema``;
  latents are ``(z - shift) * 0.18215`` and cut into 2x2 patches, so a 256x256 image is
  256 tokens of 16 values (docs/method.md, "Per-modality settings from the paper"). It accepts images (encodes on the
  fly) or latents already in the cache (``input: latent``, the fast path for training).
* :class:`LatentCache` - one ``.npy`` per source file under ``<root>/<hash of the encoder
  config>/``, named by the SHA-256 of the source file's bytes: a changed config or a changed
  file never reads stale latents. Usable by any encoder.
* ``python -m modalities.latents encode --src DIR --out DIR --vae DIR`` - encode a whole image
  folder once (REPA-style), storing the posterior mean and std so training can sample
  ``z ~ N(mean, std)`` per step; :class:`LatentFolderDataset` reads the result.

The VAE is frozen and kept out of ``state_dict`` (it is ~84M parameters; checkpoints name
its directory in the config instead).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from core.tokens import Tokenizer
from modalities.media_common import (MediaError, SkipLog, atomic_write_bytes, config_hash, file_sha256,
                                     require_nonempty, scan_labelled_files)

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")
SD_VAE_SCALE = 0.18215


# --- VAE loading --------------------------------------------------------------------------

def load_vae(path: str | os.PathLike):
    """A frozen ``AutoencoderKL`` from a local directory (``config.json`` + weights)."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no AutoencoderKL here (config.json missing). Put a diffusers VAE directory there, "
            f"e.g. stabilityai/sd-vae-ft-ema downloaded on a machine with network access, and set "
            f"modality.tokenizer.vae_path to it")
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError("the SD-VAE tokenizer needs diffusers: pip install 'selfflow-lab[vae]' "
                          "(or pip install diffusers)") from e
    vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    vae.eval().requires_grad_(False)
    return vae


def vae_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a VAE for cache keys: its config and the hash of its weight files."""
    path = Path(path).expanduser()
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"config": json.loads((path / "config.json").read_text()),
            "weights": {p.name: file_sha256(p) for p in weights}}


# --- tokenizer ----------------------------------------------------------------------------

def patchify(z: Tensor, p: int) -> Tensor:
    """Latents ``(B, C, H, W)`` -> tokens ``(B, (H/p)(W/p), C p p)``; channel order (c, p, q) as in SiT."""
    return rearrange(z, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)


def unpatchify(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`patchify` for an ``h x w`` token grid."""
    return rearrange(tokens, "b (h w) (c p q) -> b c (h p) (w q)", h=h, w=w, p=p, q=p)


class SDVAETokenizer(Tokenizer):
    """Args:
        vae_path: local diffusers ``AutoencoderKL`` directory.
        image_size: side of the (square) images; must be divisible by the VAE's downsampling.
        patch: latent patch side (2 in the paper).
        scale, shift: ``z_model = (z - shift) * scale`` (SD-VAE: 0.18215, 0).
        input: ``image`` (x are images in [-1, 1]; encoded here) or ``latent`` (x are scaled
            latents from :class:`LatentFolderDataset`; only patched here).
        sample_posterior: with ``input: image``, sample the posterior instead of its mean.
    """

    def __init__(self, vae_path: str, image_size: int = 256, patch: int = 2, scale: float = SD_VAE_SCALE,
                 shift: float = 0.0, input: str = "image", sample_posterior: bool = False):
        super().__init__()
        if input not in ("image", "latent"):
            raise ValueError(f"tokenizer.input must be 'image' or 'latent', got {input!r}")
        vae = load_vae(vae_path)
        self.vae_path = str(vae_path)
        # Kept outside the module registry so checkpoints do not carry 84M frozen parameters.
        object.__setattr__(self, "vae", vae)
        self.down = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        if image_size % (self.down * patch):
            raise ValueError(f"tokenizer.image_size={image_size} must be divisible by VAE downsampling "
                             f"{self.down} x patch {patch}")
        self.image_size, self.patch, self.scale, self.shift = image_size, patch, float(scale), float(shift)
        self.input, self.sample_posterior = input, sample_posterior
        self.latent_size = image_size // self.down
        self.grid = self.latent_size // patch
        self.token_dim = self.latent_channels * patch * patch
        h, w = torch.meshgrid(torch.arange(self.grid), torch.arange(self.grid), indexing="ij")
        self.register_buffer("_coords", torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.vae._apply(fn)  # .to(device/dtype) moves the unregistered VAE too
        return self

    @torch.no_grad()
    def image_to_latent(self, x: Tensor, sample: bool = False) -> Tensor:
        """Images ``(B, 3, S, S)`` in [-1, 1] -> scaled latents ``(B, C, S/f, S/f)``."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"SDVAETokenizer expects images (B, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        z = dist.sample() if sample else dist.mean
        return ((z - self.shift) * self.scale).float()

    @torch.no_grad()
    def latent_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> scaled posterior (mean, std), what the pre-encoding command stores."""
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return ((dist.mean - self.shift) * self.scale).float(), (dist.std * self.scale).float()

    def encode(self, x: Tensor) -> Tensor:
        """Images (``input: image``) or scaled latents (``input: latent``) -> ``(B, N, C p p)``."""
        z = self.image_to_latent(x, self.sample_posterior) if self.input == "image" else x
        want = (self.latent_channels, self.latent_size, self.latent_size)
        if z.dim() != 4 or tuple(z.shape[1:]) != want:
            raise ValueError(f"SDVAETokenizer expects latents (B, {', '.join(map(str, want))}), got {tuple(z.shape)}; "
                             f"were they encoded with another VAE or image_size?")
        return patchify(z, self.patch)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """``(B, N, C p p)`` -> images ``(B, 3, S, S)`` in [-1, 1] through the VAE decoder."""
        z = unpatchify(tokens, self.patch, self.grid, self.grid)
        x = self.vae.decode((z / self.scale + self.shift).to(self.vae.dtype)).sample
        return x.float().clamp(-1, 1)

    def coords(self) -> Tensor:
        return self._coords

    def cache_config(self) -> dict:
        """Everything cached latents of this tokenizer depend on (the :class:`LatentCache` key)."""
        return {"encoder": "sd-vae", "vae": vae_fingerprint(self.vae_path), "image_size": self.image_size,
                "scale": self.scale, "shift": self.shift, "preprocess": "adm_center_crop", "stored": "mean,std"}


# --- cache --------------------------------------------------------------------------------

class LatentCache:
    """Latents keyed by (encoder config, source file content).

    Layout: ``<root>/<config hash>/config.json`` and ``<root>/<config hash>/<aa>/<sha256>.npy``.
    Entries are written atomically; a stored array may hold anything the encoder wants
    (here: mean and std stacked on a leading axis).
    """

    def __init__(self, root: str | os.PathLike, config: dict):
        self.config = config
        self.dir = Path(root).expanduser() / config_hash(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.dir / "config.json"
        if not cfg_file.exists():
            atomic_write_bytes(cfg_file, json.dumps(config, indent=1, sort_keys=True, default=str).encode())

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    @staticmethod
    def key(src: str | os.PathLike) -> str:
        return file_sha256(src)

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return np.load(path, allow_pickle=False)

    def put(self, key: str, array: np.ndarray) -> Path:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        path = self._path(key)
        atomic_write_bytes(path, buf.getvalue())
        return path


# --- images -------------------------------------------------------------------------------

def load_image(path: Path, size: int) -> Tensor:
    """ADM-style centre crop (box-downsample while large, bicubic to size, crop) -> ``(3, S, S)`` in [-1, 1]."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            while min(im.size) >= 2 * size:
                im = im.resize(tuple(s // 2 for s in im.size), resample=Image.BOX)
            scale = size / min(im.size)
            im = im.resize(tuple(round(s * scale) for s in im.size), resample=Image.BICUBIC)
            arr = np.asarray(im)
    except Exception as e:
        raise MediaError(path, f"not a readable image ({type(e).__name__}: {e})",
                         "re-save it or remove it") from None
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    arr = arr[top:top + size, left:left + size]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1


def encode_folder(src: str | os.PathLike, out: str | os.PathLike, vae_path: str, image_size: int = 256,
                  batch_size: int = 16, device: str = "cpu", label_file: str | None = None) -> dict:
    """Encode every image under ``src`` into ``<out>/cache`` and write ``<out>/index.json``.

    Images already in the cache (same bytes, same encoder config) are not encoded again.
    Returns the index (also written to disk).
    """
    out = Path(out).expanduser()
    files, class_names = scan_labelled_files(src, IMAGE_EXTENSIONS, label_file, kind="image")
    tok = SDVAETokenizer(vae_path, image_size=image_size, input="image").to(device)
    cache = LatentCache(out / "cache", tok.cache_config())
    skipped = SkipLog()
    entries, todo = [], []
    for path, label in files:
        try:
            key = LatentCache.key(path)
        except OSError as e:
            skipped.add(path, f"unreadable ({e})")
            continue
        entries.append({"path": str(Path(path).resolve()), "label": label, "key": key})
        if not cache.has(key):
            todo.append((path, key))
    encoded, bad_keys = 0, set()
    for start in range(0, len(todo), batch_size):
        batch, keys = [], []
        for path, key in todo[start:start + batch_size]:
            try:
                batch.append(load_image(Path(path), image_size))
                keys.append(key)
            except MediaError as e:
                skipped.add(path, e.detail)
                bad_keys.add(key)
        if not batch:
            continue
        mean, std = tok.latent_moments(torch.stack(batch).to(device))
        for key, m, s in zip(keys, mean.cpu().numpy(), std.cpu().numpy()):
            cache.put(key, np.stack([m, s]).astype(np.float32))
            encoded += 1
    entries = [e for e in entries if e["key"] not in bad_keys and cache.has(e["key"])]
    index = {"src": str(Path(src).resolve()), "cache_dir": str(cache.dir), "class_names": class_names,
             "image_size": image_size, "latent_shape": [tok.latent_channels, tok.latent_size, tok.latent_size],
             "items": entries, "skipped": list(skipped)}
    atomic_write_bytes(out / "index.json", json.dumps(index, indent=1).encode())
    log.info("encoded %d new, %d cached, %d skipped -> %s", encoded, len(entries) - encoded, len(skipped), out)
    index["encoded"] = encoded
    return index


class LatentFolderDataset(Dataset):
    """Pre-encoded latents ``(C, h, w)`` (already scaled) with integer labels.

    Args:
        root: the ``--out`` directory of ``python -m modalities.latents encode``.
        sample_posterior: draw ``mean + std * eps`` per access (REPA does) instead of the mean.
    """

    def __init__(self, root: str | os.PathLike, sample_posterior: bool = True):
        self.root = Path(root).expanduser()
        index_file = self.root / "index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file}: no latent index; run "
                                    f"`python -m modalities.latents encode --src IMAGES --out {self.root} --vae VAE_DIR`")
        index = json.loads(index_file.read_text())
        self.class_names, self.num_classes = index["class_names"], len(index["class_names"])
        self.cache_dir = Path(index["cache_dir"])
        self.items = [(e["key"], e["label"]) for e in index["items"]]
        self.skipped = SkipLog(entries=[tuple(s) for s in index.get("skipped", [])])
        self.sample_posterior = sample_posterior
        require_nonempty(self.items, self.root, self.skipped, "latent")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        key, label = self.items[index]
        path = self.cache_dir / key[:2] / f"{key}.npy"
        try:
            mean, std = torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise MediaError(path, f"latent cache entry unreadable ({e})",
                             f"re-run the encode command for {self.root}") from None
        z = mean + std * torch.randn_like(std) if self.sample_posterior else mean
        return z, label


# --- command line -------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modalities.latents",
                                     description="Pre-encode an image folder to SD-VAE latents (cached).")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="encode every image of a folder-per-class tree once")
    enc.add_argument("--src", required=True, help="image folder (one sub-folder per class)")
    enc.add_argument("--out", required=True, help="output directory (index.json + cache/)")
    enc.add_argument("--vae", required=True, help="local diffusers AutoencoderKL directory")
    enc.add_argument("--image-size", type=int, default=256)
    enc.add_argument("--batch-size", type=int, default=16)
    enc.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    enc.add_argument("--label-file", default=None, help="optional 'relative/path,class' file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        index = encode_folder(args.src, args.out, args.vae, args.image_size, args.batch_size, args.device,
                              args.label_file)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(index['items'])} images -> {args.out} ({index['encoded']} newly encoded, "
          f"{len(index['skipped'])} skipped)")
    for path, why in index["skipped"]:
        print(f"  skipped {path}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
