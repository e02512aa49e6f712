import numpy as np
import pytest
import scipy.linalg

from evals.frechet import (Stats, StreamingStats, compute_stats, frechet_distance, is_stats_file, load_stats,
                           save_stats, trace_sqrt_product)


def random_spd(rng, d, n=None):
    a = rng.standard_normal((n or 2 * d, d))
    return a.T @ a / len(a) + 1e-3 * np.eye(d)


def fd_sqrtm(mu1, s1, mu2, s2):
    """Independent reference: the TTUR formula with scipy's sqrtm (no `disp`, SciPy >= 1.18 safe)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_diagonal_closed_form(rng):
    # For diagonal covariances FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    m1, m2 = rng.standard_normal(16), rng.standard_normal(16)
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(Stats(m1, np.diag(a)), Stats(m2, np.diag(b)))
    assert got == pytest.approx(want, rel=1e-12)


def test_scaled_isotropic_and_mean_shift():
    d = 8
    assert frechet_distance(Stats(np.zeros(d), np.eye(d)), Stats(np.zeros(d), 4 * np.eye(d))) == pytest.approx(d)
    assert frechet_distance(Stats(np.zeros(d), np.eye(d)), Stats(np.full(d, 2.0), np.eye(d))) == pytest.approx(4 * d)


def test_symmetry_and_self_distance(rng):
    s1, s2 = random_spd(rng, 32), random_spd(rng, 32)
    a, b = Stats(rng.standard_normal(32), s1), Stats(rng.standard_normal(32), s2)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)
    assert abs(frechet_distance(a, a)) < 1e-10
    parts = frechet_distance(a, b, return_parts=True)
    assert parts["fd"] == pytest.approx(parts["mean_term"] + parts["trace_term"])


@pytest.mark.parametrize("d", [4, 64, 256])
def test_agrees_with_sqrtm(rng, d):
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    ours = frechet_distance(Stats(m1, s1), Stats(m2, s2))
    assert ours == pytest.approx(fd_sqrtm(m1, s1, m2, s2), rel=1e-6)
    ref_tr = np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert trace_sqrt_product(s1, s2) == pytest.approx(ref_tr, rel=1e-8)


def test_rank_deficient_covariances_stay_finite(rng):
    # N < D (a small CPU run): covariances are singular; the eigen route must not produce NaN/complex.
    x, y = rng.standard_normal((10, 64)), rng.standard_normal((10, 64)) + 0.5
    a, b = compute_stats(x), compute_stats(y)
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    assert abs(frechet_distance(a, a)) < 1e-8
    # the same statistics without their low-rank factors (e.g. read from a file) take the D x D route
    plain_a, plain_b = Stats(a.mu, a.sigma, a.n), Stats(b.mu, b.sigma, b.n)
    assert frechet_distance(plain_a, plain_b) == pytest.approx(fd, rel=1e-6)
    assert abs(frechet_distance(plain_a, plain_a)) < 1e-6 * np.trace(a.sigma)


@pytest.mark.parametrize("ddof", [0, 1])
def test_streaming_equals_one_shot(rng, ddof):
    x = rng.standard_normal((500, 24)) * 3 + 1000.0  # large mean: naive sum(x x^T) would cancel
    one = compute_stats(x, ddof=ddof)
    acc = StreamingStats(ddof=ddof)
    for chunk in np.array_split(x, [1, 7, 100, 333]):
        acc.update(chunk)
    st = acc.stats()
    assert st.n == 500
    np.testing.assert_allclose(st.mu, x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False, ddof=ddof), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st.sigma, one.sigma, rtol=1e-10, atol=1e-10)


def test_biased_vs_unbiased_differ_by_factor(rng):
    x = rng.standard_normal((50, 5))
    np.testing.assert_allclose(compute_stats(x, ddof=0).sigma * 50 / 49, compute_stats(x, ddof=1).sigma)


def test_rejects_mismatched_inputs(rng):
    x = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(compute_stats(x), compute_stats(rng.standard_normal((20, 5))))
    with pytest.raises(ValueError, match="conventions"):
        frechet_distance(compute_stats(x, ddof=0), compute_stats(x, ddof=1))
    with pytest.raises(ValueError, match="NaN"):
        StreamingStats().update(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="more than 1"):
        StreamingStats().update(x[:1]).stats()


def test_npz_round_trip_with_adm_keys(tmp_path, rng):
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((30, 3))
    p = tmp_path / "ref.npz"
    save_stats(p, compute_stats(x), compute_stats(y))
    with np.load(p) as f:
        assert {"mu", "sigma", "mu_s", "sigma_s"} <= set(f.files)
    assert is_stats_file(p)
    a, s = load_stats(p), load_stats(p, spatial=True)
    np.testing.assert_allclose(a.mu, x.mean(0), rtol=0, atol=1e-12)
    assert a.n == 30 and s.dim == 3
    # A file written by ADM / pytorch-fid has only mu/sigma: it loads, with n unknown (0), ddof 1.
    q = tmp_path / "adm.npz"
    np.savez(q, mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    b = load_stats(q)
    assert b.n == 0 and b.ddof == 1
    assert frechet_distance(a, b) == pytest.approx(0, abs=1e-12)
    with pytest.raises(KeyError, match="mu_s"):
        load_stats(q, spatial=True)


def test_low_rank_route_equals_full_eigh_route(rng):
    # N <= D keeps the centred rows; the N x N route must equal the D x D route.
    x, y = rng.standard_normal((12, 80)), rng.standard_normal((30, 80)) * 1.3 + 0.2
    a, b = compute_stats(x), compute_stats(y)
    assert a.factor is not None and a.factor.shape == (12, 80)
    np.testing.assert_allclose(a.factor.T @ a.factor, a.sigma, atol=1e-12)
    full = frechet_distance(Stats(a.mu, a.sigma, a.n), Stats(b.mu, b.sigma, b.n))
    assert frechet_distance(a, b) == pytest.approx(full, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(full, rel=1e-9)
    assert frechet_distance(a, Stats(b.mu, b.sigma, b.n)) == pytest.approx(full, rel=1e-9)
    big = compute_stats(rng.standard_normal((200, 80)))
    assert big.factor is None  # N > D: rows are not kept
