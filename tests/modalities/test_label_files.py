"""Label files for folder data sets: UCF-101 split lists, ESC-50's csv with folds, CSV with named columns."""

import numpy as np
import pytest
import soundfile as sf

from modalities.audio import AudioFolderDataset
from modalities.label_files import LabelFileError, detect_format
from modalities.media_common import scan_labelled_files


def _touch(root, rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


@pytest.fixture
def ucf(tmp_path):
    """A 3-class UCF-101 lookalike whose classInd order is NOT alphabetical (so order must come from it)."""
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Zebra\n2 Apple\n3 Mango\n")
    _touch(root, ["Zebra/v_Zebra_g01_c01.avi", "Apple/v_Apple_g01_c01.avi", "Mango/v_Mango_g02_c01.avi",
                  "Apple/v_Apple_g08_c02.avi"])
    (lists / "trainlist01.txt").write_text("Zebra/v_Zebra_g01_c01.avi 1\r\nApple/v_Apple_g01_c01.avi 2\r\n"
                                           "Mango/v_Mango_g02_c01.avi 3\r\n")
    (lists / "testlist01.txt").write_text("Apple/v_Apple_g08_c02.avi\nZebra/v_Zebra_g01_c01.avi\n")
    return root, lists


def test_ucf101_trainlist_uses_the_index_and_testlist_the_folder(ucf):
    root, lists = ucf
    train, names = scan_labelled_files(root, ["avi"], lists / "trainlist01.txt")
    assert names == ["Zebra", "Apple", "Mango"]  # classInd order, not sorted
    assert [(p.relative_to(root).as_posix(), y) for p, y in train] == [
        ("Zebra/v_Zebra_g01_c01.avi", 0), ("Apple/v_Apple_g01_c01.avi", 1), ("Mango/v_Mango_g02_c01.avi", 2)]
    test, test_names = scan_labelled_files(root, ["avi"], lists / "testlist01.txt")
    assert test_names == names and [y for _, y in test] == [1, 0]


def test_ucf101_errors_name_file_line_and_fix(ucf):
    root, lists = ucf
    (lists / "testlist02.txt").write_text("Apple/v_Apple_g08_c02.avi\nBogus/v_Bogus_g01_c01.avi\n")
    with pytest.raises(LabelFileError, match=r"testlist02.txt:2: unknown class 'Bogus'.*add it to classInd.txt"):
        scan_labelled_files(root, ["avi"], lists / "testlist02.txt")
    (lists / "trainlist02.txt").write_text("Apple/v_Apple_g01_c01.avi 3\n")  # 3 is Mango
    with pytest.raises(LabelFileError, match=r"trainlist02.txt:1: index 3 means 'Mango'.*folder is 'Apple'"):
        scan_labelled_files(root, ["avi"], lists / "trainlist02.txt")
    (lists / "trainlist03.txt").write_text("Apple/v_Apple_g01_c01.avi 2\nApple/v_missing.avi 2\n")
    with pytest.raises(LabelFileError, match=r"trainlist03.txt:2: lists .*v_missing.avi, which does not exist.*"
                                             r"dataset.root"):
        scan_labelled_files(root, ["avi"], lists / "trainlist03.txt")
    (lists / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classInd.txt: UCF-101 class index does not exist.*class_index"):
        scan_labelled_files(root, ["avi"], lists / "trainlist01.txt")


def _esc50(root, rows):
    (root / "meta").mkdir(parents=True)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for fname, fold, target, cat in rows:
        lines.append(f"{fname},{fold},{target},{cat},False,100,A")
        t = np.arange(1600) / 16000
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / fname, (0.1 * (target + 1) * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


ESC_ROWS = [("1-1-A-0.wav", 1, 0, "dog"), ("1-2-A-2.wav", 1, 2, "pig"), ("2-1-A-1.wav", 2, 1, "rooster"),
            ("4-1-A-0.wav", 4, 0, "dog"), ("5-1-A-1.wav", 5, 1, "rooster"), ("5-2-A-2.wav", 5, 2, "pig")]


def test_esc50_fold_selection_keeps_the_class_numbering(tmp_path):
    root = tmp_path / "ESC-50-master"
    _esc50(root, ESC_ROWS)
    assert detect_format(root / "meta" / "esc50.csv") == "esc50"
    train = AudioFolderDataset(root, 16000, 1600, crop="start", label_file="meta/esc50.csv", folds=[1, 2, 3, 4],
                               progress=False)
    evalset = AudioFolderDataset(root, 16000, 1600, crop="start", label_file="meta/esc50.csv", folds=[5],
                                 progress=False)
    assert train.class_names == evalset.class_names == ["dog", "rooster", "pig"]  # ordered by target
    assert [p.name for p, _ in train.items] == ["1-1-A-0.wav", "1-2-A-2.wav", "2-1-A-1.wav", "4-1-A-0.wav"]
    assert train.labels == [0, 2, 1, 0] and evalset.labels == [1, 2]
    wave, y = evalset[1]  # pig: amplitude 0.3
    assert y == 2 and abs(float(wave.abs().max()) - 0.3) < 1e-3
    with pytest.raises(LabelFileError, match=r"esc50.csv: no rows with fold in \['6'\]; the file has folds "
                                             r"\['1', '2', '4', '5'\]"):
        scan_labelled_files(root, ["wav"], root / "meta" / "esc50.csv", folds=[6])


def test_esc50_missing_column_names_it(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,category\nx.wav,1,dog\n")
    with pytest.raises(LabelFileError, match=r"esc50.csv:1: missing column\(s\) \['target'\]"):
        scan_labelled_files(tmp_path, ["wav"], tmp_path / "meta" / "esc50.csv", label_format="esc50")


def test_generic_csv_with_named_columns_and_folds(tmp_path):
    _touch(tmp_path, ["a/1.wav", "a/2.wav", "b/3.wav", "b/4.wav"])
    lf = tmp_path / "labels.tsv"
    lf.write_text("file\tspecies\tsplit\na/1.wav\t10\ttrain\na/2.wav\t2\ttest\n"
                  "b/3.wav\t2\ttrain\n\nb/4.wav\t9\ttrain\n")
    pairs, names = scan_labelled_files(tmp_path, ["wav"], lf, path_column="file", label_column="species",
                                       fold_column="split", folds=["train"])
    assert names == ["2", "9", "10"]  # integer labels sort numerically, and every row counts (also 'test')
    assert [(p.name, y) for p, y in pairs] == [("1.wav", 2), ("3.wav", 0), ("4.wav", 1)]
    with pytest.raises(LabelFileError, match=r"labels.tsv:1: missing column\(s\) \['label'\]; the header has "
                                             r"\['file', 'species', 'split'\].*label_column"):
        scan_labelled_files(tmp_path, ["wav"], lf, path_column="file")
    lf.write_text("file,species\na/1.wav,x\n\nb/3.wav,\n")
    with pytest.raises(LabelFileError, match=r"labels.tsv:4: empty 'species'"):
        scan_labelled_files(tmp_path, ["wav"], lf, path_column="file", label_column="species")


def test_pairs_format_rejects_folds_and_label_options_need_a_file(tmp_path):
    _touch(tmp_path, ["c/x.wav"])
    (tmp_path / "l.csv").write_text("c/x.wav,cat\n")
    with pytest.raises(LabelFileError, match="dataset.folds needs a label file with a fold column"):
        scan_labelled_files(tmp_path, ["wav"], tmp_path / "l.csv", folds=[1])
    with pytest.raises(ValueError, match="need a dataset.label_file"):
        scan_labelled_files(tmp_path, ["wav"], None, folds=[1])
    assert scan_labelled_files(tmp_path, ["wav"], tmp_path / "l.csv")[1] == ["cat"]


def test_audio_folder_config_takes_esc50_folds_from_the_command_line(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    root = tmp_path / "ESC-50-master"
    _esc50(root, ESC_ROWS)
    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "modality=audio_folder", f"modality.dataset.root={root}", "modality.num_classes=3",
            "modality.dataset.label_file=meta/esc50.csv", "modality.dataset.folds=[5]"])
    ds = instantiate(cfg.modality.dataset)
    assert ds.num_classes == 3 and ds.labels == [1, 2]


def test_esc50_eval_folds_become_the_heldout_reference(tmp_path, monkeypatch):
    """``eval_folds=[5]``: fold 5 leaves training (even with folds=null) and is what every metric scores against."""
    from modalities.splits import reference_for

    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ESC-50-master"
    _esc50(root, ESC_ROWS)
    ds = AudioFolderDataset(root, 16000, 1600, crop="start", label_file="meta/esc50.csv", eval_folds=[5],
                            progress=False)
    assert [p.name for p, _ in ds.items] == ["1-1-A-0.wav", "1-2-A-2.wav", "2-1-A-1.wav", "4-1-A-0.wav"]
    ref_root, description = reference_for(ds)
    assert description.startswith("held-out split") and ref_root == ds.eval_root
    ref = ds.reference_dataset()
    # fold 5 has no dog; the reference still numbers its classes as training does (ESC-50: by target)
    assert ref.class_names == ds.class_names == ["dog", "rooster", "pig"]
    # the reference holds exactly fold 5, each file under its own class, read back with the right label
    got = sorted((p.name.split("__")[-1], ref.class_names[y]) for p, y in ref.items)
    assert got == [("5-1-A-1.wav", "rooster"), ("5-2-A-2.wav", "pig")]
    pig = next(i for i, (p, _) in enumerate(ref.items) if p.name.endswith("5-2-A-2.wav"))
    assert abs(float(ref[pig][0].abs().max()) - 0.3) < 1e-3  # the linked file is the pig clip (amplitude 0.3)
    # folds given explicitly and overlapping: the evaluation folds still leave training
    both = AudioFolderDataset(root, 16000, 1600, crop="start", label_file="meta/esc50.csv", folds=[1, 2, 4, 5],
                              eval_folds=[5], progress=False)
    assert [p.name for p, _ in both.items] == [p.name for p, _ in ds.items] and both.eval_root == ds.eval_root


def test_eval_folds_errors_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ESC-50-master"
    _esc50(root, ESC_ROWS)
    kw = dict(sample_rate=16000, num_samples=1600, crop="start", progress=False)
    with pytest.raises(ValueError, match="eval_folds needs a dataset.label_file"):
        AudioFolderDataset(root / "audio", eval_folds=[5], **kw)
    with pytest.raises(ValueError, match="eval_folds=.*leaves 0 training"):
        AudioFolderDataset(root, label_file="meta/esc50.csv", folds=[5], eval_folds=[5], **kw)
    with pytest.raises(ValueError, match="eval_root, eval_fraction or eval_folds, not several"):
        AudioFolderDataset(root, label_file="meta/esc50.csv", eval_folds=[5], eval_fraction=0.5, **kw)
    with pytest.raises(LabelFileError, match=r"no rows with fold in \['7'\]"):
        AudioFolderDataset(root, label_file="meta/esc50.csv", eval_folds=[7], **kw)
