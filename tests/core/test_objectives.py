import pytest
import torch
import torch.nn.functional as F

from core.ema import EMA
from core.encoders import RandomTokenEncoder
from core.objectives import FlowMatchingObjective, REPAObjective, SelfFlowObjective, resolve_layer
from core.path import TimeDistribution
from core.transformer import SiT
from modalities.image import PixelPatchTokenizer

B, N, C = 4, 16, 12


def _setup(depth=6, dtype=torch.float64):
    torch.manual_seed(0)
    model = SiT(in_channels=C, hidden_size=32, depth=depth, num_heads=4, num_classes=3).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    ema = EMA(model, 0.99)
    with torch.no_grad():  # make the teacher differ from the student
        for p in ema.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    coords = PixelPatchTokenizer(image_size=8, channels=3, patch_size=2).coords()
    x0 = torch.randn(B, N, C, dtype=dtype)
    y = torch.tensor([0, 1, 2, 1])
    return model, ema, coords, x0, y


def _spy(module, calls):
    original = module.forward_features

    def wrapper(x, t, y, coords, **kw):
        calls.append(dict(x=x.clone(), t=t.clone(), y=y.clone(), **kw))
        return original(x, t, y, coords, **kw)

    module.forward_features = wrapper


def test_layer_defaults_follow_the_paper():
    assert resolve_layer(None, 0.3, 28, "k") == 8 and resolve_layer(None, 0.7, 28, "k") == 20  # SiT-XL: 8 / 20
    assert resolve_layer(None, 0.3, 12, "k") == 4  # REPA's depth for depth-12 models
    with pytest.raises(ValueError, match="student_layer"):
        SelfFlowObjective(TimeDistribution(), 32, 6, student_layer=5, teacher_layer=3)
    with pytest.raises(ValueError, match="teacher_layer"):
        SelfFlowObjective(TimeDistribution(), 32, 6, teacher_layer=9)


def test_selfflow_step_matches_an_independent_computation():
    model, ema, coords, x0, y = _setup()
    obj = SelfFlowObjective(TimeDistribution(), hidden_size=32, depth=6, label_dropout=0.5, mask_ratio=0.25).double()
    student_calls, teacher_calls = [], []
    _spy(model, student_calls)
    _spy(ema.model, teacher_calls)
    torch.manual_seed(123)
    out = obj(model, x0, y, coords, teacher=ema.model)

    # Replay the objective's draws in its documented order: noise, label drop, (t, s), mask.
    torch.manual_seed(123)
    eps = torch.randn_like(x0)
    y_drop = torch.where(torch.rand(B) < 0.5, torch.full_like(y, 3), y)
    levels = torch.rand(B, 2)
    mask = torch.rand(B, N) < 0.25
    tau = torch.where(mask, levels[:, 1:], levels[:, :1]).double()
    tau_min = tau.min(1).values  # over the tokens (= min(t, s) unless the mask is empty)

    (s_call,), (t_call,) = student_calls, teacher_calls
    x_tau = (1 - tau[..., None]) * x0 + tau[..., None] * eps
    torch.testing.assert_close(s_call["x"], x_tau, rtol=0, atol=1e-12)
    # teacher: every token at tau_min, same x0 and eps, same dropped labels, truncated at block k
    torch.testing.assert_close(t_call["x"], (1 - tau_min[:, None, None]) * x0 + tau_min[:, None, None] * eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(t_call["t"].double(), tau_min)
    assert torch.equal(s_call["y"], y_drop) and torch.equal(t_call["y"], y_drop)
    assert t_call["stop_after"] == 4 and t_call["features_at"] == (4,) and s_call["features_at"] == (2,)

    with torch.no_grad():
        pred, feats = SiT.forward_features(model, x_tau, tau, y_drop, coords, features_at=(2,))
        _, tf = SiT.forward_features(ema.model, t_call["x"], tau_min, y_drop, coords, features_at=(4,), stop_after=4)
        l_gen = ((pred - (eps - x0)) ** 2).mean()
        l_rep = (1 - F.cosine_similarity(obj.head(feats[2]), tf[4], dim=-1)).mean()
    torch.testing.assert_close(out.loss.detach(), l_gen + 0.8 * l_rep, rtol=1e-10, atol=0)
    torch.testing.assert_close(out.logs["loss_rep"], l_rep, rtol=1e-10, atol=0)


def test_selfflow_gradients_reach_student_and_head_not_teacher():
    model, ema, coords, x0, y = _setup()
    obj = SelfFlowObjective(TimeDistribution(), hidden_size=32, depth=6).double()
    obj(model, x0, y, coords, teacher=ema.model).loss.backward()
    assert all(p.grad is None for p in ema.model.parameters())
    assert obj.head[0].weight.grad is not None and obj.head[0].weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.blocks[5].attn.qkv.weight.grad.abs().sum() > 0  # L_gen reaches the deep blocks


def test_selfflow_ablation_switches():
    model, ema, coords, x0, y = _setup()
    calls_s, calls_t = [], []
    _spy(model, calls_s)
    _spy(ema.model, calls_t)
    # L_rep without DTS: one t per sample, the teacher sees the same t
    obj = SelfFlowObjective(TimeDistribution(), 32, 6, use_dts=False, label_dropout=0.0).double()
    obj(model, x0, y, coords, teacher=ema.model)
    assert calls_s[-1]["t"].shape == (B,) and torch.equal(calls_t[-1]["t"], calls_s[-1]["t"])
    # DTS without L_rep: no teacher pass at all
    n = len(calls_t)
    obj = SelfFlowObjective(TimeDistribution(), 32, 6, use_rep=False).double()
    out = obj(model, x0, y, coords, teacher=None)
    assert len(calls_t) == n and "loss_rep" not in out.logs and not obj.needs_teacher
    # teacher rule "same": the teacher sees the student's mixed input and levels
    obj = SelfFlowObjective(TimeDistribution(), 32, 6, teacher_time="same", label_dropout=0.0).double()
    obj(model, x0, y, coords, teacher=ema.model)
    torch.testing.assert_close(calls_t[-1]["x"], calls_s[-1]["x"])
    assert torch.equal(calls_t[-1]["group"], calls_s[-1]["group"])
    # attention separation: a group mask goes to the student
    obj = SelfFlowObjective(TimeDistribution(), 32, 6, attention_separation=True, mask_ratio=0.5).double()
    obj(model, x0, y, coords, teacher=ema.model)
    m, g = calls_s[-1]["attn_mask"], calls_s[-1]["group"]
    assert torch.equal(m[:, 0], g[:, :, None] == g[:, None, :])


def test_fm_loss_is_the_velocity_mse():
    model, _, coords, x0, y = _setup()
    obj = FlowMatchingObjective(TimeDistribution(), label_dropout=0.0)
    torch.manual_seed(7)
    out = obj(model, x0, y, coords)
    torch.manual_seed(7)
    eps = torch.randn_like(x0)
    t = torch.rand(B).double()
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    with torch.no_grad():
        expected = ((model(x_t, t, y, coords) - (eps - x0)) ** 2).mean()
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-12, atol=0)


def test_repa_projector_loss_and_frozen_encoder():
    model, _, coords, x0, y = _setup()
    encoder = RandomTokenEncoder(in_dim=C, width=16, depth=1, heads=2).double()
    obj = REPAObjective(TimeDistribution(), 32, 6, encoder, projector_dim=24, label_dropout=0.0).double()
    assert [m.out_features for m in obj.projector if isinstance(m, torch.nn.Linear)] == [24, 24, 16]
    assert not any(k.startswith("encoder.") for k in obj.trainable_state_dict())
    torch.manual_seed(3)
    out = obj(model, x0, y, coords)
    torch.manual_seed(3)
    eps = torch.randn_like(x0)
    t = torch.rand(B).double()
    with torch.no_grad():
        pred, feats = model.forward_features((1 - t[:, None, None]) * x0 + t[:, None, None] * eps, t, y, coords, features_at=(2,))
        proj = -F.cosine_similarity(obj.projector(feats[2]), encoder(x0), dim=-1).mean()
        expected = ((pred - (eps - x0)) ** 2).mean() + 0.5 * proj
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-12, atol=0)
    out.loss.backward()
    assert all(p.grad is None for p in encoder.parameters())


def test_repa_rejects_mismatched_encoder_tokens():
    model, _, coords, x0, y = _setup()

    class Pooled(torch.nn.Module):
        feature_dim = 8

        def forward(self, tokens, raw=None):
            return torch.zeros(tokens.shape[0], 1, 8, dtype=tokens.dtype)

    obj = REPAObjective(TimeDistribution(), 32, 6, Pooled(), projector_dim=8).double()
    with pytest.raises(ValueError, match="one feature per model token"):
        obj(model, x0, y, coords)


def test_random_encoder_is_identical_across_constructions_and_leaves_rng_alone():
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a = RandomTokenEncoder(in_dim=C, width=16, depth=1, heads=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = RandomTokenEncoder(in_dim=C, width=16, depth=1, heads=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_formula(warmup):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    ema = EMA(model, decay=0.9, warmup=warmup)
    expected = [p.detach().clone() for p in ema.model.parameters()]
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        ema.update(model)
    for e, p in zip(expected, ema.model.parameters()):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-14)
    assert not any(p.requires_grad for p in ema.model.parameters())
