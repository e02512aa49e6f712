"""adaLN modulation when each sample's tokens sit at a few noise levels (the DTS fast path).

Under dual-timestep scheduling every token of sample b uses one of G = 2 conditioning rows. The
straightforward way -- select each token's row into a ``(B, N, 6D)`` tensor and let autograd
differentiate the select -- costs, per block, a ``(B, N, 6D)`` write in forward, two more plus a
``cat`` in backward, and keeps the ``(B, N, 6D)`` tensor alive until backward (the modulate
multiply saves a view of it). Profiled on CPU that was ~20 % of a Self-Flow step and +1/3 of the
activation memory.

The two autograd functions here compute exactly the same forward values (the select is exact and
the arithmetic is the same expression, ``x * (1 + scale) + shift`` and ``h + gate * a``), but:

* select rows with ``index_select`` on the flat ``(B*G, D)`` row table (a row memcpy per token),
  one ``(B, N, D)`` chunk at a time, and free it at once (nothing per-token is saved);
* in backward, recompute the one selected tensor that is needed and reduce the per-token
  gradients to their ``(B, G, D)`` rows with one batched matmul against a ``(B, G, N)`` one-hot
  table (multiplying by exactly 1.0 and 0.0, then summing: the same sums as autograd's, in another
  order, so equal up to float rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_sum(v: Tensor, onehot_t: Tensor) -> Tensor:
    """Per-(sample, level) sums over tokens: ``(B, N, M), (B, G, N) -> (B*G, M)``.

    A batched matmul against the one-hot table. On CUDA with TF32 matmuls allowed, a float32 bmm
    would round its inputs to 10 mantissa bits, so the sums are taken elementwise there instead.
    """
    B, N, M = v.shape
    G = onehot_t.shape[1]
    if v.is_cuda and v.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return (onehot_t.to(v.dtype).unsqueeze(-1) * v.unsqueeze(1)).sum(2).reshape(B * G, M)
    return torch.bmm(onehot_t.to(v.dtype), v).reshape(B * G, M)


def _select(rows: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """``(K, D)`` rows -> ``(B, N, D)`` by a flat ``(B*N,)`` token-to-row index."""
    return rows.index_select(0, index).view(like.shape[0], like.shape[1], rows.shape[-1])


class _LevelModulate(torch.autograd.Function):
    """``x * (1 + scale[row]) + shift[row]`` with per-token rows; saves only ``x`` and the rows."""

    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor, scale: Tensor, index: Tensor, onehot_t: Tensor) -> Tensor:
        scale1p = 1 + scale  # (K, D): as ``modulate`` computes it, on the rows instead of the tokens
        out = x * _select(scale1p, index, x)
        shift_tok = _select(shift, index, x)
        if torch.promote_types(out.dtype, shift_tok.dtype) == out.dtype:
            out += shift_tok  # in place on a fresh tensor: one (B, N, D) buffer fewer, same sum
        else:
            out = out + shift_tok
        ctx.save_for_backward(x, scale1p, index, onehot_t)
        ctx.row_dtypes = (shift.dtype, scale.dtype)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, scale1p, index, onehot_t = ctx.saved_tensors
        shift_dtype, scale_dtype = ctx.row_dtypes
        grad_x = grad_shift = grad_scale = None
        with torch.autocast(g.device.type, enabled=False):  # keep forward's dtypes in the sums
            if ctx.needs_input_grad[0]:
                grad_x = (g * _select(scale1p, index, g)).to(x.dtype)
            if ctx.needs_input_grad[1]:
                grad_shift = group_sum(g, onehot_t).to(shift_dtype)
            if ctx.needs_input_grad[2]:
                grad_scale = group_sum(g * x, onehot_t).to(scale_dtype)
        return grad_x, grad_shift, grad_scale, None, None


class _LevelGate(torch.autograd.Function):
    """``h + gate[row] * a`` with per-token rows (the adaLN-Zero gated residual); saves ``a``."""

    @staticmethod
    def forward(ctx, h: Tensor, gate: Tensor, a: Tensor, index: Tensor, onehot_t: Tensor) -> Tensor:
        out = h + _select(gate, index, a) * a
        ctx.save_for_backward(gate, a, index, onehot_t)
        ctx.h_dtype = h.dtype
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        gate, a, index, onehot_t = ctx.saved_tensors
        grad_h = grad_gate = grad_a = None
        with torch.autocast(g.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_h = g.to(ctx.h_dtype)
            if ctx.needs_input_grad[1]:
                grad_gate = group_sum(g * a, onehot_t).to(gate.dtype)
            if ctx.needs_input_grad[2]:
                grad_a = (g * _select(gate, index, g)).to(a.dtype)
        return grad_h, grad_gate, grad_a, None, None


def level_modulate(x: Tensor, shift: Tensor, scale: Tensor, index: Tensor, onehot_t: Tensor) -> Tensor:
    """``x (B, N, D)``; ``shift, scale (B*G, D)`` rows; ``index (B*N,)`` long row of each token, which
    must be ``b * G + level``; ``onehot_t (B, G, N)`` with ``onehot_t[b, level, n] = 1`` for token n's
    level. Returns ``x * (1 + scale[row]) + shift[row]``."""
    return _LevelModulate.apply(x, shift, scale, index, onehot_t)


def level_gate(h: Tensor, gate: Tensor, a: Tensor, index: Tensor, onehot_t: Tensor) -> Tensor:
    """``h + gate[row] * a`` for ``h, a (B, N, D)`` and ``gate (B*G, D)`` rows (as ``level_modulate``)."""
    return _LevelGate.apply(h, gate, a, index, onehot_t)
