import pytest
import torch

from core.path import TimeDistribution
from core.schedule import group_attention_mask, sample_dual_timesteps, sample_token_mask, teacher_time


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_bernoulli_mask_fraction_and_variability(ratio):
    torch.manual_seed(0)
    m = sample_token_mask(4000, 64, ratio)
    assert abs(m.float().mean().item() - ratio) < 0.01
    counts = m.sum(1).float()
    # Binomial(N, R_M): the count varies across samples with variance N p (1 - p)
    assert abs(counts.var().item() - 64 * ratio * (1 - ratio)) / (64 * ratio * (1 - ratio)) < 0.1


def test_exact_mask_has_a_fixed_count():
    torch.manual_seed(0)
    m = sample_token_mask(100, 64, 0.25, mode="exact")
    assert bool((m.sum(1) == 16).all())
    assert m.float().mean(0).std() < 0.1  # positions uniformly chosen


def test_mask_ratio_above_half_is_rejected():
    with pytest.raises(ValueError, match="mask_ratio"):
        sample_token_mask(2, 4, 0.6)
    with pytest.raises(ValueError, match="mask_mode"):
        sample_token_mask(2, 4, 0.2, mode="tube")


@pytest.mark.parametrize("p_t", [TimeDistribution(), TimeDistribution("logit_normal", shift=2.95)])
def test_dts_statistics(p_t):
    torch.manual_seed(0)
    B, N = 20000, 16
    dts = sample_dual_timesteps(B, N, p_t, 0.25)
    t, s = dts.levels[:, 0], dts.levels[:, 1]
    # unsorted: either level is the cleaner one half of the time
    assert abs((t < s).float().mean().item() - 0.5) < 0.02
    # tau follows Eq. 4 and tau_min is the per-sample minimum over the tokens: min(t, s) when both
    # levels occur, t when no token was masked (about 0.75^16 = 1 % of samples here)
    assert torch.equal(dts.tau, torch.where(dts.mask, s[:, None], t[:, None]))
    used = dts.mask.any(1) & (~dts.mask).any(1)
    assert torch.equal(dts.tau_min[used], torch.minimum(t, s)[used])
    assert torch.equal(dts.tau_min[~dts.mask.any(1)], t[~dts.mask.any(1)])
    assert (~dts.mask.any(1)).sum() > 50
    # the per-token marginal of tau equals p(t): compare quantiles with direct draws from p(t)
    direct = p_t.sample((B * N,), generator=torch.Generator().manual_seed(5))
    qs = torch.linspace(0.05, 0.95, 19)
    torch.testing.assert_close(torch.quantile(dts.tau.flatten()[:1_000_000], qs), torch.quantile(direct[:1_000_000], qs),
                               rtol=0, atol=0.01)
    # whereas tau_min does not follow p(t): it is stochastically smaller
    assert dts.tau_min.mean() < direct.mean() - 0.05


def test_tau_min_is_a_level_some_token_has():
    # An empty mask leaves every token at t: the teacher must see t, even when the unused s is smaller.
    torch.manual_seed(0)
    dts = sample_dual_timesteps(4000, 3, TimeDistribution(), 0.1)
    empty = ~dts.mask.any(1)
    assert empty.sum() > 100  # 0.9^3 of the samples
    t, s = dts.levels[:, 0], dts.levels[:, 1]
    assert (s[empty] < t[empty]).any()  # cases where min(t, s) would have been wrong
    torch.testing.assert_close(dts.tau_min[empty], t[empty], rtol=0, atol=0)
    assert (dts.tau_min[:, None] == dts.tau).any(1).all()


def test_teacher_time_rules():
    torch.manual_seed(0)
    dts = sample_dual_timesteps(8, 10, TimeDistribution(), 0.5)
    assert torch.equal(teacher_time(dts, "min"), dts.tau_min)
    assert torch.equal(teacher_time(dts, "same"), dts.tau)
    with pytest.raises(ValueError, match="teacher_time"):
        teacher_time(dts, "max")


def test_group_attention_mask_blocks_cross_group_pairs():
    group = torch.tensor([[0, 1, 0, 1]])
    m = group_attention_mask(group)[0, 0]
    assert m.tolist() == [[True, False, True, False], [False, True, False, True]] * 2
