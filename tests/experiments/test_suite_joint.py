"""The `joint` budget (Table 6's shape): its grid composes, prints, and joint runs aggregate per member."""

import json

from app.config import validate
from app.joint import active_members, is_joint, loss_weights, validate_joint
from experiments.__main__ import main
from experiments.aggregate import aggregate, load_runs
from experiments.runner import cells, compose, load_budget


def test_joint_budget_grid_is_joint_vs_separate_at_equal_total_steps():
    budget = load_budget("joint")
    grid = cells(budget, seeds=[0])
    assert [c.key for c in grid] == ["joint/fm/seed0", "joint/selfflow/seed0", "joint/fm_aw/seed0", "joint/selfflow_aw/seed0",
                                     "image/fm/seed0", "image/selfflow/seed0", "video/fm/seed0", "video/selfflow/seed0",
                                     "audio/fm/seed0", "audio/selfflow/seed0"]
    assert len(cells(budget)) == 6 * 10
    cfgs = {c.key: compose(c.overrides) for c in grid}
    for key, cfg in cfgs.items():
        validate_joint(cfg) if is_joint(cfg) else validate(cfg)
    joint = cfgs["joint/selfflow/seed0"]
    probs = {m: float(joint.modality.weights[m]) for m in active_members(joint)}
    assert probs == {"image": 0.57, "video": 0.30, "audio": 0.13}
    # separate runs: each modality's expected share of the joint steps, summing to the joint total
    separate = {m: cfgs[f"{m}/selfflow/seed0"].train.steps for m in probs}
    assert separate == {m: round(p * joint.train.steps) for m, p in probs.items()}
    assert sum(separate.values()) == joint.train.steps
    # the two Table 6 weightings, and every other setting equal between the variants
    assert loss_weights(joint) == {"image": 0.131, "video": 0.628, "audio": 0.241}
    assert loss_weights(cfgs["joint/selfflow_aw/seed0"]) == {"image": 0.196, "video": 0.079, "audio": 0.725}
    for key, cfg in cfgs.items():
        assert (cfg.model.name, cfg.train.batch_size, cfg.train.lr, cfg.eval.num_samples) == ("tiny", 32, 1e-3, 128), key


def test_print_commands_lists_one_run_line_per_cell(capsys, tmp_path):
    assert main(["--budget", "joint", "--print-commands", "--seeds", "0,1", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 20 and all(line.startswith("python run.py modality=") for line in lines)
    assert sum("modality=joint" in line for line in lines) == 8
    assert f"run_dir={tmp_path}/joint/selfflow_aw/seed1" in lines[7]


def _fake_run(root, modality, variant, seed, evals, metrics):
    d = root / modality / variant / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "suite_cell.json").write_text(json.dumps({"modality": modality, "variant": variant, "seed": seed}))
    (d / "eval.json").write_text(json.dumps(evals))
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def test_a_joint_run_aggregates_as_one_run_per_member(tmp_path):
    for seed in range(2):
        _fake_run(tmp_path, "joint", "selfflow", seed,
                  {"image": [{"metric": "fd_shapesnet", "value": 1.0 + seed}], "audio": [{"metric": "fd_timbrenet", "value": 5.0}]},
                  [{"step": 2, "loss": 1.0, "samples_per_s": 10.0}, {"step": 2, "image/fd_shapesnet": 3.0, "audio/fd_timbrenet": 7.0},
                   {"step": 4, "image/fd_shapesnet": 1.0 + seed, "audio/fd_timbrenet": 5.0}])
        _fake_run(tmp_path, "image", "selfflow", seed, [{"metric": "fd_shapesnet", "value": 2.0 + seed}],
                  [{"step": 4, "loss": 1.0, "samples_per_s": 10.0}])
    runs = load_runs(tmp_path)
    keys = sorted((r.modality, r.variant, r.seed) for r in runs)
    assert keys == [("audio", "joint-selfflow", 0), ("audio", "joint-selfflow", 1), ("image", "joint-selfflow", 0),
                    ("image", "joint-selfflow", 1), ("image", "selfflow", 0), ("image", "selfflow", 1)]
    image_joint = next(r for r in runs if r.modality == "image" and r.variant == "joint-selfflow" and r.seed == 1)
    assert image_joint.final == {"fd_shapesnet": 2.0} and image_joint.curve == {"fd_shapesnet": [(2, 3.0), (4, 2.0)]}
    result = aggregate(runs, target="joint-selfflow")
    (cmp,) = result["modalities"]["image"]["comparisons"]
    assert (cmp["baseline"], cmp["seeds"], cmp["mean_diff"]) == ("selfflow", [0, 1], -1.0)  # joint 1, 2 vs separate 2, 3


def test_report_of_a_joint_suite_links_member_samples_and_prints_table_6(tmp_path):
    from experiments.report import PAPER_JOINT, write_report

    for seed in range(2):
        _fake_run(tmp_path, "joint", "selfflow", seed, {"image": [{"metric": "fd_shapesnet", "value": 1.0 + seed}]},
                  [{"step": 4, "image/fd_shapesnet": 1.0 + seed}])
        _fake_run(tmp_path, "audio", "selfflow", seed, [{"metric": "fd_timbrenet", "value": 2.0}],
                  [{"step": 4, "fd_timbrenet": 2.0}])
    grid = tmp_path / "joint" / "selfflow" / "seed0" / "samples" / "image" / "final_grid.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"\x89PNG")
    text = write_report(tmp_path, target="joint-selfflow").read_text()
    image, audio = text.split("## image")[1], text.split("## audio")[1].split("## image")[0]
    # a joint member's final grid lives under samples/<member>/
    assert "![joint-selfflow](joint/selfflow/seed0/samples/image/final_grid.png)" in image
    # a section holding joint runs gets Table 6 (the member's own columns); one without gets the single-modality table
    assert "Table 6" in image and "| (0.131, 0.628, 0.241) video-weighted | 3.35 -> 3.19 |" in image
    assert "Table 6" not in audio and "Table 4" in audio
    # every member has one FM -> Self-Flow pair per printed weighting, and Self-Flow is never worse in the paper
    for member, (metrics, rows) in PAPER_JOINT.items():
        assert len(rows) == 5 and all(len(fm) == len(sf) == len(metrics) for fm, sf in rows), member
        assert all(b <= a for fm, sf in rows for a, b in zip(fm, sf)), member
