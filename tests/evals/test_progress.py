"""Progress bars: tqdm on stderr when enabled, on rank 0 only."""

import torch

from evals.fid import image_set


def _tiny_model(x):  # uint8 NCHW -> a 4-d "feature"
    return {"pool3": x.float().mean((2, 3)).repeat(1, 2)[:, :4] + torch.arange(4.0)}


def _images():
    return torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_feature_extraction_draws_a_bar_on_stderr(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    s = image_set(_images(), _tiny_model, batch_size=4, progress=True, desc="sample features")
    err = capsys.readouterr().err
    assert s.n == 12 and "sample features" in err and "img" in err


def test_no_bar_when_disabled_or_not_rank_zero(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    image_set(_images(), _tiny_model, batch_size=4, progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "1")
    image_set(_images(), _tiny_model, batch_size=4, progress=True)
    assert capsys.readouterr().err == ""
