"""Fashion-MNIST: official splits kept apart, grey images end to end, its classifier, a short run."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from modalities.data import MissingDataError, require

try:
    require("fashion_mnist")
except MissingDataError as e:  # CI fetches it (.ci/run); a developer without it sees why
    pytest.skip(str(e), allow_module_level=True)

from modalities import fashion_mnist as F  # noqa: E402
from modalities.image import ImageGridWriter, PixelPatchTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    train = F.FashionMNISTDataset(root, image_size=16, per_class=20, heldout_per_class=10)
    return train, train.reference_dataset(), train.split("classifier", 30)


def test_splits_are_disjoint_by_source_item_and_by_content(splits):
    train, held, clf = splits
    items = {name: ds.items() for name, ds in zip(("training", "heldout", "classifier"), splits)}
    assert [len(v) for v in items.values()] == [200, 100, 300]
    assert {i["source"] for i in items["heldout"]} == {"t10k-images-idx3-ubyte.gz"}  # the official test file
    assert {i["source"] for i in items["training"] + items["classifier"]} == {"train-images-idx3-ubyte.gz"}
    ids = {k: {(i["source"], i["index"]) for i in v} for k, v in items.items()}
    hashes = {k: {i["pixels_sha256"] for i in v} for k, v in items.items()}
    for a, b in (("training", "heldout"), ("training", "classifier"), ("heldout", "classifier")):
        assert not ids[a] & ids[b] and not hashes[a] & hashes[b], (a, b)
    for v in items.values():  # balanced, and every PNG's folder is its label
        assert np.bincount([i["label"] for i in v]).tolist() == [len(v) // 10] * 10
        assert all(i["file"].startswith(F.FOLDERS[i["label"]] + "/") for i in v)
    for ds in splits:  # the file bytes too: no PNG in two splits
        assert len(ds) == len({hash(p.read_bytes()) for p, _ in ds.samples})


def test_the_data_seed_draws_other_training_items_but_never_classifier_items(splits, tmp_path):
    train, _, clf = splits
    other = F.FashionMNISTDataset(tmp_path, image_size=16, per_class=20, seed=1, heldout_per_class=0)
    a, b = ({i["index"] for i in ds.items()} for ds in (train, other))
    assert a != b and not b & {i["index"] for i in clf.items()}
    # the largest training and classifier splits still do not meet
    lab = F.load_split("train")[1]
    big = set(F.split_indices(lab, "training", 4000, 0, 6000))
    assert not big & set(F.split_indices(lab, "classifier", 2000, 0, 6000)) and len(big) == 40000


def test_items_match_the_official_pixels_and_labels(splits):
    train, held, _ = splits
    images, labels = F.load_split("test")
    item = held.items()[37]
    assert int(labels[item["index"]]) == item["label"] == held[37][1]
    native = F.FashionMNISTDataset(held.data_root, image_size=28, per_class=10, part="heldout", heldout_per_class=0)
    x, y = native[37]
    assert x.shape == (1, 28, 28) and y == item["label"]
    assert torch.equal(((x[0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(images[item["index"]].copy()))


def test_grey_images_round_trip_through_tokenizer_grid_and_fid_input(splits, tmp_path):
    from evals.images import quantize, read_image

    train, _, _ = splits
    x = torch.stack([train[i][0] for i in range(8)])  # (8, 1, 16, 16)
    tok = PixelPatchTokenizer(image_size=16, channels=1, patch_size=4)
    tokens = tok.encode(x)
    assert tokens.shape == (8, 16, 16) and torch.equal(tok.decode(tokens), x)
    grid = Image.open(ImageGridWriter().write(x, None, tmp_path, "g")["grid"])
    assert grid.mode == "RGB" and grid.size == (3 * 18 + 2, 3 * 18 + 2)
    q = quantize(x)  # what FID's network sees: grey replicated to 3 channels, uint8 NHWC
    assert q.shape == (8, 16, 16, 3) and (q == q[..., :1]).all()
    assert np.array_equal(q[0], read_image(train.samples[0][0]))  # the same bytes as the reference PNG read as RGB
    with pytest.raises(ValueError, match="expected images"):
        tok.encode(x.expand(-1, 3, -1, -1))


def test_bad_settings_and_files_name_the_key_or_file(tmp_path):
    with pytest.raises(ValueError, match="modality.dataset.per_class=5000"):
        F.FashionMNISTDataset(tmp_path, per_class=5000)
    with pytest.raises(ValueError, match="modality.dataset.channels=2"):
        F.FashionMNISTDataset(tmp_path, per_class=2, channels=2)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"x"))
    with pytest.raises(ValueError, match=r"bad.gz: header says \[5, 28, 28\] .* \(truncated file\)"):
        F.read_idx(bad)
    bad.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(ValueError, match="bad.gz: not a uint8 IDX file"):
        F.read_idx(bad)


def test_missing_source_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError, match="python -m modalities.data fetch fashion_mnist"):
        F.FashionMNISTDataset(tmp_path / "data", per_class=2)
    assert not list((tmp_path / "data").glob("fashion*"))  # nothing half-built


@pytest.mark.slow
def test_classifier_reaches_its_accuracy_on_the_official_test_items():
    from app.domain_metrics import domain_metrics
    from modalities.classifier import get_classifier
    from modalities.image_domain import FASHIONNET

    ds = F.FashionMNISTDataset(per_class=50)
    clf, (hx, hy) = get_classifier(FASHIONNET, ds)
    print("fashionnet held-out accuracy", clf.provenance["heldout_accuracy"])
    assert clf.provenance["heldout_accuracy"] >= FASHIONNET.notes["min_heldout_accuracy"]
    recs = {r["metric"]: r for r in domain_metrics(hx, ds, hy, spec=FASHIONNET, max_train=400)}
    assert recs["fd_fashionnet"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert recs["memorisation_fashionnet"]["value"] <= 0.02  # held-out items: the check's ~1% false positives


@pytest.mark.slow
def test_short_run_end_to_end(compose, tmp_path):
    import run

    cfg = compose(["modality=fashion_mnist", "model=micro", "train=smoke", "sample.num_samples=10",
                   "sample.num_steps=4", "modality.dataset.per_class=16", "eval.num_samples=10",
                   "eval.metrics=[]", f"run_dir={tmp_path}"])
    run.main(cfg)
    recs = {r["metric"]: r for r in json.loads((tmp_path / "eval.json").read_text())}
    assert 0 <= recs["class_acc_fashionnet"]["value"] <= 1 and recs["class_acc_fashionnet"]["real_value"] > 0.5
    assert Image.open(tmp_path / "samples" / "final_grid.png").mode == "RGB"
