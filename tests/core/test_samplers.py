"""Samplers against a closed-form velocity field: Gaussian data, where v(x, t) is exact."""

import pytest
import torch

from core.samplers import SamplerConfig, sample

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
STD = torch.tensor([0.5, 1.5], dtype=torch.float64)


class GaussianVelocity:
    """Exact v(x, t) = E[eps - x0 | x_t] for x0 ~ N(mu_y, diag(std^2)); label 1 = null uses mean 0."""

    null_class = 1

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y, coords):
        self.calls.append((x.shape[0], float(t[0])))
        mu = torch.where((y == self.null_class)[:, None, None], torch.zeros_like(MU), MU)  # (B, 1, 2)
        t = t.view(-1, 1, 1).double()
        var = (1 - t) ** 2 * STD**2 + t**2
        centred = x - (1 - t) * mu
        e_x0 = mu + (1 - t) * STD**2 / var * centred
        e_eps = t / var * centred
        return e_eps - e_x0


def _run(method, steps, n=20000, seed=0, **kw):
    model = GaussianVelocity()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    x, nfe = sample(model, noise, torch.zeros(n, dtype=torch.long), None, SamplerConfig(method=method, num_steps=steps, **kw), g)
    return x[:, 0], nfe, model


@pytest.mark.parametrize("method,steps,nfe,tol", [("euler", 100, 100, 0.03), ("heun", 25, 50, 0.02), ("sde", 250, 250, 0.04)])
def test_sampler_reaches_the_data_distribution(method, steps, nfe, tol):
    x, used, _ = _run(method, steps)
    assert used == nfe
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=tol)
    torch.testing.assert_close(x.std(0), STD, rtol=tol * 2, atol=0)


def test_heun_beats_euler_at_equal_steps():
    err = lambda x: float((x.std(0) - STD).abs().max() + (x.mean(0) - MU).abs().max())
    assert err(_run("heun", 8)[0]) < err(_run("euler", 8)[0]) / 3


def test_sampling_shift_is_still_consistent():
    x, _, model = _run("euler", 100, shift=3.0)
    torch.testing.assert_close(x.std(0), STD, rtol=0.06, atol=0)
    ts = [t for _, t in model.calls]
    assert ts[0] == 1.0 and ts[1] > 1 - 1 / 100  # shift > 1 spends steps near t = 1


def test_sde_with_fixed_seed_is_deterministic_and_seed_dependent():
    a, _, _ = _run("sde", 20, n=64, seed=3)
    b, _, _ = _run("sde", 20, n=64, seed=3)
    c, _, _ = _run("sde", 20, n=64, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sde_grid_matches_sit():
    # SiT: 250 points from 0 to 1 - 0.04 in its time, then a deterministic 0.04 step: in ours t = 1 .. 0.04
    _, nfe, model = _run("sde", 250, n=4)
    ts = [t for _, t in model.calls]
    assert nfe == 250 and ts[0] == 1.0 and abs(ts[-1] - 0.04) < 1e-12
    assert abs((ts[0] - ts[1]) - 0.96 / 249) < 1e-12


def test_cfg_interval_switches_guidance():
    model = GaussianVelocity()
    cfg = SamplerConfig(method="euler", num_steps=10, cfg_scale=2.0, guidance_low=0.25, guidance_high=0.7)
    x, nfe = sample(model, torch.randn(3, 1, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.long), None, cfg)
    assert nfe == 10
    for batch, t in model.calls:  # doubled batch exactly inside [low, high]
        assert batch == (6 if 0.25 <= t <= 0.7 else 3), (batch, t)


def test_cfg_combines_conditional_and_null_velocities():
    cfg = SamplerConfig(method="euler", num_steps=1, cfg_scale=3.0)
    noise = torch.randn(2, 1, 2, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    x, _ = sample(GaussianVelocity(), noise, y, None, cfg)
    m = GaussianVelocity()
    t1 = torch.ones(2, dtype=torch.float64)
    v = m(noise, t1, torch.ones_like(y), None) + 3.0 * (m(noise, t1, y, None) - m(noise, t1, torch.ones_like(y), None))
    torch.testing.assert_close(x, noise - v)


@pytest.mark.parametrize("kw,key", [({"method": "rk4"}, "sample.method"), ({"num_steps": 0}, "sample.num_steps"),
                                    ({"guidance_low": 0.8, "guidance_high": 0.7}, "guidance_low"),
                                    ({"method": "sde", "last_step": 0.0}, "last_step")])
def test_bad_sampler_config_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        SamplerConfig(**kw)


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.93])
def test_sde_with_a_sampling_shift_keeps_last_step_and_reaches_the_data(shift):
    # The shift warps the interior of the grid only: the deterministic final step stays last_step
    # (warping the endpoint made it 0.111 at shift 3 and 0.224 at 6.93, the paper's audio setting).
    x, nfe, model = _run("sde", 250, shift=shift)
    ts = [t for _, t in model.calls]
    assert nfe == 250 and ts[0] == 1.0 and abs(ts[-1] - 0.04) < 1e-12
    assert all(a > b for a, b in zip(ts, ts[1:]))
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.04)
    torch.testing.assert_close(x.std(0), STD, rtol=0.08, atol=0)


def test_sde_grid_shift_spends_steps_near_noise():
    from core.samplers import sde_grid

    plain, shifted = sde_grid(50, 0.04, 1.0), sde_grid(50, 0.04, 3.0)
    torch.testing.assert_close(plain, torch.linspace(1.0, 0.04, 50, dtype=torch.float64), rtol=0, atol=1e-15)
    assert shifted[0] == 1.0 and shifted[-1] == plain[-1]
    assert (shifted[1:-1] > plain[1:-1]).all()
