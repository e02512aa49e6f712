"""The DTS modulation fast path (core.modulation) against the naive per-token computation."""

import pytest
import torch

from core.modulation import group_sum, level_gate, level_modulate
from core.transformer import SiT, modulate
from modalities.image import PixelPatchTokenizer


def _case(dtype, B=3, N=10, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    group = (torch.rand(B, N, generator=g) < 0.3).long()
    group[0] = 0  # a sample with no token at level 1 (an empty DTS mask)
    index = (group + 2 * torch.arange(B)[:, None]).reshape(-1)
    onehot_t = (group.unsqueeze(1) == torch.arange(2)[None, :, None]).to(dtype)  # (B, 2, N)
    x = torch.randn(B, N, D, generator=g, dtype=dtype)
    rows = [torch.randn(2 * B, D, generator=g, dtype=dtype) for _ in range(2)]
    return group, index, onehot_t, x, rows


def _per_token(rows, group):
    """The naive path: each token's row materialised by an ordinary (autograd-differentiated) select."""
    B, N = group.shape
    pairs = rows.view(B, 2, -1)
    return torch.where(group.unsqueeze(-1) == 1, pairs[:, 1:], pairs[:, :1])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_level_modulate_equals_per_token_modulate_forward_and_gradients(dtype, tol):
    group, index, onehot_t, x, (shift, scale) = _case(dtype)
    leaves = [t.clone().requires_grad_() for t in (x, shift, scale)]
    fast = level_modulate(*leaves, index, onehot_t)
    ref_leaves = [t.clone().requires_grad_() for t in (x, shift, scale)]
    rx, rs, rc = ref_leaves
    naive = modulate(rx, _per_token(rs, group), _per_token(rc, group))
    assert torch.equal(fast, naive)  # same expression on the same selected values: bit-identical
    w = torch.randn(fast.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    (fast * w).sum().backward()
    (naive * w).sum().backward()
    for a, b in zip(leaves, ref_leaves):  # row gradients: the same sums in another order
        torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol)
    assert torch.equal(leaves[0].grad, ref_leaves[0].grad)  # grad of x: the same product


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_level_gate_equals_per_token_gated_residual(dtype, tol):
    group, index, onehot_t, h, (gate, _) = _case(dtype, seed=1)
    a = torch.randn_like(h)
    leaves = [t.clone().requires_grad_() for t in (h, gate, a)]
    fast = level_gate(*leaves, index, onehot_t)
    ref = [t.clone().requires_grad_() for t in (h, gate, a)]
    naive = ref[0] + _per_token(ref[1], group) * ref[2]
    assert torch.equal(fast, naive)
    w = torch.randn(fast.shape, generator=torch.Generator().manual_seed(6), dtype=dtype)
    (fast * w).sum().backward()
    (naive * w).sum().backward()
    for x, y in zip(leaves, ref):
        torch.testing.assert_close(x.grad, y.grad, rtol=tol, atol=tol)


def test_group_sum_is_the_per_level_token_sum():
    group, _, onehot_t, v, _ = _case(torch.float64, B=4, N=7, D=5, seed=2)
    out = group_sum(v, onehot_t).view(4, 2, 5)
    for b in range(4):
        for level in range(2):
            expect = v[b][group[b] == level].sum(0)  # an empty level sums to exactly 0
            torch.testing.assert_close(out[b, level], expect, rtol=0, atol=1e-12)


def _model(seed=0):
    torch.manual_seed(seed)
    model = SiT(in_channels=12, hidden_size=32, depth=3, num_heads=4, num_classes=5).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("prediction", ["v", "x"])
def test_model_gradients_match_the_general_per_token_path(prediction):
    """Grouped levels (fast path) vs the same per-token times through the generic gather path."""
    g = torch.Generator().manual_seed(3)
    coords = PixelPatchTokenizer(image_size=8, channels=3, patch_size=2).coords()
    x = torch.randn(4, 16, 12, generator=g, dtype=torch.float64)
    levels = torch.rand(4, 2, generator=g, dtype=torch.float64) * 0.9 + 0.1
    group = (torch.rand(4, 16, generator=g) < 0.3).long()
    group[1, :3] = 1  # at least one token at level 1 in sample 1
    tau = levels.gather(1, group)
    y = torch.tensor([1, 2, 5, 0])
    grads = []
    for kw in (dict(t=levels, group=group), dict(t=tau)):  # (B, 2) + group vs (B, N) deduplicated rows
        model = _model()
        model.prediction = prediction
        out = model(x, kw["t"], y, coords, group=kw.get("group"))
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]["out"] = out.detach()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-10, msg=name)


def test_bf16_autocast_keeps_the_naive_dtypes_and_values():
    group, index, onehot_t, x, (shift, scale) = _case(torch.float32, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s16, c16 = shift.bfloat16(), scale.bfloat16()
        fast = level_modulate(x, s16, c16, index, onehot_t)
        naive = modulate(x, _per_token(s16, group), _per_token(c16, group))
    assert fast.dtype == naive.dtype == torch.float32
    assert torch.equal(fast, naive)
