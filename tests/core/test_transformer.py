import numpy as np
import pytest
import torch

from core.embeddings import LabelEmbedder, sincos_from_coords
from core.transformer import MODEL_SIZES, SiT, modulate, parse_model_name
from modalities.image import PixelPatchTokenizer


def _model(dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(in_channels=12, hidden_size=32, depth=3, num_heads=4, num_classes=5)
    args.update(kw)
    model = SiT(**args).to(dtype)
    # adaLN-Zero starts every block as the identity; randomise so the test sees real conditioning
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _coords(grid=4):
    return PixelPatchTokenizer(image_size=grid * 2, channels=3, patch_size=2).coords()


def _naive_forward(model: SiT, x, tau, y, coords):
    """Independent per-token adaLN: every token gets its own conditioning vector and modulation."""
    B, N, _ = x.shape
    h = model.x_embedder(x) + model.pos_embed(coords, x.dtype, x.device)
    c = model.t_embedder(tau.reshape(-1)).view(B, N, -1) + model.y_embedder(y)[:, None, :]
    for blk in model.blocks:
        sm, cm, gm, sp, cp, gp = blk.adaLN_modulation(c).chunk(6, dim=-1)
        h = h + gm * blk.attn(modulate(blk.norm1(h), sm, cm))
        h = h + gp * blk.mlp(modulate(blk.norm2(h), sp, cp))
    shift, scale = model.final_layer.adaLN_modulation(c).chunk(2, dim=-1)
    return model.final_layer.linear(modulate(model.final_layer.norm_final(h), shift, scale))[..., : model.in_channels]


def test_all_equal_per_token_time_equals_scalar_time_exactly():
    model = _model(torch.float32)
    coords = _coords()
    x = torch.randn(3, 16, 12)
    t = torch.tensor([0.2, 0.7, 0.7])
    y = torch.tensor([0, 4, 5])
    scalar = model(x, t, y, coords)
    per_token = model(x, t[:, None].expand(3, 16).contiguous(), y, coords)
    assert torch.equal(scalar, per_token)
    # the grouped path runs the modulation Linear on 2B rows: same maths, BLAS may round differently
    m64, x64, t64 = model.double(), x.double(), t.double()
    grouped = m64(x64, torch.stack([t64, t64], 1), y, coords, group=torch.randint(0, 2, (3, 16)))
    torch.testing.assert_close(m64(x64, t64, y, coords), grouped, rtol=0, atol=1e-12)


def test_two_timesteps_match_naive_per_token_modulation_float64():
    model = _model()
    coords = _coords()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 12, generator=g, dtype=torch.float64)
    levels = torch.rand(4, 2, generator=g, dtype=torch.float64)
    group = (torch.rand(4, 16, generator=g) < 0.3).long()
    tau = levels.gather(1, group)
    y = torch.tensor([1, 2, 5, 0])
    naive = _naive_forward(model, x, tau, y, coords)
    torch.testing.assert_close(model(x, levels, y, coords, group=group), naive, rtol=0, atol=1e-12)
    torch.testing.assert_close(model(x, tau, y, coords), naive, rtol=0, atol=1e-12)
    # and the answer really depends on the per-token times
    assert (naive - model(x, levels[:, 0], y, coords)).abs().max() > 1e-3


def test_scalar_time_computes_one_modulation_row_per_sample():
    model = _model(torch.float32)
    rows = []
    handle = model.blocks[0].adaLN_modulation.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    x, y, coords = torch.randn(5, 16, 12), torch.zeros(5, dtype=torch.long), _coords()
    model(x, torch.rand(5), y, coords)
    model(x, torch.rand(5, 2), y, coords, group=torch.randint(0, 2, (5, 16)))
    handle.remove()
    assert rows == [5, 10]  # B rows for scalar t (plain SiT cost), 2B under DTS -- never B*N


def _dit_2d_sincos(embed_dim, grid_size):
    """DiT's fixed table, re-derived in numpy from its published definition (meshgrid w first)."""
    gh, gw = np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_size, grid_size)

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize("dim,grid", [(384, 16), (1152, 16), (64, 8)])
def test_positional_table_equals_dit_for_image_grids(dim, grid):
    coords = PixelPatchTokenizer(image_size=grid * 2, channels=4, patch_size=2).coords()
    ours = sincos_from_coords(dim, coords, ("width", "height"))
    np.testing.assert_allclose(ours.numpy(), _dit_2d_sincos(dim, grid), rtol=0, atol=1e-12)


def test_three_axis_positions_are_distinct_per_token():
    t, h, w = torch.meshgrid(torch.arange(4), torch.arange(3), torch.arange(5), indexing="ij")
    coords = torch.stack([t, h, w], -1).reshape(-1, 3)
    table = sincos_from_coords(1024, coords, ("width", "height", "time"))  # 1024 not divisible by 6
    assert table.shape == (60, 1024)
    assert torch.cdist(table, table).add(torch.eye(60) * 1e9).min() > 1e-3


def test_hidden_states_and_truncated_forward():
    model = _model()
    x, t, y, coords = torch.randn(2, 16, 12, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.tensor([0, 1]), _coords()
    out, feats = model.forward_features(x, t, y, coords, features_at=(1, 3))
    assert set(feats) == {1, 3} and feats[1].shape == (2, 16, 32)
    none, short = model.forward_features(x, t, y, coords, features_at=(2,), stop_after=2)
    assert none is None
    _, full = model.forward_features(x, t, y, coords, features_at=(2,))
    assert torch.equal(short[2], full[2])
    with pytest.raises(ValueError, match="features_at"):
        model.forward_features(x, t, y, coords, features_at=(4,))


def test_learn_sigma_keeps_velocity_channels():
    model = _model(learn_sigma=True)
    assert model.final_layer.linear.out_features == 24
    out = model(torch.randn(2, 16, 12, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.tensor([0, 1]), _coords())
    assert out.shape == (2, 16, 12)


def test_attention_mask_isolates_groups():
    model = _model()
    coords = _coords()
    group = torch.tensor([[0] * 8 + [1] * 8])
    mask = (group[:, :, None] == group[:, None, :])[:, None]
    x = torch.randn(1, 16, 12, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 8:] += 1.0  # change only group-1 tokens
    t, y = torch.tensor([[0.3, 0.8]], dtype=torch.float64), torch.tensor([2])
    a = model(x, t, y, coords, group=group, attn_mask=mask)
    b = model(x2, t, y, coords, group=group, attn_mask=mask)
    torch.testing.assert_close(a[0, :8], b[0, :8], rtol=0, atol=1e-12)
    assert (model(x, t, y, coords, group=group) - model(x2, t, y, coords, group=group))[0, :8].abs().max() > 1e-6


def test_null_class_and_label_validation():
    emb = LabelEmbedder(10, 8)
    assert emb.null_class == 10 and emb.embedding_table.num_embeddings == 11
    with pytest.raises(ValueError, match="class labels"):
        emb(torch.tensor([11]))


def test_size_registry_matches_sit():
    assert MODEL_SIZES["SiT-XL"] == (1152, 28, 16)
    assert MODEL_SIZES["SiT-L"] == (1024, 24, 16)
    assert MODEL_SIZES["SiT-B"] == (768, 12, 12)
    assert MODEL_SIZES["SiT-S"] == (384, 12, 6)
    assert parse_model_name("SiT-XL/2") == (1152, 28, 16, 2)
    with pytest.raises(ValueError, match="model.name"):
        parse_model_name("SiT-XXL/2")


def test_sit_xl_parameter_count_matches_sit():
    # SiT-XL/2 without learn_sigma: SiT reports ~675M; count ours on the meta device (no memory)
    with torch.device("meta"):
        model = SiT(in_channels=16, hidden_size=1152, depth=28, num_heads=16, num_classes=1000, learn_sigma=True)
    n = sum(p.numel() for p in model.parameters())
    assert 674e6 < n < 676e6, n


def test_channel_mismatch_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.randn(1, 16, 7, dtype=torch.float64), torch.rand(1), torch.tensor([0]), _coords())


@pytest.mark.parametrize("time_kind", ["scalar", "per_token", "grouped"])
def test_x_prediction_returns_the_velocity_of_its_clean_estimate(time_kind):
    """prediction=x: forward = (x_t - x0_hat) / max(t, t_min), x0_hat being the v-model's raw output."""
    v_model, x_model = _model(seed=1), _model(seed=1, prediction="x")
    x_model.load_state_dict(v_model.state_dict())
    B, coords = 3, _coords()
    N = coords.shape[0]
    x, y = torch.randn(B, N, 12, dtype=torch.float64), torch.tensor([0, 2, 4])
    group = None
    if time_kind == "scalar":
        t = torch.tensor([0.01, 0.5, 0.9], dtype=torch.float64)  # 0.01 < t_min: clamped
        t_tok = t[:, None].expand(B, N)
    elif time_kind == "per_token":
        t = torch.rand(B, N, dtype=torch.float64) * 0.9 + 0.05
        t_tok = t
    else:  # DTS: two levels per sample and a token->level index
        t = torch.tensor([[0.2, 0.7], [0.3, 0.6], [0.1, 0.95]], dtype=torch.float64)
        group = torch.randint(0, 2, (B, N))
        t_tok = t.gather(1, group)
    with torch.no_grad():
        x0_hat = v_model(x, t, y, coords, group=group)  # same weights: the raw final-layer output
        v = x_model(x, t, y, coords, group=group)
    torch.testing.assert_close(v, (x - x0_hat) / t_tok.clamp_min(0.05)[..., None])


def test_prediction_auto_follows_the_token_width():
    assert SiT(in_channels=48, hidden_size=64, depth=1, num_heads=2, prediction="auto").prediction == "v"
    assert SiT(in_channels=192, hidden_size=64, depth=1, num_heads=2, prediction="auto").prediction == "x"
    with pytest.raises(ValueError, match="model.prediction"):
        SiT(in_channels=12, hidden_size=32, depth=1, num_heads=2, prediction="eps")


def test_x_prediction_learns_what_v_prediction_cannot_through_a_narrow_embedding():
    """Tokens of 48 values on a 1-D manifold, a 16-wide model: at t = 0.9 the v-model must pass 48-d
    noise through 16 dims and stalls near the noise variance; the x-model only has to place x0."""
    from core.objectives import FlowMatchingObjective
    from core.path import TimeDistribution, interpolate, velocity_target

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(1, 48, generator=g)

    def data(n):  # one scalar per token, spread over 48 values
        return torch.randn(n, 4, 1, generator=g) @ basis / 7

    coords = PixelPatchTokenizer(image_size=4, channels=3, patch_size=2).coords()  # 4 tokens
    losses = {}
    for pred in ("v", "x"):
        torch.manual_seed(0)
        model = SiT(in_channels=48, hidden_size=16, depth=2, num_heads=2, num_classes=1, prediction=pred)
        objective = FlowMatchingObjective(TimeDistribution(), label_dropout=0.0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(300):
            loss = objective(model, data(64), torch.zeros(64, dtype=torch.long), coords).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        x0, eps = data(256), torch.randn(256, 4, 48, generator=g)
        t = torch.full((256,), 0.9)
        with torch.no_grad():
            v = model(interpolate(x0, eps, t), t, torch.zeros(256, dtype=torch.long), coords)
        losses[pred] = float(((v - velocity_target(x0, eps)) ** 2).mean())
    assert losses["v"] > 0.5  # most of the 48-d noise cannot be represented in 16 dims
    assert losses["x"] < 0.25 * losses["v"], losses
