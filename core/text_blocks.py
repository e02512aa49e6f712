"""Transformer blocks that read a second token stream: text.

* :class:`JointBlock` (MMDiT / FLUX double-stream style, as the paper's text-to-X models): data and
  text tokens keep separate QKV, output projection, MLP and adaLN weights, and one attention runs
  over their concatenation ``[data; text]``. Padded text tokens are masked as keys, so they never
  reach a data token (or a real text token).
* :class:`CrossBlock` (the cheaper option, PixArt style): a SiT block with a cross-attention from the
  data tokens to the encoder's text tokens between self-attention and MLP; the text is encoded once
  and not updated per block.

The data-stream submodules carry the names of :class:`core.transformer.SiTBlock`
(``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp``, ``adaLN_modulation``) so a text model's
data path loads into a plain SiT (tests/core/test_text_model.py uses this to show that the empty
prompt is exactly the class-free path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import Attention, Conditioning, Mlp, modulate


def joint_mask(num_data: int, text_mask: Tensor, data_mask: Tensor | None) -> Tensor | None:
    """Bool mask ``(B, 1, N + L, N + L)`` (True = attend) for the concatenation ``[data; text]``.

    Every query may attend to every data token and to the valid text tokens; ``data_mask``
    (broadcastable to ``(B, H, N, N)``, e.g. Self-Flow's group separation) restricts data-to-data
    attention. None when nothing is masked (the fast kernels).
    """
    if data_mask is None and bool(text_mask.all()):
        return None
    B, L = text_mask.shape
    keys = torch.cat([torch.ones(B, num_data, dtype=torch.bool, device=text_mask.device), text_mask], dim=1)
    mask = keys[:, None, None, :].expand(B, 1, num_data + L, num_data + L)
    if data_mask is None:
        return mask
    mask = mask.clone()
    dm = data_mask.to(torch.bool)
    while dm.dim() < 4:
        dm = dm.unsqueeze(0)
    if dm.shape[1] != 1:
        raise ValueError("joint attention supports a data attention mask shared by all heads (B or 1, 1, N, N)")
    mask[:, :, :num_data, :num_data] = mask[:, :, :num_data, :num_data] & dm
    return mask


class JointBlock(nn.Module):
    """One double-stream block. ``last=True``: the text stream only feeds keys/values (its update
    would never be read, and DDP requires every parameter to get a gradient)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, last: bool = False):
        super().__init__()
        self.num_heads, self.last = num_heads, last
        # data stream: SiTBlock's names
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        # text stream
        self.txt_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.txt_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, (2 if last else 6) * hidden_size))
        if not last:
            self.txt_proj = nn.Linear(hidden_size, hidden_size)
            self.txt_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.txt_mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def _heads(self, qkv: Tensor) -> Tensor:
        B, L, _ = qkv.shape
        return qkv.view(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)

    def forward(self, x: Tensor, cond: Conditioning, attn_mask: Tensor | None, txt: Tensor, txt_cond: Tensor,
                txt_mask: Tensor) -> tuple[Tensor, Tensor]:
        """x ``(B, N, D)``, txt ``(B, L, D)``, txt_cond ``(B, D)`` (one row per sample), txt_mask ``(B, L)``."""
        B, N, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = cond.gather(
            self.adaLN_modulation(cond.rows)).chunk(6, dim=-1)
        tmod = self.txt_adaLN_modulation(txt_cond).unsqueeze(1).chunk(2 if self.last else 6, dim=-1)
        qkv_x = self._heads(self.attn.qkv(modulate(self.norm1(x), shift_msa, scale_msa)))
        qkv_t = self._heads(self.txt_qkv(modulate(self.txt_norm1(txt), tmod[0], tmod[1])))
        q, k, v = torch.cat([qkv_x, qkv_t], dim=3).unbind(0)  # (B, H, N + L, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=joint_mask(N, txt_mask, attn_mask))
        out = out.transpose(1, 2).reshape(B, N + txt.shape[1], D)
        x = x + gate_msa * self.attn.proj(out[:, :N])
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        if self.last:
            return x, txt
        _, _, t_gate_msa, t_shift_mlp, t_scale_mlp, t_gate_mlp = tmod
        txt = txt + t_gate_msa * self.txt_proj(out[:, N:])
        txt = txt + t_gate_mlp * self.txt_mlp(modulate(self.txt_norm2(txt), t_shift_mlp, t_scale_mlp))
        return x, txt

    def zero_init(self) -> None:
        """adaLN-Zero for both streams: the block starts as the identity."""
        for layer in (self.adaLN_modulation[-1], self.txt_adaLN_modulation[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


class CrossAttention(nn.Module):
    """Queries from the data tokens, keys/values from the text tokens; padded text masked."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, txt: Tensor, txt_mask: Tensor) -> Tensor:
        B, N, D = x.shape
        L, H = txt.shape[1], self.num_heads
        q = self.q(x).view(B, N, H, D // H).transpose(1, 2)
        k, v = self.kv(txt).view(B, L, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        has_text = txt_mask.any(dim=1)  # an empty prompt has no key: its rows read nothing (zero)
        mask = (txt_mask | ~has_text[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, N, D)
        return self.proj(out) * has_text[:, None, None].to(out.dtype)


class CrossBlock(nn.Module):
    """A SiT block plus cross-attention to the text: x += attn; x += cross(x, text); x += mlp."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm_cross = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.cross = CrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, cond: Conditioning, attn_mask: Tensor | None, txt: Tensor, txt_cond: Tensor,
                txt_mask: Tensor) -> tuple[Tensor, Tensor]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = cond.gather(
            self.adaLN_modulation(cond.rows)).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), attn_mask)
        x = x + self.cross(self.norm_cross(x), txt, txt_mask)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x, txt

    def zero_init(self) -> None:
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.cross.proj.weight)  # starts as the plain SiT block
        nn.init.zeros_(self.cross.proj.bias)
