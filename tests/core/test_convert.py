"""Converters: official key names/shapes load strictly, and our velocity equals the official public forward.

The reference forwards below are written from the documented semantics of each release (docs/method.md,
"Published checkpoints and their conventions") in float64 with plain tensor ops, independent of core/: Self-Flow feeds
``1 - t`` to its per-token embedder and returns ``-output`` reordered from (p, q, c) to (c, p, q); SiT runs
in its own time (t = 1 data) with a Conv2d patch embedding and unpatchify; REPA is already in paper time.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.convert import ConvertInfo, extract_state_dict, fold_time_flip, load_pretrained
from core.objectives.repa import build_projector
from core.transformer import SiT

D, DEPTH, HEADS, P, C_LAT, GRID, CLASSES = 32, 2, 2, 2, 4, 4, 10
N, TOKEN = GRID * GRID, C_LAT * P * P


def dit_pos_embed(dim, grid):
    """DiT/MAE 2-D sin-cos table, (grid^2, dim): first half encodes the column (w), second the row."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return torch.from_numpy(np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1))


def official_state_dict(layout, seed=0):
    """Random weights under the official key names and shapes (small size; layouts are size-independent)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * 0.2  # noqa: E731
    out_c = {"selfflow": 2 * C_LAT, "sit": 2 * C_LAT, "repa": C_LAT}[layout]
    sd = {"x_embedder.proj.weight": r(D, TOKEN) if layout == "selfflow" else r(D, C_LAT, P, P),
          "x_embedder.proj.bias": r(D), "pos_embed": dit_pos_embed(D, GRID)[None],
          "t_embedder.mlp.0.weight": r(D, 256), "t_embedder.mlp.0.bias": r(D),
          "t_embedder.mlp.2.weight": r(D, D), "t_embedder.mlp.2.bias": r(D),
          "y_embedder.embedding_table.weight": r(CLASSES + 1, D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "attn.qkv.weight": r(3 * D, D), b + "attn.qkv.bias": r(3 * D),
                   b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                   b + "mlp.fc1.weight": r(4 * D, D), b + "mlp.fc1.bias": r(4 * D),
                   b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D),
                   b + "adaLN_modulation.1.weight": r(6 * D, D), b + "adaLN_modulation.1.bias": r(6 * D)})
    sd.update({"final_layer.linear.weight": r(P * P * out_c, D), "final_layer.linear.bias": r(P * P * out_c),
               "final_layer.adaLN_modulation.1.weight": r(2 * D, D), "final_layer.adaLN_modulation.1.bias": r(2 * D)})
    if layout == "selfflow":
        sd.update({"projector.linear1.weight": r(2 * D, D), "projector.linear1.bias": r(2 * D),
                   "projector.linear2.weight": r(D, 2 * D), "projector.linear2.bias": r(D)})
    if layout == "repa":
        for j, (i, o) in enumerate([(D, 48), (48, 48), (48, 24)]):
            sd.update({f"projectors.0.{2 * j}.weight": r(o, i), f"projectors.0.{2 * j}.bias": r(o)})
    return sd


def _lin(W, name, x):
    return x @ W[name + ".weight"].T + W[name + ".bias"]


def reference_forward(W, tokens_or_image, t_net, y, out_c):
    """A float64 DiT forward with per-token adaLN; ``t_net`` is the time the embedder sees, (B,) or (B, N).

    Returns the final-layer output per token, (B, N, p*p*out_c) in the official (p, q, c) order.
    """
    x = tokens_or_image
    if x.dim() == 4:  # Conv2d patch embedding (SiT / REPA)
        h = F.conv2d(x, W["x_embedder.proj.weight"], W["x_embedder.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    else:
        h = _lin(W, "x_embedder.proj", x)
    h = h + W["pos_embed"]
    B, n, _ = h.shape
    tt = t_net if t_net.dim() == 2 else t_net[:, None].expand(B, n)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    phi = torch.cat([torch.cos(tt[..., None] * freqs), torch.sin(tt[..., None] * freqs)], dim=-1)  # (B, N, 256)
    temb = _lin(W, "t_embedder.mlp.2", F.silu(_lin(W, "t_embedder.mlp.0", phi)))
    c = temb + W["y_embedder.embedding_table.weight"][y][:, None]
    ln = lambda z: F.layer_norm(z, (D,), eps=1e-6)  # noqa: E731
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sm, cm, gm, sp, cp, gp = _lin(W, b + "adaLN_modulation.1", F.silu(c)).chunk(6, dim=-1)
        a = ln(h) * (1 + cm) + sm
        q, k, v = _lin(W, b + "attn.qkv", a).reshape(B, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // HEADS), dim=-1) @ v
        h = h + gm * _lin(W, b + "attn.proj", att.transpose(1, 2).reshape(B, n, D))
        m = ln(h) * (1 + cp) + sp
        h = h + gp * _lin(W, b + "mlp.fc2", F.gelu(_lin(W, b + "mlp.fc1", m), approximate="tanh"))
    shift, scale = _lin(W, "final_layer.adaLN_modulation.1", F.silu(c)).chunk(2, dim=-1)
    return _lin(W, "final_layer.linear", ln(h) * (1 + scale) + shift)


def selfflow_public_forward(W, tokens, t, y):
    """Official ``forward(x, timesteps, vector)``: flip t, reorder (p q c) -> (c p q), keep learn_sigma half, negate."""
    out = reference_forward(W, tokens, 1 - t, y, 2 * C_LAT)
    B = out.shape[0]
    out = out.reshape(B, N, P, P, 2 * C_LAT).permute(0, 1, 4, 2, 3).reshape(B, N, -1)
    return -out[..., :TOKEN]


def unpatchify_official(out, out_c):
    """SiT/REPA ``unpatchify``: (B, N, p*p*c) in (p, q, c) -> image (B, c, H, W)."""
    B = out.shape[0]
    x = out.reshape(B, GRID, GRID, P, P, out_c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(B, out_c, GRID * P, GRID * P)


def patchify(img):  # our token order (c, p, q), row-major token grid
    B, c = img.shape[:2]
    return img.reshape(B, c, GRID, P, GRID, P).permute(0, 2, 4, 1, 3, 5).reshape(B, N, c * P * P)


def coords():
    h, w = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    return torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3)


def _load(tmp_path, layout, sd, **kw):
    path = tmp_path / f"{layout}.pt"
    torch.save({k: v.float() for k, v in sd.items()} if kw.pop("as_float", False) else sd, path)
    model, info = load_pretrained(path, layout, num_heads=HEADS, **kw)
    return model.double(), info


def test_fold_time_flip_is_exact():
    w = torch.randn(8, 256, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128).double()
    phi = lambda s: torch.cat([torch.cos(s[:, None] * freqs), torch.sin(s[:, None] * freqs)], 1)  # noqa: E731
    torch.testing.assert_close(phi(t) @ fold_time_flip(w).T, phi(1 - t) @ w.T, rtol=1e-12, atol=1e-12)


def test_selfflow_velocity_matches_official_public_forward(tmp_path):
    W = official_state_dict("selfflow")
    model, info = _load(tmp_path, "selfflow", W)
    assert info.missing == [] and info.unexpected == [] and "pos_embed" in info.dropped
    assert model.out_channels == 2 * TOKEN and model.null_class == CLASSES
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, N, TOKEN, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 7, CLASSES])  # includes the null class
    for t in (torch.rand(3, N, generator=g, dtype=torch.float64),  # random per-token timesteps
              torch.rand(3, generator=g, dtype=torch.float64)):
        ours = model(x, t, y, coords())
        ref = selfflow_public_forward(W, x, t, y)
        assert ref.abs().mean() > 0.1  # the comparison is not vacuous
        # our embedder computes its frequency features in float32 (as the release does): ~1e-7 relative
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["sit", "repa"])
def test_conv_layouts_match_their_forward(tmp_path, layout):
    W = official_state_dict(layout)
    model, info = _load(tmp_path, layout, W, keep_projector=layout == "repa")
    out_c = 2 * C_LAT if layout == "sit" else C_LAT
    g = torch.Generator().manual_seed(2)
    img = torch.randn(2, C_LAT, GRID * P, GRID * P, generator=g, dtype=torch.float64)
    t = torch.rand(2, generator=g, dtype=torch.float64)  # paper time
    y = torch.tensor([3, CLASSES])
    if layout == "sit":  # SiT time s = 1 - t, velocity data - noise = -(ours); learn_sigma keeps 4 channels
        ref = -unpatchify_official(reference_forward(W, img, 1 - t, y, out_c), out_c)[:, :C_LAT]
    else:
        ref = unpatchify_official(reference_forward(W, img, t, y, out_c), out_c)
    torch.testing.assert_close(model(patchify(img), t, y, coords()), patchify(ref), rtol=1e-5, atol=1e-5)
    if layout == "repa":  # kept projector loads strictly into our REPA objective's projector
        proj = build_projector(D, 48, 24).double()
        proj.load_state_dict(info.heads["repa_projector"])
        assert info.dropped == ["pos_embed"]


def test_legacy_repa_decoder_blocks(tmp_path):
    W = official_state_dict("repa")
    legacy = {k.replace("blocks.1.", "decoder_blocks.0."): v for k, v in W.items()}
    a, _ = _load(tmp_path, "repa", W)
    b, info = _load(tmp_path, "repa", legacy)
    assert any("legacy" in n for n in info.notes)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)


def test_selfflow_head_kept_or_dropped(tmp_path):
    W = official_state_dict("selfflow")
    _, dropped = _load(tmp_path, "selfflow", W)
    assert sorted(k for k in dropped.dropped if k.startswith("projector.")) == [
        "projector.linear1.bias", "projector.linear1.weight", "projector.linear2.bias", "projector.linear2.weight"]
    _, kept = _load(tmp_path, "selfflow", W, keep_projector=True)
    head = torch.nn.Sequential(torch.nn.Linear(D, 2 * D), torch.nn.SiLU(), torch.nn.Linear(2 * D, D)).double()
    head.load_state_dict(kept.heads["selfflow_head"])  # strict: SelfFlowObjective.head's layout


def test_nesting_and_module_prefix(tmp_path):
    W = {k: v.float() for k, v in official_state_dict("selfflow").items()}
    ref, _ = _load(tmp_path, "selfflow", W)
    for wrapped, nesting in [({"model": W}, ["model"]), ({"state_dict": {"module." + k: v for k, v in W.items()}}, ["state_dict"]),
                             ({"ema": W, "model": {k: torch.zeros_like(v) for k, v in W.items()}, "step": 3}, ["ema"])]:
        model, info = _load(tmp_path, "selfflow", wrapped)
        assert info.nested_under == nesting and info.stripped_prefix == ("state_dict" in nesting)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(model.state_dict()[k], v)
    _, info = _load(tmp_path, "selfflow", {"ema": W, "model": W}, prefer="model")
    assert info.nested_under == ["model"]


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    W = official_state_dict("selfflow")
    broken = {k: v for k, v in W.items() if k != "blocks.1.mlp.fc2.bias"}
    broken["blocks.0.attn.q_norm.weight"] = torch.ones(D // HEADS, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\].*unexpected keys \['blocks.0.attn.q_norm.weight'\]"):
        _load(tmp_path, "selfflow", broken)
    _, info = _load(tmp_path, "selfflow", broken, strict=False)
    assert info.missing == ["blocks.1.mlp.fc2.bias"] and info.unexpected == ["blocks.0.attn.q_norm.weight"]
    with pytest.raises(ValueError, match="Conv2d"):  # a Self-Flow file loaded as SiT
        _load(tmp_path, "sit", W)
    bad_pos = dict(W, pos_embed=W["pos_embed"].flip(1))
    with pytest.raises(ValueError, match="pos_embed differs"):
        _load(tmp_path, "selfflow", bad_pos)
    with pytest.raises(ValueError, match="model.hidden_size=64"):
        _load(tmp_path, "selfflow", W, hidden_size=64)
    with pytest.raises(ValueError, match="layout"):
        _load(tmp_path, "flux", W)


def test_ours_layout_reads_trainer_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = SiT(in_channels=TOKEN, hidden_size=D, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES)
    torch.save({"model": {}, "ema": {"model": model.state_dict(), "num_updates": 3}, "tokenizer": {"mean": torch.zeros(2)}},
               tmp_path / "ckpt.pt")
    loaded, info = load_pretrained(tmp_path / "ckpt.pt", "ours", num_heads=HEADS)
    assert info.nested_under == ["ema", "model"] and "mean" in info.tokenizer_state
    x, t, y = torch.randn(2, N, TOKEN), torch.rand(2), torch.tensor([1, 2])
    torch.testing.assert_close(loaded(x, t, y, coords()), model(x, t, y, coords()))


def test_extract_state_dict_errors():
    with pytest.raises(ValueError, match="no state dict found"):
        extract_state_dict({"args": {"lr": 1.0}, "epoch": 3})
    sd, path, _ = extract_state_dict({"module.a": torch.zeros(1)})
    assert list(sd) == ["a"] and path == ["module."]
    assert ConvertInfo(layout="sit").summary()["layout"] == "sit"


def test_ours_layout_restores_what_shapes_cannot_tell(tmp_path):
    # An x-prediction model with 3 heads, a custom t_min and swapped position axes: none of this is in
    # the weight shapes, so a checkpoint without model_config would be rebuilt as v / 2 heads.
    torch.manual_seed(0)
    model = SiT(in_channels=TOKEN, hidden_size=24, depth=DEPTH, num_heads=3, num_classes=CLASSES,
                prediction="x", t_min=0.1, pos_axes=("height", "width"))
    sd = model.state_dict()
    torch.save({"ema": {"model": sd, "num_updates": 1}, "model_config": model.arch_config()}, tmp_path / "ckpt.pt")
    loaded, info = load_pretrained(tmp_path / "ckpt.pt", "ours", num_heads=2, prediction="v")  # sampling-config defaults
    assert loaded.arch_config() == model.arch_config()
    assert any("prediction" in n for n in info.notes) and any("num_heads" in n for n in info.notes)
    x, t, y = torch.randn(2, N, TOKEN), torch.rand(2), torch.tensor([1, 2])
    torch.testing.assert_close(loaded(x, t, y, coords()), model(x, t, y, coords()), rtol=0, atol=0)
    # without the stored config the same weights give another velocity: the bug this guards against
    torch.save({"ema": {"model": sd, "num_updates": 1}}, tmp_path / "legacy.pt")
    legacy, _ = load_pretrained(tmp_path / "legacy.pt", "ours", num_heads=3, pos_axes=("height", "width"))
    assert legacy.prediction == "v"
    assert not torch.allclose(legacy(x, t, y, coords()), model(x, t, y, coords()))
