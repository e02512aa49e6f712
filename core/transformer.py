"""SiT/DiT transformer with adaLN-Zero blocks and per-token timestep conditioning.

The network maps tokens ``x (B, N, C)``, timesteps and class labels to a velocity ``(B, N, C)``.
Timesteps may be a scalar per sample ``(B,)``, one value per token ``(B, N)``, or -- the fast path
the Self-Flow objective uses -- a few levels per sample ``(B, G)`` plus a token-to-level index
``(B, N)``.

Why not per-token adaLN: the released Self-Flow model runs the adaLN MLP (Linear D -> 6D) on every
token, which costs +27-31 % per step and is paid even at inference with one t. Here the
conditioning vector and every block's modulation are computed once per *distinct* (sample,
timestep) pair -- B rows for scalar t, at most 2B under DTS -- and selected per token only inside
the modulate / gated-residual arithmetic (``core.modulation``: no ``(B, N, 6D)`` tensor is built or
kept for backward). With scalar t the model does exactly the work of a plain SiT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .embeddings import LabelEmbedder, TimestepEmbedder, sincos_from_coords
from .modulation import level_gate, level_modulate
from .path import expand_time
from .tokens import check_coords


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


#################################################################################
#                          Conditioning (per distinct t)                        #
#################################################################################


@dataclass
class Conditioning:
    """Conditioning rows and how tokens map to them.

    Attributes:
        rows: ``(K, D)`` one conditioning vector per distinct (sample, timestep).
        index: ``(B, N)`` long row of each token, or ``None`` when ``K == B`` rows broadcast
            over all tokens of their sample (scalar t: the plain SiT path).
        levels_onehot: ``(B, G, N)`` one-hot token-to-level table when the rows are G levels per
            sample (``index == b * G + level``, the DTS layout): modulation then goes through
            :mod:`core.modulation`, which never materialises per-token modulation tensors.
    """

    rows: Tensor
    index: Tensor | None
    levels_onehot: Tensor | None = None

    def __post_init__(self):
        self.flat_index = self.index.reshape(-1) if self.index is not None else None

    def gather(self, per_row: Tensor) -> Tensor:
        """``(K, M) -> (B, 1, M)`` (broadcast) or ``(B, N, M)`` (gathered)."""
        if self.index is None:
            return per_row.unsqueeze(1)
        return per_row[self.index]

    def modulate(self, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        """``x * (1 + scale) + shift`` for ``x (B, N, D)`` and ``(K, D)`` rows of shift and scale."""
        if self.levels_onehot is not None:
            return level_modulate(x, shift, scale, self.flat_index, self.levels_onehot)
        return modulate(x, self.gather(shift), self.gather(scale))

    def gated(self, h: Tensor, gate: Tensor, a: Tensor) -> Tensor:
        """The adaLN-Zero residual ``h + gate * a`` for ``h, a (B, N, D)`` and ``(K, D)`` gate rows."""
        if self.levels_onehot is not None:
            return level_gate(h, gate, a, self.flat_index, self.levels_onehot)
        return h + self.gather(gate) * a


def time_rows(t: Tensor, num_tokens: int, group: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Reduce timesteps to distinct rows.

    Returns ``(levels (K,), sample_of_row (K,), index (B, N) or None)``.
    """
    batch = t.shape[0]
    arange = torch.arange(batch, device=t.device)
    if group is not None:  # t: (B, G) levels, group: (B, N) level of each token
        if t.dim() != 2 or group.shape != (batch, num_tokens):
            raise ValueError(f"grouped timesteps need t (B, G) and group (B, N), got {tuple(t.shape)}, {tuple(group.shape)}")
        levels_per_sample = t.shape[1]
        index = group.long() + arange[:, None] * levels_per_sample
        return t.reshape(-1), arange.repeat_interleave(levels_per_sample), index
    if t.dim() == 1:
        return t, arange, None
    if t.dim() == 2 and t.shape[1] == num_tokens:
        if bool((t == t[:, :1]).all()):  # one t per sample given per token: exactly the plain SiT path
            return t[:, 0], arange, None
        # General per-token t: deduplicate (sample, t) pairs.
        pairs = torch.stack([arange[:, None].expand_as(t).to(t.dtype), t], dim=-1).reshape(-1, 2)
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        return unique[:, 1], unique[:, 0].long(), inverse.view(batch, num_tokens)
    raise ValueError(f"timesteps must have shape (B,), (B, N) or (B, G) with group, got {tuple(t.shape)}")


#################################################################################
#                                 Core SiT Model                                #
#################################################################################


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash kernels on GPU)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.hidden_size={dim} must be divisible by model.num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, Dh) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SiTBlock(nn.Module):
    """A DiT/SiT block with adaLN-Zero conditioning; modulation arrives precomputed per row."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, cond: Conditioning, attn_mask: Tensor | None = None) -> Tensor:
        mod = self.adaLN_modulation(cond.rows)  # (K, 6D): per distinct timestep, never per token
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        x = cond.gated(x, gate_msa, self.attn(cond.modulate(self.norm1(x), shift_msa, scale_msa), attn_mask))
        x = cond.gated(x, gate_mlp, self.mlp(cond.modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, cond: Conditioning) -> Tensor:
        shift, scale = self.adaLN_modulation(cond.rows).chunk(2, dim=-1)  # (K, D) each
        return self.linear(cond.modulate(self.norm_final(x), shift, scale))


class SiT(nn.Module):
    """Token-sequence SiT with per-token timestep conditioning.

    Args:
        in_channels: token width C (e.g. 4 latent channels x 2 x 2 patch = 16).
        hidden_size, depth, num_heads, mlp_ratio: as in SiT's size registry.
        num_classes: number of classes; one extra null row is always present (CFG / dropout).
        learn_sigma: emit 2C output channels of which the first C are the velocity (checkpoint
            compatibility with SiT/REPA/Self-Flow releases; the extra C are unused).
        pos_axes: coordinate axes used by the fixed sin-cos positional embedding.
        grad_checkpointing: recompute block activations in backward to save memory.
        prediction: what the final layer emits. ``v`` (the paper's, SiT's): the velocity itself.
            ``x``: clean tokens x0_hat, turned into the velocity ``(x_t - x0_hat) / max(t, t_min)``
            inside ``forward`` (JiT, Li & He 2025), so objectives and samplers see a velocity either
            way. Use ``x`` when a token is wider than the model (``in_channels > hidden_size``): the
            linear patch embedding cannot carry the token's noise, so a v-prediction network
            plateaus at the noise it cannot see (its samples stay noise), while x0 lies on a
            low-dimensional data manifold that fits through. ``auto`` picks ``x`` exactly then.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        pos_axes: Sequence[str] = ("width", "height"),
        grad_checkpointing: bool = False,
        prediction: str = "v",
        t_min: float = 0.05,
    ):
        super().__init__()
        if prediction == "auto":
            prediction = "x" if in_channels > hidden_size else "v"
        if prediction not in ("v", "x"):
            raise ValueError(f"model.prediction={prediction!r}: must be v, x or auto")
        self.prediction, self.t_min = prediction, float(t_min)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_classes = num_classes
        self.pos_axes = tuple(pos_axes)
        self.grad_checkpointing = grad_checkpointing
        self.num_heads, self.mlp_ratio, self.learn_sigma = num_heads, float(mlp_ratio), learn_sigma

        self.x_embedder = nn.Linear(in_channels, hidden_size)  # tokens arrive patchified
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.blocks = nn.ModuleList([SiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, self.out_channels)
        self._pos_cache: tuple[tuple, Tensor, Tensor] | None = None
        self.initialize_weights()

    def arch_config(self) -> dict:
        """Every constructor argument, JSON-friendly, with ``prediction`` resolved (never ``auto``).

        Checkpoints store this because several arguments leave no trace in the weight shapes
        (``prediction``, ``t_min``, ``pos_axes``, ``num_heads``): rebuilding from shapes alone
        would, e.g., sample an x-prediction model as if it emitted the velocity.
        """
        return {"in_channels": self.in_channels, "hidden_size": self.hidden_size, "depth": self.depth,
                "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "num_classes": self.num_classes,
                "learn_sigma": self.learn_sigma, "pos_axes": list(self.pos_axes), "prediction": self.prediction,
                "t_min": self.t_min}

    def initialize_weights(self):
        """DiT initialisation: xavier Linear layers, N(0, 0.02) embedders, adaLN-Zero."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # zero gates: every block starts as the identity
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int:
        return self.y_embedder.null_class

    def pos_embed(self, coords: Tensor, dtype: torch.dtype, device) -> Tensor:
        """Fixed positions ``(1, N, D)``; cached for the last coordinate table seen."""
        # Keyed by the coordinate tensor's identity and version: no host sync on GPU per forward.
        key = (coords.data_ptr(), coords._version, tuple(coords.shape), str(device), dtype)
        # A reused address could hold other coordinates: on CPU (no sync cost) compare contents too.
        cached = self._pos_cache
        if cached is None or cached[0] != key or (coords.device.type == "cpu" and not torch.equal(cached[1], coords)):
            table = sincos_from_coords(self.hidden_size, check_coords(coords.cpu()), self.pos_axes)
            self._pos_cache = (key, coords.detach().clone(), table.to(device=device, dtype=dtype).unsqueeze(0))
        return self._pos_cache[2]

    def condition(self, t: Tensor, y: Tensor, num_tokens: int, group: Tensor | None = None) -> Conditioning:
        levels, sample_of_row, index = time_rows(t, num_tokens, group)
        rows = self.t_embedder(levels) + self.y_embedder(y)[sample_of_row]  # (K, D)
        onehot = None
        if group is not None:  # (B, G, N): built once per forward, shared by every block
            # A comparison, not F.one_hot: no value check, hence no host sync on CUDA.
            levels = torch.arange(t.shape[1], device=group.device)
            onehot = (group.unsqueeze(1) == levels[None, :, None]).to(rows.dtype)
        return Conditioning(rows=rows, index=index, levels_onehot=onehot)

    def _last_block(self, channels: int, features_at: Sequence[int], stop_after: int | None) -> int:
        """Check a forward call's token width and block indices; return the last block to run."""
        if channels != self.in_channels:
            raise ValueError(f"tokens have {channels} channels but the model expects in_channels={self.in_channels}")
        last = self.depth if stop_after is None else stop_after
        if not 1 <= last <= self.depth or any(not 1 <= k <= last for k in features_at):
            raise ValueError(f"features_at={list(features_at)} / stop_after={stop_after} must lie in [1, {self.depth}]")
        return last

    def forward_features(
        self,
        x: Tensor,
        t: Tensor,
        y: Tensor,
        coords: Tensor,
        group: Tensor | None = None,
        attn_mask: Tensor | None = None,
        features_at: Sequence[int] = (),
        stop_after: int | None = None,
    ) -> tuple[Tensor | None, dict[int, Tensor]]:
        """Run the network and return ``(velocity or None, {block: hidden state})``.

        Args:
            x: ``(B, N, C)`` noisy tokens.
            t: ``(B,)``, ``(B, N)``, or ``(B, G)`` levels together with ``group``.
            y: ``(B,)`` class labels; ``self.null_class`` means unconditional.
            coords: ``(N, 3)`` token coordinates.
            group: optional ``(B, N)`` index into the G levels of ``t``.
            attn_mask: optional bool mask broadcastable to ``(B, heads, N, N)``; True = attend.
            features_at: 1-indexed blocks whose output hidden state (the raw residual stream,
                before the final layer) is returned.
            stop_after: stop after this block (the truncated teacher); the velocity is then None.
        """
        B, N, C = x.shape
        last = self._last_block(C, features_at, stop_after)
        h = self.x_embedder(x) + self.pos_embed(coords, x.dtype, x.device)  # (B, N, D)
        cond = self.condition(t, y, N, group)
        feats: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[:last], start=1):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, cond, attn_mask, use_reentrant=False)
            else:
                h = block(h, cond, attn_mask)
            if i in features_at:
                feats[i] = h
        if stop_after is not None:
            return None, feats
        out = self.final_layer(h, cond)[..., : self.in_channels]  # (B, N, C)
        if self.prediction == "x":  # x0_hat -> velocity: x_t = (1 - t) x0 + t eps  =>  v = (x_t - x0) / t
            t_tok = t.gather(1, group) if group is not None else t  # (B,) or (B, N)
            out = (x - out) / expand_time(t_tok, x).clamp_min(self.t_min)
        return out, feats

    def forward(self, x: Tensor, t: Tensor, y: Tensor, coords: Tensor, group: Tensor | None = None,
                attn_mask: Tensor | None = None, features_at: Sequence[int] = (), stop_after: int | None = None,
                return_features: bool = False):
        """Velocity ``(B, N, C)`` in the paper convention (Eq. 2 target ``eps - x0``).

        With ``return_features=True`` returns ``forward_features``' pair instead; objectives call the
        model this way so that a DDP wrapper (which hooks ``forward`` only) sees every training pass.
        """
        out, feats = self.forward_features(x, t, y, coords, group=group, attn_mask=attn_mask,
                                           features_at=features_at, stop_after=stop_after)
        return (out, feats) if return_features else out


#################################################################################
#                                   SiT Configs                                 #
#################################################################################

# name -> (hidden_size, depth, num_heads); patch size is the tokenizer's, as "SiT-XL/2".
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "SiT-XL": (1152, 28, 16),
    "SiT-L": (1024, 24, 16),
    "SiT-B": (768, 12, 12),
    "SiT-S": (384, 12, 6),
    # CPU presets for smoke tests and the default laptop run.
    "tiny": (128, 6, 4),
    "micro": (64, 4, 2),
}


def parse_model_name(name: str) -> tuple[int, int, int, int | None]:
    """``"SiT-XL/2" -> (1152, 28, 16, 2)``; a name without ``/p`` gives patch ``None``."""
    base, _, patch = name.partition("/")
    if base not in MODEL_SIZES:
        raise ValueError(f"model.name={name!r}: unknown size; choose one of {sorted(MODEL_SIZES)} (optionally '/<patch>')")
    hidden, depth, heads = MODEL_SIZES[base]
    return hidden, depth, heads, int(patch) if patch else None
