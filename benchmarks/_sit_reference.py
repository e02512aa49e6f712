"""Load the reference SiT implementation (willisma/SiT) from a local checkout, for side-by-side timing.

No code of that repository is part of this project: the checkout is imported at run time from a
path the user gives (``--sit-repo PATH`` or ``$SIT_REPO``), for example::

    git clone https://github.com/willisma/SiT /tmp/sit        # tested at commit 947f95b
    pip install timm torchdiffeq                              # its import-time dependencies

SiT's modules are flat files at the checkout root (``models.py``, ``transport/``, ``train.py``).
``train.py`` holds the EMA helper used by its training loop, but imports ``diffusers`` (for the
SD-VAE) and ``wandb`` (via ``wandb_utils``) at module level. Neither is called by the training
step we time, so they are replaced by empty stand-in modules for the duration of the import and
removed again afterwards. ``train.py`` also switches TF32 on at import; the flags are restored.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

SIT_URL = "https://github.com/willisma/SiT"


@dataclass
class SiTReference:
    """The pieces of the reference implementation the benchmark uses."""

    path: Path
    commit: str | None
    SiT: type  # models.SiT (the class, for custom sizes)
    SiT_models: dict  # models.SiT_models registry ("SiT-S/2", ...)
    create_transport: object  # transport.create_transport
    update_ema: object  # train.update_ema(ema_model, model, decay=0.9999)


class SiTReferenceUnavailable(RuntimeError):
    """Raised with a one-line reason when the reference cannot be imported."""


def resolve_path(path: str | None) -> Path | None:
    """``--sit-repo`` if given, else ``$SIT_REPO``, else None."""
    value = path or os.environ.get("SIT_REPO")
    return Path(value).expanduser().resolve() if value else None


def _git_commit(path: Path) -> str | None:
    from core.io_utils import git_commit

    commit = git_commit(short=12, cwd=path)
    return None if commit == "unknown" else commit


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__sit_benchmark_stub__ = True
    return module


def load(path: str | os.PathLike | None) -> SiTReference:
    """Import SiT's ``models``, ``transport`` and ``train`` from the checkout at ``path``."""
    if path is None:
        raise SiTReferenceUnavailable(
            f"no SiT checkout given (pass --sit-repo PATH or set SIT_REPO; get it with `git clone {SIT_URL}`)"
        )
    root = Path(path)
    missing = [f for f in ("models.py", "train.py", "transport/__init__.py") if not (root / f).is_file()]
    if missing:
        raise SiTReferenceUnavailable(f"{root} is not a SiT checkout (missing {', '.join(missing)}; see {SIT_URL})")
    for dep in ("timm", "torchdiffeq"):
        if importlib.util.find_spec(dep) is None:
            raise SiTReferenceUnavailable(f"SiT needs `{dep}` at import time: pip install timm torchdiffeq")
    clashing = [m for m in ("models", "transport", "train") if m in sys.modules
                and not str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(root))]
    if clashing:
        raise SiTReferenceUnavailable(f"module name(s) {clashing} already imported from elsewhere; cannot load SiT")

    stubs = {
        "diffusers": _stub("diffusers"),
        "diffusers.models": _stub("diffusers.models", AutoencoderKL=type("AutoencoderKL", (), {})),
        "wandb": _stub("wandb"),
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    sys.path.insert(0, str(root))
    try:
        sys.modules.update(stubs)
        models = importlib.import_module("models")
        transport = importlib.import_module("transport")
        train = importlib.import_module("train")
    except Exception as exc:  # noqa: BLE001 - report any import failure as a skip reason
        raise SiTReferenceUnavailable(f"importing SiT from {root} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(root))
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return SiTReference(
        path=root, commit=_git_commit(root), SiT=models.SiT, SiT_models=models.SiT_models,
        create_transport=transport.create_transport, update_ema=train.update_ema,
    )
