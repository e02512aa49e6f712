"""DINOv2 ViT/14 backbone that reads the official ``dinov2_vit*14*_pretrain.pth`` checkpoints.

REPA's image encoder (paper Table 1: "REPA (DINOv2-B)") and the FD_DINOv2 feature space. Written
from the published architecture, not imported from torch.hub (no network, no hub cache):

* patch embedding: Conv2d(3, D, 14, stride 14); a class token; optional register tokens
  (the ``*_reg`` checkpoints, 4 of them) inserted after the class token *after* the position
  embedding is added (registers carry no position);
* learned absolute position embedding for a 37x37 grid (518 px) plus the class token;
* pre-norm blocks, LayerNorm eps 1e-6: ``x + ls1 * attn(norm1(x))``, ``x + ls2 * mlp(norm2(x))``,
  LayerScale vectors ``ls*.gamma``, head width 64, GELU MLP of ratio 4 (ViT-S/B/L) or a fused
  SwiGLU (ViT-g: ``mlp.w12`` -> silu(a) * b -> ``mlp.w3``);
* a final LayerNorm; ``patch_tokens`` are the normed tokens after the class/register tokens
  (``x_norm_patchtokens`` upstream), which is what REPA aligns to.

The size (width, depth, registers, MLP kind, patch size, native grid) is read from the state
dict, so ViT-S/B/L/g and their ``_reg`` variants all load with ``strict=True``.

Position embeddings for another grid: REPA resamples the table once at load time to the grid of
its 224 px input (bicubic with antialiasing, output size given explicitly), and then runs at that
grid. ``pos_resample="repa"`` (default) does the same. ``"dinov2"`` follows the hub model's own
on-the-fly interpolation instead (bicubic, no antialiasing, scale factor ``(grid + 0.1) / 37``),
which gives slightly different features away from the native grid. At the native grid both are
the stored table itself.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_DIM = 64  # every DINOv2 size uses 64-wide heads (S: 6, B: 12, L: 16, g: 24)


class _Attention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.heads = dim // HEAD_DIM
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, D)
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, 64)
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, dim: int, hidden: int, swiglu: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim)
        self.mlp = _SwiGLU(dim, hidden) if swiglu else _Mlp(dim, hidden)
        self.ls1, self.ls2 = _LayerScale(dim), _LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)


def resample_pos_embed(table: Tensor, grid: tuple[int, int], mode: str = "repa") -> Tensor:
    """(1, 1 + M*M, D) class + square patch table -> (1, 1 + gh*gw, D) for ``grid`` (see module doc)."""
    M = math.isqrt(table.shape[1] - 1)
    if M * M != table.shape[1] - 1:
        raise ValueError(f"position table of {table.shape[1] - 1} patches is not a square grid")
    if tuple(grid) == (M, M):
        return table
    cls, patches = table[:, :1], table[:, 1:].float().reshape(1, M, M, -1).permute(0, 3, 1, 2)
    if mode == "repa":
        out = F.interpolate(patches, size=tuple(grid), mode="bicubic", antialias=True)
    elif mode == "dinov2":
        sf = ((grid[0] + 0.1) / M, (grid[1] + 0.1) / M)
        out = F.interpolate(patches, scale_factor=sf, mode="bicubic", antialias=False)
    else:
        raise ValueError(f"pos_resample={mode!r}: must be 'repa' or 'dinov2'")
    if tuple(out.shape[-2:]) != tuple(grid):
        raise ValueError(f"resampled position grid {tuple(out.shape[-2:])} != requested {tuple(grid)}")
    return torch.cat([cls, out.permute(0, 2, 3, 1).flatten(1, 2).to(table.dtype)], dim=1)


class DINOv2(nn.Module):
    """DINOv2 ViT/14. ``forward(x)`` takes ImageNet-normalised (B, 3, H, W), H and W multiples of the
    patch, and returns the normed patch tokens (B, (H/14)*(W/14), D) in raster order."""

    def __init__(self, dim: int, depth: int, patch: int = 14, native_grid: int = 37, registers: int = 0,
                 mlp_hidden: int | None = None, swiglu: bool = False, pos_resample: str = "repa"):
        super().__init__()
        self.dim, self.patch, self.registers, self.pos_resample = dim, patch, registers, pos_resample
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + native_grid ** 2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # in every checkpoint; unused for features
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        self.blocks = nn.ModuleList(_Block(dim, mlp_hidden or 4 * dim, swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._pos_cache: dict[tuple, Tensor] = {}

    def positions(self, grid: tuple[int, int]) -> Tensor:
        key = (tuple(grid), self.pos_embed.device, self.pos_embed.dtype)
        if key not in self._pos_cache:  # frozen weights: resample once per grid, as REPA does at load
            with torch.no_grad():
                self._pos_cache[key] = resample_pos_embed(self.pos_embed, grid, self.pos_resample)
        return self._pos_cache[key]

    def forward(self, x: Tensor) -> Tensor:
        return self.normed_tokens(x)[:, 1 + self.registers:]  # (B, gh*gw, D) patch tokens

    def normed_tokens(self, x: Tensor) -> Tensor:
        """(B, 1 + registers + gh*gw, D) after the final norm: class token, registers, patches."""
        B, _, H, W = x.shape
        if H % self.patch or W % self.patch:
            raise ValueError(f"DINOv2 input {H}x{W} px is not a multiple of the patch size {self.patch}")
        grid = (H // self.patch, W // self.patch)
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, gh*gw, D)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1) + self.positions(grid)
        if self.register_tokens is not None:  # registers go after the class token, without positions
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)


def _unchunk(sd: dict) -> dict:
    """Checkpoints saved with ``block_chunks > 0`` name blocks ``blocks.<chunk>.<i>.``; flatten them."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", k)
        out[f"blocks.{m.group(2)}.{m.group(3)}" if m else k] = v
    return out


def dinov2_from_state_dict(sd: dict, source: str = "state dict", pos_resample: str = "repa") -> DINOv2:
    """Build the network whose size the checkpoint implies and load it strictly."""
    sd = {k: v for k, v in _unchunk(sd).items() if not k.startswith("head.")}  # classifier heads: unused
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"{source}: not a DINOv2 checkpoint (no {', '.join(missing)}); expected the "
                         "official dinov2_vit*14*_pretrain.pth state dict")
    dim = sd["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    native = math.isqrt(sd["pos_embed"].shape[1] - 1)
    registers = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    swiglu = "blocks.0.mlp.w12.weight" in sd
    hidden = sd["blocks.0.mlp.w3.weight"].shape[1] if swiglu else sd["blocks.0.mlp.fc1.weight"].shape[0]
    if dim % HEAD_DIM:
        raise ValueError(f"{source}: width {dim} is not a multiple of the 64-wide DINOv2 heads")
    net = DINOv2(dim, depth, patch, native, registers, hidden, swiglu, pos_resample)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: DINOv2 state dict does not match the architecture it implies "
                         f"(width {dim}, depth {depth}, registers {registers}): {e}") from None
    return net.eval().requires_grad_(False)


def load_dinov2(path=None, pos_resample: str = "repa", network: str = "dinov2") -> tuple[DINOv2, str]:
    """Frozen DINOv2 from the weights manager (``network``: ``dinov2`` = ViT-B/14 for REPA via
    $SELFFLOW_WEIGHTS_DINOV2, ``dinov2_l`` = ViT-L/14 for FD_DINOv2 via $SELFFLOW_WEIGHTS_DINOV2_L;
    the cache directory; or ``path``); returns (model, sha256). Any official ViT/14 file loads."""
    p, digest = weights.resolve(network, path)
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, or not a torch pickle
        raise ValueError(f"{p}: cannot be read as a DINOv2 state dict ({type(e).__name__}: {e}); "
                         "download dinov2_vitb14_pretrain.pth again") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return dinov2_from_state_dict(sd, str(p), pos_resample), digest


def preprocess(images: Tensor, size: int) -> Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> ImageNet-normalised, bicubic-resized to ``size`` px, in
    REPA's order (normalise, then resize)."""
    x = (images.float() + 1.0) / 2.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return x


class DINOv2Features(nn.Module):
    """FD_DINOv2's feature (Stein et al. 2023, as EDM2 computes it) for ``evals.fid.image_set``.

    uint8-range (N, 3, H, W) images -> bicubic resize to 224x224 with antialiasing -> /255 ->
    ImageNet mean/std -> the normed class token (1024-d for the protocol's ViT-L/14), returned as
    ``{"pool3": ...}`` so the FID machinery (streaming statistics, reference cache) applies as is.
    """

    SIZE = 224

    def __init__(self, net: DINOv2):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.dim = net.dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.inference_mode()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.mean.device, torch.float32)
        x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bicubic", antialias=True)
        x = (x / 255.0 - self.mean) / self.std
        return {"pool3": self.net.normed_tokens(x)[:, 0]}  # (N, D) class token
