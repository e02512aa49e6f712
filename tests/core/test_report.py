"""Run report: the loss plot always, a metric-vs-step plot only when evaluation ran at several steps."""

from core.report import eval_curves, write_report

TRAIN = [{"step": s, "loss": 1.0 / s, "lr": 1e-3} for s in range(1, 5)]


def test_eval_curves_take_only_evaluation_records():
    evals = [{"step": 2, "fid": 40.0, "class_acc": 0.5}, {"step": 4, "fid": 30.0, "class_acc": 0.75}]
    curves = eval_curves(TRAIN + evals + [{"step": 4, "once": 1.0}])
    assert curves == {"fid": [(2, 40.0), (4, 30.0)], "class_acc": [(2, 0.5), (4, 0.75)]}


def test_report_embeds_the_metric_plot_only_for_periodic_evaluation(tmp_path):
    write_report(tmp_path, "t", {}, TRAIN + [{"step": 4, "fid": 30.0}], {}, [{"metric": "fid", "value": 30.0}])
    assert not (tmp_path / "metrics.png").exists() and "metrics.png" not in (tmp_path / "report.md").read_text()
    write_report(tmp_path, "t", {}, TRAIN + [{"step": 2, "fid": 40.0}, {"step": 4, "fid": 30.0}], {},
                 [{"metric": "fid", "value": 30.0}])
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    assert "![metrics against the training step](metrics.png)" in (tmp_path / "report.md").read_text()


def test_report_shows_the_real_datas_score_beside_a_metric(tmp_path):
    write_report(tmp_path, "t", {}, TRAIN, {}, [{"metric": "class_acc_shapesnet", "value": 0.93, "real_value": 0.99},
                                                {"metric": "fid", "value": 12.5}])
    text = (tmp_path / "report.md").read_text()
    assert "**class_acc_shapesnet** = 0.93 (real data: 0.99)" in text and "**fid** = 12.5  " in text
