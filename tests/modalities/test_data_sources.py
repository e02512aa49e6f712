"""Offline sources of the real data sets: pinned archives, verified trees, nothing half-written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from modalities.data import sources as S
from modalities.data.__main__ import main


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFLOW_DATA_DIR", str(tmp_path / "sources"))
    return tmp_path / "sources"


@pytest.fixture
def toy_source(monkeypatch, tmp_path):
    """A one-wheel source whose archive we build here, with its real digests pinned."""
    archives = tmp_path / "archives"
    archives.mkdir()
    whl = archives / "toypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("toypkg/data/a.txt", "alpha")
        z.writestr("toypkg/data/sub/b.txt", "beta")
        z.writestr("toypkg/other.txt", "not extracted")
    staged = tmp_path / "expected"
    (staged / "sub").mkdir(parents=True)
    (staged / "a.txt").write_text("alpha")
    (staged / "sub" / "b.txt").write_text("beta")
    src = S.Source("toy", "a toy source", "MIT", (S.Package("wheel", "toypkg", "1.0", S.sha256_file(whl)),),
                   ((0, "toypkg/data", "."),), S.tree_digest(staged))
    monkeypatch.setitem(S.SOURCES, "toy", src)
    return src, archives


def test_fetch_extracts_only_the_pinned_files_and_require_verifies(data_dir, toy_source):
    _, archives = toy_source
    with pytest.raises(S.MissingDataError, match=r"not found .*python -m modalities.data fetch toy"):
        S.require("toy")
    folder = S.fetch("toy", archives=archives, quiet=True)
    assert folder == data_dir / "toy" and S.require("toy") == folder
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["a.txt", "sub/b.txt"]
    (folder / "a.txt").write_text("tampered")
    with pytest.raises(S.MissingDataError, match="does not match its pinned digest"):
        S.require("toy")
    assert S.fetch("toy", archives=archives, quiet=True) == folder  # a damaged copy is replaced whole
    assert (folder / "a.txt").read_text() == "alpha"
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_archive_checksum_mismatch_writes_nothing(data_dir, toy_source, monkeypatch, capsys):
    src, archives = toy_source
    monkeypatch.setitem(S.SOURCES, "toy", S.Source(src.name, src.description, src.licence,
                                                   (S.Package("wheel", "toypkg", "1.0", "0" * 64),), src.extract,
                                                   src.tree_sha256))
    assert main(["fetch", "toy", "--archives", str(archives)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match the pinned" in err[0] and "nothing was written" in err[0]
    assert not (data_dir / "toy").exists() and not list(data_dir.iterdir())


def test_extracted_tree_mismatch_writes_nothing(data_dir, toy_source, monkeypatch):
    src, archives = toy_source
    monkeypatch.setitem(S.SOURCES, "toy", S.Source(src.name, src.description, src.licence, src.packages,
                                                   src.extract, "f" * 64))
    with pytest.raises(RuntimeError, match="extracted files' digest .* nothing was written"):
        S.fetch("toy", archives=archives, quiet=True)
    assert not list(data_dir.iterdir())


def test_unknown_source_is_named(data_dir, capsys):
    with pytest.raises(KeyError, match="unknown data source 'nope'"):
        S.require("nope")
    with pytest.raises(SystemExit):
        main(["fetch", "nope"])
    assert "unknown source(s) ['nope']" in capsys.readouterr().err


def test_tree_digest_depends_on_content_and_names_not_listing_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x", "y"]), (b, ["y", "x"])):
        root.mkdir()
        for name in order:
            (root / name).write_text(name)
    assert S.tree_digest(a) == S.tree_digest(b)
    (b / "x").write_text("changed")
    assert S.tree_digest(a) != S.tree_digest(b)
    (b / "x").write_text("x")
    (b / "x").rename(b / "z")
    assert S.tree_digest(a) != S.tree_digest(b)


@pytest.mark.parametrize("name", sorted(S.SOURCES))
def test_real_sources_verify_when_fetched(name):
    """The pinned digests match what `python -m modalities.data fetch` builds (CI fetches them)."""
    try:
        folder = S.require(name)
    except S.MissingDataError as e:
        pytest.skip(str(e))
    assert S.tree_digest(Path(folder)) == S.SOURCES[name].tree_sha256
