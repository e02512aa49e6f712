"""Run a benchmark budget's grid (modality x variant x seed) through ``app.tasks.main``, resumably.

A budget is ``configs/benchmark/<name>.yaml`` (see quick.yaml for the keys). Every cell is one
ordinary run composed with hydra from the real config tree, so a cell is exactly what
``python run.py <the same overrides>`` does; ``commands()`` prints those command lines, which is
how a cluster (torchrun / Slurm) or a plain hydra multirun reproduces the suite.

Layout: ``<suite_dir>/suite.json`` (budget, cells, one entry per invocation: see manifest.py) and
one run directory per cell, ``<suite_dir>/<modality>/<variant>/seed<k>/``, holding the run's own files plus
``suite_cell.json`` (overrides, commits, wall time, peak memory, status). A cell whose ``eval.json``
exists is skipped; an interrupted cell resumes from its last checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.io_utils import git_commit

from .manifest import cell_commits, new_invocation, update_manifest

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
BUDGET_DIR = CONFIG_DIR / "benchmark"
REQUIRED = ("name", "modalities", "seeds", "variants", "common")
log = logging.getLogger("experiments")


@dataclass
class Cell:
    modality: str
    variant: str
    seed: int
    overrides: list[str]

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.variant}/seed{self.seed}"


def load_budget(name_or_path: str) -> DictConfig:
    """``quick`` / ``standard`` / ``paper`` / ``ablation`` or a path to a budget YAML."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BUDGET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in BUDGET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"benchmark budget {name_or_path!r} not found ({path}); use one of {known} "
                                "or a path to a YAML file with the keys of configs/benchmark/quick.yaml")
    budget = OmegaConf.load(path)
    missing = [k for k in REQUIRED if k not in budget]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; see configs/benchmark/quick.yaml for the format")
    return budget


def _key(override: str) -> str:
    """The config key an override sets (``+a.b=1`` and ``a.b=2`` set the same key)."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*lists) -> list[str]:
    """Concatenate override lists; a later override of the same key replaces the earlier one.

    hydra refuses two values for one key in one call, and budgets legitimately refine the common
    settings per modality or variant (e.g. ``modality=image_latent`` over ``modality=image``).
    """
    merged: dict[str, str] = {}
    for overrides in lists:
        for o in overrides or []:
            merged.pop(_key(str(o)), None)
            merged[_key(str(o))] = str(o)
    return list(merged.values())


def cells(budget: DictConfig, modalities=None, seeds=None, variants=None, extra=None) -> list[Cell]:
    """The grid, in run order (modality, then seed, then variant: a partial suite is still paired)."""
    mods = list(modalities or budget.modalities)
    names = list(variants or budget.variants.keys())
    unknown = [v for v in names if v not in budget.variants]
    if unknown:
        raise ValueError(f"--variants {unknown}: not in budget {budget.name} (has {list(budget.variants)})")
    per_mod = budget.get("modality_overrides") or {}
    per_cell = budget.get("cell_overrides") or {}
    exclude = set(budget.get("exclude") or [])  # "modality/variant" pairs that are not run (joint.yaml)
    out = []
    for m in mods:
        for s in (seeds if seeds is not None else budget.seeds):
            for v in names:
                if f"{m}/{v}" in exclude:
                    continue
                ov = merge_overrides([f"modality={m}"], budget.common, per_mod.get(m, []), budget.variants[v],
                                     per_cell.get(f"{m}/{v}", []), extra or [], [f"seed={int(s)}"])
                out.append(Cell(m, v, int(s), ov))
    return out


def compose(overrides: list[str]) -> DictConfig:
    """The run config exactly as ``python run.py <overrides>`` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def commands(budget: DictConfig, suite_dir: Path, **kw) -> list[str]:
    """One ``python run.py ...`` line per cell (for torchrun / Slurm / by hand)."""
    return [" ".join(["python run.py", *(f"'{o}'" if any(c in o for c in "[]{} ,") else o for o in c.overrides),
                      f"run_dir={Path(suite_dir) / c.key}"]) for c in cells(budget, **kw)]


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 0.2 s; Linux)."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak_mb, self._stop = every, float("nan"), threading.Event()

    @staticmethod
    def current_mb() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def _loop(self):
        while not self._stop.wait(self.every):
            self.peak_mb = max(self.peak_mb, self.current_mb()) if self.peak_mb == self.peak_mb else self.current_mb()

    def __enter__(self):
        self.peak_mb = self.current_mb()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


def finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "eval.json").exists()


def run_cell(cell: Cell, suite_dir: Path) -> dict:
    """Run (or skip, or resume) one cell; returns its ``suite_cell.json`` record."""
    import torch

    from app.tasks import main as run_main  # imported late so `--print-commands` stays light

    run_dir = Path(suite_dir) / cell.key
    record_path = run_dir / "suite_cell.json"
    if finished(run_dir):
        log.info("skip %s (finished)", cell.key)
        return json.loads(record_path.read_text()) if record_path.exists() else {"status": "finished"}
    overrides = list(cell.overrides) + [f"run_dir={run_dir}"]
    if (run_dir / "checkpoints").exists():  # interrupted earlier: continue instead of starting over
        overrides.append(f"train.resume={run_dir}")
    previous = json.loads(record_path.read_text()) if record_path.exists() else {}  # an interrupted attempt
    commit = git_commit()
    now = _dt.datetime.now().isoformat(timespec="seconds")
    record = {**asdict(cell), "run_dir": str(run_dir), "status": "running", "started": now,
              "first_started": previous.get("first_started") or previous.get("started") or now,
              "commit": commit, "commits": cell_commits(previous, commit)}
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))
    cfg = compose(overrides)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        with PeakRSS() as rss:
            summary = run_main(cfg)
    except Exception as exc:  # one broken cell must not cost the others; the record says why
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
        record_path.write_text(json.dumps(record, indent=1))
        log.error("cell %s failed: %s", cell.key, exc)
        return record
    record.update(status="finished", wall_s=time.perf_counter() - t0, train_wall_s=summary.get("wall_s"),
                  steps=summary.get("steps"), samples_per_s_incl_evals=summary.get("samples_per_s"),
                  peak_rss_mb=rss.peak_mb, finished=_dt.datetime.now().isoformat(timespec="seconds"))
    if cuda:
        record["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    record_path.write_text(json.dumps(record, indent=1, default=str))
    return record


def run_suite(budget: DictConfig, suite_dir: Path, **kw) -> list[dict]:
    """Run every cell of ``budget`` into ``suite_dir``; write ``suite.json``; return the cell records."""
    suite_dir = Path(suite_dir)
    suite_dir.mkdir(parents=True, exist_ok=True)
    grid = cells(budget, **kw)
    keys = [c.key for c in grid]
    spec = OmegaConf.to_container(budget, resolve=True)
    invocation = new_invocation(git_commit(), keys)
    update_manifest(suite_dir, spec, keys, invocation)  # refuses a directory of another budget, before any run
    records = []
    for i, cell in enumerate(grid, 1):
        log.info("[%d/%d] %s", i, len(grid), cell.key)
        records.append(run_cell(cell, suite_dir))
    invocation.update(finished=_dt.datetime.now().isoformat(timespec="seconds"),
                      failed=[r.get("run_dir") for r in records if r.get("status") == "failed"])
    update_manifest(suite_dir, spec, keys, invocation)
    return records
