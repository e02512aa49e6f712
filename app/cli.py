"""What the command line shows when a run cannot start: one message, and no half-made directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from hydra.errors import InstantiationException

# What hydra and ``write_config`` put into a run directory before the run does anything; a
# directory holding nothing else was made by a run that failed to start.
BOOKKEEPING = {".hydra", "config.yaml"}


def config_error_message(exc: BaseException) -> str:
    """``config error: <what> (<key>)`` in one or two lines, without hydra's wrapping or a traceback.

    hydra wraps errors raised by a ``_target_`` in an InstantiationException whose text repeats
    the call; the original error (its ``__cause__``) names the value and the fix, and hydra's
    ``full_key`` names the config node.
    """
    cause = (exc.__cause__ or exc.__context__) if isinstance(exc, InstantiationException) else None
    text = str(cause if cause is not None else exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    message = lines[0] if lines else type(exc).__name__
    key = getattr(exc, "full_key", None)
    if key and key not in message:
        message += f"\n  in config node `{key}`"
    return f"config error: {message}"


def remove_unused_run_dir(run_dir) -> bool:
    """Delete ``run_dir`` when it holds only start-up bookkeeping (hydra's files, the resolved
    config, hydra's job log); a directory with anything else (checkpoints, metrics) is kept."""
    path = Path(run_dir)
    if not path.is_dir():
        return False
    entries = {p.name for p in path.iterdir()}
    if any(name not in BOOKKEEPING and not name.endswith(".log") for name in entries):
        return False
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent  # runs/<modality>-<method>/ when this was its only run
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return True
