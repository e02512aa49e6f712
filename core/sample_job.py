"""The sampling job: N samples from a paper-convention model into resumable shards and an ADM ``.npz``.

Modality-agnostic: the caller hands over a built model, a ``decode(tokens) -> samples`` callable and the
token coordinates. Layout of ``out_dir``::

    shards/manifest.json        the protocol the shards were made with (a rerun must match it)
    shards/shard_00000.npz      one finished batch each, written atomically (temp file + rename)
    images/000000.png           optional, written by the rank that made the batch
    samples_<N>.npz             rank 0: shards merged in order; arr_0 uint8 NHWC (ADM evaluator), arr_1 labels
    sample.json                 protocol and timing

Differences to the official releases, and why:

* Seeding. Batch ``i`` draws its initial noise and all SDE noise from one generator seeded with
  ``batch_seed(seed, i) = seed * SEED_STRIDE + i`` (as ``Trainer.generate``) and batches go to ranks round-robin, so the samples
  do not depend on the number of processes and a killed run resumes batch by batch. The Self-Flow
  release seeds ``seed + rank * 100000 + batch`` (``--seed 31``) over contiguous per-rank ranges, REPA and
  SiT seed ``global_seed * world + rank`` once: their samples change with the GPU count. Bit-identity
  with any release is impossible anyway (different RNG streams on CPU/CUDA); the distribution is the same.
* Labels. ``random`` draws all N labels uniformly in ``[0, num_classes)`` up front from ``seed`` (the
  paper's protocol; the releases draw per batch); ``balanced`` gives every class ``N / num_classes``
  samples (RAE's protocol, about 0.1 lower FID per the Self-Flow paper).
* Precision. The Self-Flow release draws the initial noise in bf16 and samples under bf16 autocast;
  here noise is fp32 and autocast is opt-in (``autocast_dtype``).
* CFG outside the guidance interval evaluates only the conditional half (the release also advances the
  unconditional half, whose result is discarded): same samples in distribution, fewer FLOPs.
* Quantisation. ``round``: ``clamp((x + 1) * 127.5 + 0.5, 0, 255)`` (SiT's ``127.5 x + 128``); ``floor``:
  ``clamp(255 (x + 1) / 2, 0, 255)`` truncated, as the Self-Flow and REPA releases (and ADM) do.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from . import distributed as dist_utils
from .io_utils import QUANTIZE_MODES, atomic_path, atomic_write, atomic_write_json, to_uint8
from .samplers import SamplerConfig, sample

log = logging.getLogger(__name__)

CLASS_MODES = ("random", "balanced")
QUANTIZE = QUANTIZE_MODES
SEED_STRIDE = 1_000_003  # as Trainer.generate: batch i of seed s uses s * SEED_STRIDE + i


def batch_seed(seed: int, batch: int) -> int:
    return seed * SEED_STRIDE + batch


def generate_tokens(model, coords: Tensor, y: Tensor, sampler_cfg: SamplerConfig, seed: int, index: int):
    """Batch ``index`` of a sampling job: tokens ``(B, N, C)`` and the NFE, for labels ``y`` (B,).

    The one routine behind ``Trainer.generate`` and :func:`run_sampling`: initial noise and all SDE
    noise come from one generator seeded with ``batch_seed(seed, index)``, so a batch is the same
    whichever process makes it. ``coords`` must be on the model's device; callers add autocast.
    """
    device = coords.device
    g = torch.Generator(device=device).manual_seed(batch_seed(seed, index))
    noise = torch.randn((len(y), int(coords.shape[0]), int(model.in_channels)), generator=g, device=device)
    return sample(model, noise, y.to(device), coords, sampler_cfg, generator=g)


def class_labels(num_samples: int, num_classes: int, mode: str = "random", seed: int = 0) -> Tensor:
    """``(N,)`` int64 labels; all drawn up front so they do not depend on batch size or rank count."""
    if mode not in CLASS_MODES:
        raise ValueError(f"sample.class_mode={mode!r}: must be one of {CLASS_MODES}")
    if num_classes <= 0:  # unconditional model: the null row (index 0 when num_classes == 0)
        return torch.zeros(num_samples, dtype=torch.long)
    if mode == "balanced":
        return torch.arange(num_samples) % num_classes
    return torch.randint(0, num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))


SAMPLE_KINDS = {"image": 4, "video": 5, "none": None}  # modality.quantize -> sample rank (None: stays float)


def quantize(samples: Tensor, mode: str = "round", kind: str | None = None) -> np.ndarray:
    """Decoded samples in [-1, 1] -> array for the npz.

    ``kind`` is what the modality declares (``modality.quantize``): ``image`` ``(B, C, H, W)`` and
    ``video`` ``(B, T, C, H, W)`` become uint8, channels last (``(B, H, W, C)`` is what the ADM
    evaluator reads); ``none`` (audio, anything else) stays float32 as decoded. ``kind=None`` (direct
    callers without a config) guesses from the shape: rank 4 or 5 with C in {1, 3} is quantised.
    """
    if mode not in QUANTIZE:
        raise ValueError(f"sample.quantize={mode!r}: must be one of {QUANTIZE}")
    x = samples.detach().float().cpu()
    if kind is None:
        kind = {4: "image", 5: "video"}[x.dim()] if x.dim() in (4, 5) and x.shape[-3] in (1, 3) else "none"
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"modality.quantize={kind!r}: must be one of {sorted(SAMPLE_KINDS)}")
    if SAMPLE_KINDS[kind] is None:
        return x.numpy()
    if x.dim() != SAMPLE_KINDS[kind]:
        raise ValueError(f"modality.quantize={kind} expects decoded samples of rank {SAMPLE_KINDS[kind]}, got shape "
                         f"{tuple(x.shape)}; fix modality.quantize (image | video | none)")
    return to_uint8(x, mode).movedim(-3, -1).numpy()


def write_npz_streaming(path: Path, members: dict[str, tuple[tuple, np.dtype, object]]) -> None:
    """Write an uncompressed ``.npz`` member by member, chunk by chunk, atomically.

    ``members``: name -> (shape, dtype, iterable of arrays concatenated along axis 0). Memory stays at one
    chunk, so 50k 256x256 images (9.8 GB) merge without holding them; ``np.load`` reads the result as usual.
    """
    path = Path(path)
    with atomic_path(path, fsync=False) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, (shape, dtype, chunks) in members.items():
                dtype = np.dtype(dtype)
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
                    written = 0
                    for chunk in chunks:
                        chunk = np.ascontiguousarray(chunk, dtype=dtype)
                        f.write(chunk.tobytes())
                        written += chunk.shape[0]
                    if written != shape[0]:
                        raise RuntimeError(f"{path}: member {name} got {written} rows, expected {shape[0]}")


def _model_fingerprint(model) -> list[float]:
    """Cheap identity of the weights (sum and abs-sum): a rerun with another checkpoint must not reuse shards."""
    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.parameters())
        absolute = sum(float(p.double().abs().sum()) for p in model.parameters())
    return [round(total, 6), round(absolute, 6)]


def _shard_ok(path: Path, expected: int) -> bool:
    try:
        with np.load(path) as z:
            return z["samples"].shape[0] == expected and z["labels"].shape[0] == expected
    except Exception:  # unreadable or foreign file: regenerate it
        return False


def _write_pngs(arr: np.ndarray, start: int, folder: Path) -> None:
    from PIL import Image  # noqa: PLC0415 -- only when PNGs are requested

    if arr.dtype != np.uint8 or arr.ndim != 4:
        return  # only images have a PNG form
    folder.mkdir(parents=True, exist_ok=True)
    for j, img in enumerate(arr):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{start + j:06d}.png")


def run_sampling(model, decode, coords: Tensor, sampler_cfg: SamplerConfig, num_samples: int, batch_size: int,
                 seed: int, out_dir: str | os.PathLike, *, num_classes: int | None = None, class_mode: str = "random",
                 quantize_mode: str = "round", sample_kind: str | None = None, save_png: bool = False, autocast_dtype: torch.dtype | None = None,
                 protocol: dict | None = None, merge: bool = True, progress: bool = True) -> dict:
    """Generate ``num_samples`` samples, resumably and rank-sharded; rank 0 merges them. Call on every rank.

    Args:
        model: paper-convention velocity model ``model(x (B, N, C), t, y, coords)`` with ``in_channels``,
            ``num_classes`` and ``null_class`` (our :class:`SiT`, or one converted by ``core.convert``).
        decode: tokens ``(B, N, C)`` -> samples, images ``(B, 3, H, W)`` in [-1, 1] (``Tokenizer.decode``).
        coords: ``(N, 3)`` token coordinates (``Tokenizer.coords()``).
        sampler_cfg: the integrator (``SamplerConfig(method="sde", num_steps=250)`` for the paper protocol).
        num_samples, batch_size: total samples and samples per batch (per rank; the last batch may be short).
        seed: batch ``i`` uses ``batch_seed(seed, i)``; labels use ``seed``.
        out_dir: job directory (see module doc); existing finished shards with the same protocol are kept.
        num_classes: label range (default ``model.num_classes``); class_mode: ``random`` | ``balanced``.
        quantize_mode: ``round`` | ``floor`` (see module doc); sample_kind: ``modality.quantize`` (image | video |
            none; None guesses from the shape); save_png: also write ``images/NNNNNN.png``.
        autocast_dtype: e.g. ``torch.bfloat16`` to sample under autocast (GPU).
        protocol: extra provenance stored in ``sample.json`` and the manifest (e.g. checkpoint info).
        merge: write ``samples_<N>.npz`` (rank 0).
        progress: a tqdm bar over this rank's batches on stderr (rank 0 only).
    Returns:
        summary dict (same on every rank except ``npz``, which only rank 0 fills).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"sample.num_samples={num_samples} and sample.batch_size={batch_size} must be >= 1")
    info = dist_utils.current()
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    device = next(model.parameters()).device
    num_classes = model.num_classes if num_classes is None else num_classes
    labels = class_labels(num_samples, num_classes, class_mode, seed)
    coords = coords.to(device)
    token_shape = (int(coords.shape[0]), int(model.in_channels))
    manifest = {"num_samples": num_samples, "batch_size": batch_size, "seed": seed, "class_mode": class_mode,
                "num_classes": num_classes, "quantize": quantize_mode, "sampler": asdict(sampler_cfg),
                "token_shape": list(token_shape), "model_fingerprint": _model_fingerprint(model),
                "protocol": protocol or {}}
    manifest = json.loads(json.dumps(manifest, default=str))  # normalise (tuples -> lists) for comparison

    error = None
    if info.is_main:  # one process decides whether the existing shards belong to this job
        shard_dir.mkdir(parents=True, exist_ok=True)
        mpath = shard_dir / "manifest.json"
        if mpath.exists():
            old = json.loads(mpath.read_text())
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if diff:
                error = (f"{mpath} was written by a different sampling job (differs in {diff}); use a new output "
                         f"directory or delete {shard_dir} to start over")
        else:
            atomic_write_json(mpath, manifest)
    error = dist_utils.broadcast_object(error)
    if error:
        raise ValueError(error)

    starts = list(range(0, num_samples, batch_size))
    generated, skipped, made, nfe = 0, 0, 0, 0
    t0 = time.perf_counter()
    mine = [i for i in range(len(starts)) if i % info.world_size == info.rank]
    bar = tqdm(total=len(mine), desc="sampling", unit="batch", leave=False, file=sys.stderr,
               disable=not (progress and info.is_main), mininterval=0.5)
    for i, start in enumerate(starts):
        if i % info.world_size != info.rank:
            continue
        path = shard_dir / f"shard_{i:05d}.npz"
        y = labels[start:start + batch_size]
        if path.exists() and _shard_ok(path, len(y)):
            skipped += 1
            bar.update(1)
            continue
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            x, nfe = generate_tokens(model, coords, y, sampler_cfg, seed, i)
            arr = quantize(decode(x.float()), quantize_mode, sample_kind)
        if save_png:
            _write_pngs(arr, start, out_dir / "images")
        atomic_write(path, lambda f, a=arr, yy=y: np.savez(f, samples=a, labels=yy.numpy(), start=np.int64(start),
                                                           nfe=np.int64(nfe)))
        generated, made = generated + 1, made + len(y)
        bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    counts = dist_utils.gather_objects((generated, skipped, made, nfe, wall))
    wall_all = max(c[4] for c in counts)
    summary = {"num_samples": num_samples, "batches": len(starts), "generated_batches": sum(c[0] for c in counts),
               "skipped_batches": sum(c[1] for c in counts), "nfe_per_batch": max(c[3] for c in counts),
               "wall_s": wall_all, "samples_per_s": sum(c[2] for c in counts) / wall_all if wall_all > 0 else None,
               "npz": None}
    dist_utils.barrier()  # every shard is on disk before rank 0 reads them

    if info.is_main and merge:
        summary["npz"] = str(merge_shards(shard_dir, len(starts), out_dir / f"samples_{num_samples}.npz"))
        record = {**manifest, "summary": summary}
        (out_dir / "sample.json").write_text(json.dumps(record, indent=1, default=str))
    dist_utils.barrier()
    return summary


def merge_shards(shard_dir: Path, num_shards: int, out_path: Path) -> Path:
    """Concatenate ``shard_00000 .. shard_<n-1>`` in order into ``arr_0`` (samples) and ``arr_1`` (labels)."""
    paths = [Path(shard_dir) / f"shard_{i:05d}.npz" for i in range(num_shards)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"cannot merge: {len(missing)} shard(s) missing in {shard_dir} (e.g. {missing[:3]}); "
                                f"rerun the sampling job to generate them")
    heads = []
    for p in paths:
        with np.load(p) as z:
            heads.append((z["samples"].shape, z["samples"].dtype))
    total = sum(s[0] for s, _ in heads)
    item_shape, dtype = heads[0][0][1:], heads[0][1]

    def chunks(key):
        for p in paths:
            with np.load(p) as z:
                yield z[key]

    write_npz_streaming(out_path, {"arr_0": ((total, *item_shape), dtype, chunks("samples")),
                                   "arr_1": ((total,), np.int64, chunks("labels"))})
    return out_path
