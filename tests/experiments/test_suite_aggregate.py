"""The benchmark suite's statistics on synthetic run directories (no training, no networks)."""

import json

import numpy as np
import pytest

from experiments import aggregate as agg
from experiments.runner import cells, load_budget, merge_overrides


def write_run(root, modality, variant, seed, final: dict, curve: dict | None = None, rates=(10.0, 12.0, 12.0)):
    """A run directory as run.py + the suite runner leave it."""
    d = root / modality / variant / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "suite_cell.json").write_text(json.dumps({"modality": modality, "variant": variant, "seed": seed,
                                                   "wall_s": 5.0 + seed, "peak_rss_mb": 100.0}))
    (d / "eval.json").write_text(json.dumps([{"metric": m, "value": v, "available": True} for m, v in final.items()]
                                            + [{"metric": "fvd", "value": None, "available": False}]))
    lines = []
    for i, r in enumerate(rates):
        lines.append({"step": 2 * (i + 1), "loss": 1.0, "samples_per_s": r})
    for step, vals in sorted((curve or {}).items()):
        lines.append({"step": step, **vals})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{truncated")
    return d


# ---- t-interval, sign-flip p-value, MDE ------------------------------------------------------------

# Student t quantiles (printed tables give 2.776, 2.571, 4.303, 0.920; here to 13 digits)
T975 = {2: 4.302652729749, 4: 2.776445105198, 5: 2.570581835636}   # t_{0.975, df}, df = n - 1
T80 = {5: 0.9195437802408}                                         # t_{0.80, 5}


def test_t_interval_matches_the_hand_formula():
    x = np.array([0.3, -1.2, 2.0, 0.7, 1.1])
    mean = x.sum() / 5
    sd = np.sqrt(((x - mean) ** 2).sum() / 4)
    half = T975[4] * sd / np.sqrt(5)
    assert agg.t_interval(x) == pytest.approx((mean - half, mean + half), rel=1e-11)
    y = np.array([-4.0, -5.5, -6.0, -5.0, -4.5, -6.5])
    sd = np.sqrt(((y - y.mean()) ** 2).sum() / 5)
    assert agg.t_interval(y) == pytest.approx((y.mean() - T975[5] * sd / np.sqrt(6), y.mean() + T975[5] * sd / np.sqrt(6)))


def test_t_interval_edge_cases():
    assert agg.t_interval([-2.5] * 5) == (-2.5, -2.5)                  # no spread: zero width
    assert all(np.isnan(agg.t_interval([1.0])))                        # one pair: no interval at all
    lo3, hi3 = agg.t_interval([1.0, 2.0, 3.0])                         # [min, max] was the 3-seed bootstrap
    assert lo3 < 1.0 and hi3 > 3.0 and (hi3 - lo3) / 2 == pytest.approx(T975[2] / np.sqrt(3))


@pytest.mark.parametrize("diffs,expected", [
    ([1.0] * 5, 2 / 32),                   # all positive: only the observed pattern and its mirror are as extreme
    ([1.0] * 6, 2 / 64),
    ([0.5, 1.0, 2.0, 3.0, 4.0, 5.0], 2 / 64),  # all positive, unequal: the same
    ([1.0, 1.0, 1.0, 1.0, -1.0], 12 / 32),  # |sum| >= 3: one or zero negatives (6 patterns), times 2 mirrors
    ([3.0, 1.0, -1.0], 6 / 8),             # sums are +-5, +-3, +-3, +-1: six have |sum| >= |3|
    ([0.0, 0.0, 0.0, 0.0, 0.0], 1.0),      # no difference at all
])
def test_sign_flip_p_is_exact_on_hand_checkable_vectors(diffs, expected):
    assert agg.sign_flip_p(diffs) == pytest.approx(expected, abs=1e-15)


def test_sign_flip_p_equals_scipy_permutation_test_when_scipy_enumerates():
    from scipy import stats

    rng = np.random.default_rng(3)
    for n in (5, 7, 9):
        d = rng.normal(0.4, 1.0, size=n)
        ref = stats.permutation_test((d,), lambda x, axis: np.abs(np.mean(x, axis=axis)), vectorized=True,
                                     permutation_type="samples", n_resamples=np.inf, alternative="greater").pvalue
        assert agg.sign_flip_p(d) == pytest.approx(ref, rel=1e-12)


def test_sign_flip_p_above_the_exact_limit_is_a_seeded_monte_carlo_close_to_exact():
    d = np.random.default_rng(0).normal(0.3, 1.0, size=14)
    exact = agg.sign_flip_p(d)
    mc = agg.sign_flip_p(d, exact_max=10, n_resamples=50_000)
    assert mc == agg.sign_flip_p(d, exact_max=10, n_resamples=50_000)  # reproducible
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 50_000) + 1e-4


def test_mde_approximation_is_the_textbook_formula():
    assert agg.mde_approx(2.0, 6) == pytest.approx((T975[5] + T80[5]) * 2.0 / np.sqrt(6), rel=1e-11)
    assert np.isnan(agg.mde_approx(1.0, 1))


def test_exact_mde_has_80_percent_power_by_simulation():
    """Draw paired differences with true mean = MDE: the two-sided t-test rejects in ~80 % of repetitions."""
    sd, n = 1.5, 6
    m = agg.mde(sd, n)
    assert agg.t_test_power(m, sd, n) == pytest.approx(0.8, abs=1e-9)
    rng = np.random.default_rng(0)
    d = rng.normal(m, sd, size=(40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    assert np.mean(np.abs(t) > T975[5]) == pytest.approx(0.8, abs=0.012)
    # exact vs approximation: within a few % at n = 6, and both scale with sd / sqrt(n)
    assert agg.mde_approx(sd, n) == pytest.approx(m, rel=0.02)
    assert agg.mde(2 * sd, n) == pytest.approx(2 * m, rel=1e-6)
    assert agg.mde(0.0, n) == 0.0 and np.isnan(agg.mde(1.0, 1))


# ---- pairing and verdicts ---------------------------------------------------------------------------

def test_paired_differences_use_common_seeds_only():
    seeds, d = agg.paired_differences({0: 5.0, 1: 6.0, 3: 9.0}, {0: 7.0, 1: 6.5, 2: 1.0})
    assert seeds == [0, 1] and d.tolist() == [-2.0, -0.5]


@pytest.mark.parametrize("diff,ci,p,n,metric,base,expected", [
    (-2.0, (-3.0, -1.0), 0.03, 6, "fid", 50.0, agg.BETTER),            # lower FID, p < 0.05, CI below 0
    (2.0, (1.0, 3.0), 0.03, 6, "fid", 50.0, agg.WORSE),
    (-2.0, (-3.0, -1.0), 0.06, 8, "fid", 50.0, agg.NO_DIFF),           # CI excludes 0 but p >= 0.05
    (-0.5, (-1.5, 0.5), 0.01, 8, "fid", 50.0, agg.NO_DIFF),            # p small but CI contains 0
    (-2.0, (-3.0, -1.0), 0.03, 5, "fid", 50.0, agg.TOO_FEW),           # 5 < 6 seeds
    (-0.1, (-0.12, -0.08), 0.01, 8, "fid", 50.0, agg.NO_DIFF),         # 0.2% effect < 1% threshold
    (0.05, (0.03, 0.07), 0.03, 6, "precision", 0.5, agg.BETTER),      # higher precision is better
    (-0.05, (-0.07, -0.03), 0.03, 6, "recall", 0.5, agg.WORSE),
])
def test_verdict_thresholds(diff, ci, p, n, metric, base, expected):
    assert agg.verdict(diff, ci, p, n, metric, base)[0] == expected


@pytest.mark.parametrize("n", [1, 3, 5])
def test_fewer_than_six_seeds_refuse_even_when_every_seed_agrees(n):
    c = agg.compare([-10.0 - 0.1 * i for i in range(n)], "fid", 100.0)
    assert c["outcome"] == agg.TOO_FEW and c["verdict"] == f"not enough seeds ({n} < 6) for a verdict"
    assert c["p_value"] == pytest.approx(2.0 ** (1 - n))  # why: the test cannot get below 2/2^n


def test_six_agreeing_seeds_can_win_and_a_null_result_states_what_it_could_have_seen():
    win = agg.compare([-5.0, -6.0, -6.0, -5.5, -6.2, -5.1], "fid", 57.0)
    assert win["outcome"] == agg.BETTER and win["p_value"] == pytest.approx(2 / 64)
    d = np.array([-5.0, 6.0, -6.0, 1.0, 2.0, -3.0, 0.5])
    null = agg.compare(d, "fid", 57.0)
    assert null["outcome"] == agg.NO_DIFF
    assert null["mde"] == pytest.approx(agg.mde(d.std(ddof=1), 7))
    assert null["verdict"] == f"no detectable difference (would have detected >= {null['mde']:.3g})"
    tight = agg.compare([0.01, -0.01, 0.02, -0.02, 0.0, 0.01], "fid", 57.0)  # MDE below the 1% floor
    assert tight["verdict"] == "no detectable difference (would have detected >= 0.57)"


# ---- reading runs and the full aggregation ----------------------------------------------------------

def test_aggregate_on_synthetic_metric_files(tmp_path):
    fid = {"fm": [60.0, 62.0, 61.0, 63.0, 59.0, 61.0], "repa": [55.0, 58.0, 57.0, 58.0, 54.0, 56.0],
           "selfflow": [50.0, 52.0, 51.0, 53.0, 49.0, 51.0]}
    for variant, values in fid.items():
        for seed, v in enumerate(values):
            write_run(tmp_path, "image", variant, seed, {"fid": v, "precision": 0.5},
                      curve={3: {"fid": v + 10}, 6: {"fid": v}})
    write_run(tmp_path, "image", "fm", 9, {"fid": 1.0}).joinpath("eval.json").unlink()  # unfinished: ignored
    runs = agg.load_runs(tmp_path)
    assert len(runs) == 18
    res = agg.aggregate(runs)["modalities"]["image"]
    mean, std, n = res["table"]["selfflow"]["fid"]
    sf = np.array(fid["selfflow"])
    assert (mean, n) == (pytest.approx(sf.mean()), 6) and std == pytest.approx(sf.std(ddof=1))
    assert "fvd" not in res["table"]["fm"]  # unavailable metrics are not numbers
    by = {(c["baseline"], c["metric"]): c for c in res["comparisons"]}
    assert by[("fm", "fid")]["mean_diff"] == pytest.approx(-10.0)
    assert by[("fm", "fid")]["ci_low"] == by[("fm", "fid")]["ci_high"] == pytest.approx(-10.0)  # constant diffs
    assert by[("fm", "fid")]["verdict"] == agg.BETTER and by[("fm", "fid")]["p_value"] == pytest.approx(2 / 64)
    assert by[("repa", "fid")]["verdict"] == agg.BETTER  # diffs -5, -6, -6, -5, -5, -5
    assert by[("fm", "precision")]["outcome"] == agg.NO_DIFF  # identical
    three = agg.aggregate([r for r in runs if r.seed < 3])["modalities"]["image"]["comparisons"]
    assert {c["outcome"] for c in three} == {agg.TOO_FEW}  # the same wins from 3 seeds are refused
    conv = res["convergence"]["fid"]["fm"]
    assert [p[0] for p in conv] == [3, 6] and conv[0][1] == pytest.approx(71.0)
    cost = res["cost"]["fm"]
    assert cost["train_samples_per_s"][0] == pytest.approx(12.0)  # warm-up interval dropped
    assert cost["wall_s"][0] == pytest.approx(7.5)  # 5 + seed, seeds 0..5


def test_throughput_skips_intervals_that_contain_an_evaluation():
    logs = [{"step": 2, "samples_per_s": 5.0}, {"step": 4, "samples_per_s": 0.1},
            {"step": 6, "samples_per_s": 40.0}, {"step": 8, "samples_per_s": 42.0}]
    assert agg.train_throughput(logs, eval_steps={3}) == pytest.approx(41.0)
    # an eval at a logged step runs after that line: it slows the *next* interval; the final one none
    logs[1]["samples_per_s"], logs[2]["samples_per_s"] = 40.0, 0.1
    assert agg.train_throughput(logs, eval_steps={4, 8}) == pytest.approx(41.0)


def test_runs_from_a_plain_hydra_multirun_are_identified_by_their_config(tmp_path):
    d = tmp_path / "0_method=fm"
    d.mkdir()
    (d / "config.yaml").write_text("seed: 4\nmodality:\n  name: audio\nmethod:\n  name: fm\n")
    (d / "eval.json").write_text(json.dumps([{"metric": "fd_aisfx", "value": 3.0}]))
    (run,) = agg.load_runs(tmp_path)
    assert (run.modality, run.variant, run.seed, run.final) == ("audio", "fm", 4, {"fd_aisfx": 3.0})


def test_report_writes_tables_plots_and_the_papers_numbers(tmp_path):
    from experiments.report import write_report

    for variant, v in [("fm", 60.0), ("repa", 55.0), ("selfflow", 50.0)]:
        write_run(tmp_path, "image", variant, 0, {"fid": v}, curve={3: {"fid": v + 5}, 6: {"fid": v}})
    text = write_report(tmp_path).read_text()
    assert "| selfflow | 50 (n=1)" in text and "not enough seeds (1 < 6) for a verdict" in text
    assert "95% t-interval" in text and "p (sign-flip)" in text and "MDE (80%)" in text
    assert "The paper's numbers (not ours)" in text and "5.7" in text
    assert (tmp_path / "convergence_image_fid.png").exists() and (tmp_path / "aggregate.json").exists()


# ---- budgets ----------------------------------------------------------------------------------------

def test_later_overrides_replace_earlier_ones_of_the_same_key():
    assert merge_overrides(["modality=image", "a.b=1"], ["a.b=2", "+c=3"], ["c=4"]) == ["modality=image", "a.b=2", "c=4"]


@pytest.mark.parametrize("name", ["quick", "standard", "paper", "ablation"])
def test_every_budget_composes_into_valid_run_configs(compose, name):
    budget = load_budget(name)
    grid = cells(budget)
    assert len(grid) == len(budget.modalities) * len(budget.seeds) * len(budget.variants)
    for cell in grid[: len(budget.variants)] + grid[-len(budget.variants):]:
        cfg = compose(cell.overrides)
        assert cfg.modality.name == cell.modality and cfg.seed == cell.seed
    # equal compute: every variant of a modality trains with the same model, steps, batch and eval protocol
    for m in budget.modalities:
        cfgs = [compose(c.overrides) for c in grid if c.modality == m and c.seed == budget.seeds[0]]
        keys = lambda c: (c.model.name, c.train.steps, c.train.batch_size, c.train.lr, c.eval.num_samples,  # noqa: E731
                          c.sample.num_steps, str(c.eval.metrics))
        assert len({keys(c) for c in cfgs}) == 1, (name, m)
    # every REPA cell names an encoder that exists for its modality (audio+inception used to slip through)
    from app.repa_encoders import choose_backbone

    for cell in grid:
        if "method=repa" in cell.overrides and cell.seed == budget.seeds[0]:
            cfg = compose(cell.overrides)
            enc = {k: v for k, v in cfg.method.encoder.items() if k not in ("_target_", "modality")}
            assert choose_backbone(cfg.modality.name, **enc) in ({"crepe"} if cell.modality == "audio"
                                                                 else {"inception", "dinov2"}), cell.key


@pytest.mark.parametrize("name", ["standard", "ablation"])
def test_budgets_that_give_verdicts_have_enough_seeds(name):
    assert len(load_budget(name).seeds) >= agg.MIN_PAIRS


def test_repa_random_objective_matches_repa_and_repa_offline_is_an_alias(compose):
    repa, stand_in = compose(["method=repa"]).method, compose(["method=repa_random"]).method
    assert repa.objective == stand_in.objective and repa.name != stand_in.name
    assert compose(["method=repa_offline"]).method == repa


def test_unknown_budget_names_the_choices():
    with pytest.raises(FileNotFoundError, match="quick"):
        load_budget("nope")


@pytest.mark.parametrize("encoder,metrics,expect", [
    ("InceptionTokenEncoder", ["fid", "fd_dinov2"], "TF-2015 Inception, the same network that computes fid"),
    ("DINOv2TokenEncoder", ["fid", "fd_dinov2"], "aligns to DINOv2 features"),
    ("DINOv2TokenEncoder", ["fid"], None),          # Inception metrics are independent of DINOv2
    ("CrepeTokenEncoder", ["fd_aisfx"], None),
])
def test_repa_caveat_follows_the_encoder_the_run_really_used(tmp_path, encoder, metrics, expect):
    import json

    from experiments.aggregate import Run
    from experiments.report import _repa_caveat

    (tmp_path / "encoder.json").write_text(json.dumps({"class": encoder}))
    text = _repa_caveat([Run("image", "repa", 0, tmp_path)], "image", metrics)
    assert (text is None) if expect is None else (expect in text)
