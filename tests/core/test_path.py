import math

import pytest
import torch

from core.path import TimeDistribution, interpolate, sampling_grid, time_shift, velocity_target


def test_interpolant_endpoints_and_target_are_exact():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    assert torch.equal(interpolate(x0, eps, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, eps, torch.ones(3)), eps)
    t = torch.tensor([0.1, 0.5, 0.9])
    expected = torch.stack([(1 - ti) * x0[i] + ti * eps[i] for i, ti in enumerate(t.tolist())])
    torch.testing.assert_close(interpolate(x0, eps, t), expected, rtol=0, atol=1e-6)
    # the target is the time derivative of the path (Eq. 1 -> Eq. 2)
    dt = 1e-3
    finite_diff = (interpolate(x0.double(), eps.double(), t.double() + dt) - interpolate(x0.double(), eps.double(), t.double())) / dt
    torch.testing.assert_close(finite_diff, velocity_target(x0.double(), eps.double()), rtol=0, atol=1e-9)


def test_per_token_interpolation_uses_each_tokens_time():
    x0, eps = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    tau = torch.tensor([[0.0, 0.25, 1.0]])
    out = interpolate(x0, eps, tau)
    assert out[0, :, 0].tolist() == [0.0, 0.25, 1.0]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.78, 3.0, 6.93])
def test_time_shift_formula(alpha):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    expected = torch.tensor([alpha * x / (1 + (alpha - 1) * x) for x in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(time_shift(t, alpha), expected, rtol=0, atol=1e-15)
    s = time_shift(t, alpha)
    assert s[0] == 0 and s[-1] == 1 and bool((s[1:] >= s[:-1]).all())
    if alpha > 1:  # mass moves toward noise
        assert bool((s[1:-1] > t[1:-1]).all())


def test_time_shift_rejects_nonpositive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        time_shift(torch.rand(3), 0.0)


@pytest.mark.parametrize("dist,shift", [("uniform", 1.0), ("uniform", 3.0), ("logit_normal", 1.0), ("logit_normal", 2.95)])
def test_time_distribution_matches_its_density(dist, shift):
    p = TimeDistribution(dist=dist, mu=0.0, sigma=1.0, shift=shift)
    t = p.sample((200_000,), generator=torch.Generator().manual_seed(1)).double()
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    edges = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    hist = torch.histc(t, bins=20, min=0, max=1) / t.numel()
    # probability mass per bin from the density by the midpoint rule on a fine grid
    fine = torch.linspace(0, 1, 20 * 200 + 1, dtype=torch.float64)[:-1] + 0.5 / (20 * 200)
    mass = (p.pdf(fine) / (20 * 200)).view(20, 200).sum(1)
    assert abs(float(mass.sum()) - 1) < 2e-3
    assert float((hist - mass).abs().max()) < 4e-3, (hist, mass, edges)


def test_logit_normal_shift_equals_mu_plus_log_alpha():
    # App. A.2: shifting a logit-normal by s(alpha, .) gives a logit-normal with mu + log(alpha)
    a = TimeDistribution("logit_normal", mu=0.3, sigma=0.8, shift=2.95)
    b = TimeDistribution("logit_normal", mu=0.3 + math.log(2.95), sigma=0.8, shift=1.0)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    torch.testing.assert_close(a.pdf(t), b.pdf(t), rtol=1e-10, atol=0)


def test_bad_time_distribution_names_the_key():
    with pytest.raises(ValueError, match="time.dist"):
        TimeDistribution(dist="cosine")


def test_sampling_grid_is_decreasing_and_shifted():
    g = sampling_grid(10, shift=3.0)
    assert g[0] == 1 and g[-1] == 0 and len(g) == 11
    assert bool((g[1:] < g[:-1]).all())
    torch.testing.assert_close(g, time_shift(torch.linspace(1, 0, 11, dtype=torch.float64), 3.0))
