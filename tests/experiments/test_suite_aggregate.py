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


# ---- bootstrap ------------------------------------------------------------------------------------

def test_constant_differences_give_a_zero_width_ci():
    lo, hi = agg.bootstrap_ci([-2.5] * 5)
    assert lo == hi == pytest.approx(-2.5)


def test_bootstrap_ci_is_deterministic_and_contains_the_mean():
    x = [0.3, -1.2, 2.0, 0.7, 1.1]
    assert agg.bootstrap_ci(x) == agg.bootstrap_ci(x)
    lo, hi = agg.bootstrap_ci(x)
    assert lo < np.mean(x) < hi


def test_bootstrap_ci_of_a_symmetric_sample_is_symmetric_about_its_mean():
    lo, hi = agg.bootstrap_ci([-3.0, -1.0, 1.0, 3.0], n_resamples=20_000)
    assert lo == pytest.approx(-hi, abs=0.05)
    # resample means of {-3,-1,1,3} lie on a grid of 0.5; the 2.5% tail is well inside (-3, 3)
    assert -3.0 < lo < -1.0


def test_bootstrap_ci_coverage_is_sane_for_normal_data():
    """Percentile bootstrap of the mean, n=20 normal draws: covers the true mean ~95% (a bit less)."""
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        lo, hi = agg.bootstrap_ci(rng.normal(1.0, 2.0, size=20), n_resamples=2000, seed=i)
        hits += lo <= 1.0 <= hi
    assert 0.85 <= hits / 200 <= 0.99


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = agg.bootstrap_ci(rng.normal(size=5))
    large = agg.bootstrap_ci(rng.normal(size=500))
    assert large[1] - large[0] < small[1] - small[0]


# ---- pairing and verdicts ---------------------------------------------------------------------------

def test_paired_differences_use_common_seeds_only():
    seeds, d = agg.paired_differences({0: 5.0, 1: 6.0, 3: 9.0}, {0: 7.0, 1: 6.5, 2: 1.0})
    assert seeds == [0, 1] and d.tolist() == [-2.0, -0.5]


@pytest.mark.parametrize("diff,ci,n,metric,base,expected", [
    (-2.0, (-3.0, -1.0), 3, "fid", 50.0, agg.BETTER),            # lower FID, CI below 0
    (2.0, (1.0, 3.0), 3, "fid", 50.0, agg.WORSE),
    (-0.5, (-1.5, 0.5), 5, "fid", 50.0, agg.NO_DIFF),            # CI contains 0
    (-2.0, (-3.0, -1.0), 2, "fid", 50.0, agg.NO_DIFF),           # too few seeds
    (-0.1, (-0.12, -0.08), 5, "fid", 50.0, agg.NO_DIFF),         # 0.2% effect < 1% threshold
    (0.05, (0.03, 0.07), 3, "precision", 0.5, agg.BETTER),      # higher precision is better
    (-0.05, (-0.07, -0.03), 3, "recall", 0.5, agg.WORSE),
])
def test_verdict_thresholds(diff, ci, n, metric, base, expected):
    assert agg.verdict(diff, ci, n, metric, base)[0] == expected


def test_a_single_seed_never_gets_a_verdict():
    """One pair gives a zero-width CI that excludes 0: exactly the case that must not read as a win."""
    ci = agg.bootstrap_ci([-10.0])
    word, why = agg.verdict(-10.0, ci, 1, "fid", 100.0)
    assert word == agg.NO_DIFF and "1 paired seed" in why


# ---- reading runs and the full aggregation ----------------------------------------------------------

def test_aggregate_on_synthetic_metric_files(tmp_path):
    fid = {"fm": [60.0, 62.0, 61.0], "repa": [55.0, 58.0, 57.0], "selfflow": [50.0, 52.0, 51.0]}
    for variant, values in fid.items():
        for seed, v in enumerate(values):
            write_run(tmp_path, "image", variant, seed, {"fid": v, "precision": 0.5},
                      curve={3: {"fid": v + 10}, 6: {"fid": v}})
    write_run(tmp_path, "image", "fm", 9, {"fid": 1.0}).joinpath("eval.json").unlink()  # unfinished: ignored
    runs = agg.load_runs(tmp_path)
    assert len(runs) == 9
    res = agg.aggregate(runs)["modalities"]["image"]
    mean, std, n = res["table"]["selfflow"]["fid"]
    assert (mean, n) == (51.0, 3) and std == pytest.approx(1.0)
    assert "fvd" not in res["table"]["fm"]  # unavailable metrics are not numbers
    by = {(c["baseline"], c["metric"]): c for c in res["comparisons"]}
    assert by[("fm", "fid")]["mean_diff"] == pytest.approx(-10.0)
    assert by[("fm", "fid")]["ci_low"] == by[("fm", "fid")]["ci_high"] == pytest.approx(-10.0)  # constant diffs
    assert by[("fm", "fid")]["verdict"] == agg.BETTER
    assert by[("repa", "fid")]["verdict"] == agg.BETTER  # diffs -5, -6, -6
    assert by[("fm", "precision")]["verdict"] == agg.NO_DIFF  # identical
    conv = res["convergence"]["fid"]["fm"]
    assert [p[0] for p in conv] == [3, 6] and conv[0][1] == pytest.approx(71.0)
    cost = res["cost"]["fm"]
    assert cost["train_samples_per_s"][0] == pytest.approx(12.0)  # warm-up interval dropped
    assert cost["wall_s"][0] == pytest.approx(6.0)


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
    assert "| selfflow | 50 (n=1)" in text and agg.NO_DIFF in text
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
        if "method=repa_offline" in cell.overrides and cell.seed == budget.seeds[0]:
            cfg = compose(cell.overrides)
            enc = {k: v for k, v in cfg.method.encoder.items() if k not in ("_target_", "modality")}
            assert choose_backbone(cfg.modality.name, **enc) in ({"crepe"} if cell.modality == "audio"
                                                                 else {"inception", "dinov2"}), cell.key


def test_repa_offline_objective_matches_repa(compose):
    a, b = compose(["method=repa"]).method.objective, compose(["method=repa_offline"]).method.objective
    assert a == b


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
