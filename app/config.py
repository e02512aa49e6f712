"""Config checks and the small typed views of a composed config that several tasks need."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from core.path import TimeDistribution
from core.samplers import SamplerConfig

TASKS = ("train", "train_tokenizer", "sample")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail deep inside a run, with the key to fix.

    Every problem becomes a :class:`ConfigError` (one message, no traceback at the CLI), raised
    before anything is written.
    """
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # every ??? and ${...} resolves
        _validate(cfg)
        if cfg.task == "train":
            from core.trainer import TrainConfig  # noqa: PLC0415

            TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
        time_distribution(cfg)
        sampler_config(cfg)
    except ConfigError:
        raise
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "a value"
        raise ConfigError(f"{key} is required (it is ??? in the config); give it on the command line, e.g. "
                          f"{key}=/path/to/data") from None
    except (ValueError, TypeError, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None


def _validate(cfg: DictConfig) -> None:
    require(cfg.task in TASKS, f"task={cfg.task!r}: must be one of {TASKS}")
    m = cfg.model
    require(m.hidden_size > 0 and m.depth > 0 and m.num_heads > 0, "model.hidden_size/depth/num_heads must be > 0")
    require(m.hidden_size % m.num_heads == 0,
            f"model.hidden_size={m.hidden_size} must be divisible by model.num_heads={m.num_heads}")
    require(0.0 <= cfg.modality.mask_ratio <= 0.5,
            f"modality.mask_ratio={cfg.modality.mask_ratio}: must be in [0, 0.5] (paper Eq. 4)")
    ratio = OmegaConf.select(cfg, "method.objective.mask_ratio")
    require(ratio is None or 0.0 <= ratio <= 0.5,
            f"method.objective.mask_ratio={ratio}: must be in [0, 0.5] (paper Eq. 4)")
    require(cfg.sample.num_samples >= 1, f"sample.num_samples={cfg.sample.num_samples}: must be >= 1")
    require("objective" in cfg.method and "_target_" in cfg.method.objective,
            "method.objective._target_ is missing; pick method=fm|selfflow|repa or give a target class")
    families = eval_families()
    require(cfg.modality.get("eval_family") in families,
            f"modality.eval_family={cfg.modality.get('eval_family')!r}: must be one of {families}; declare the "
            f"metric family in configs/modality/<name>.yaml (none = only the modality's own network-free metrics)")
    metrics = OmegaConf.select(cfg, "eval.metrics")
    text = (cfg.get("conditioning") or {}).get("kind", "label") == "text"
    require(text or isinstance(metrics, str) or metrics is None or "clip_score" not in metrics,
            "eval.metrics lists clip_score, which scores samples against their prompts: it needs conditioning=text")
    from core.sample_job import SAMPLE_KINDS  # noqa: PLC0415

    require(cfg.modality.get("quantize") in SAMPLE_KINDS,
            f"modality.quantize={cfg.modality.get('quantize')!r}: must be one of {sorted(SAMPLE_KINDS)}; declare how "
            "samples are stored in configs/modality/<name>.yaml (image/video: uint8 channels-last, none: float)")


def eval_families() -> list[str]:
    """The metric families ``evals`` scores, plus ``none`` (no evaluator network)."""
    try:
        from evals.api import METRICS  # noqa: PLC0415 -- optional package
    except ImportError:
        return ["none"]
    return [*METRICS, "none"]


def time_distribution(cfg: DictConfig) -> TimeDistribution:
    t = cfg.modality.time
    return TimeDistribution(dist=t.dist, mu=float(t.mu), sigma=float(t.sigma), shift=float(t.shift))


def sampler_config(cfg: DictConfig) -> SamplerConfig:
    s = cfg.sample
    return SamplerConfig(method=s.method, num_steps=int(s.num_steps), shift=float(s.shift),
                         cfg_scale=float(s.cfg_scale), guidance_low=float(s.guidance_low),
                         guidance_high=float(s.guidance_high), last_step=float(s.last_step),
                         diffusion_norm=float(s.diffusion_norm))


def resume_run_dir(resume) -> Path | None:
    """The run directory a ``train.resume`` value belongs to, or None (a loose checkpoint file).

    Accepts the run directory itself, its ``checkpoints/`` folder or a checkpoint file inside it:
    a resumed run continues in that directory (metrics.jsonl, samples, report), not a new one.
    """
    if not resume:
        return None
    path = Path(str(resume)).expanduser()
    if path.is_file():
        path = path.parent
    if path.name == "checkpoints":
        path = path.parent
    return path if (path / "checkpoints").is_dir() else None


def _hydra_run_dir(resume, fresh: str) -> str:
    """``hydra.run.dir`` resolver: the resumed run's directory, else the fresh dated one."""
    found = resume_run_dir(resume) if resume not in (None, "None", "null") else None
    return str(found) if found is not None else fresh


if not OmegaConf.has_resolver("run_dir_or_resume"):
    OmegaConf.register_new_resolver("run_dir_or_resume", _hydra_run_dir)


def requested_run_dir(cfg: DictConfig) -> Path:
    """``run_dir`` if set, else the resumed run's directory, else hydra's output directory (the one
    place this is derived)."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    resumed = resume_run_dir(cfg.train.get("resume"))
    if resumed is not None:
        return resumed
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415 -- only set inside @hydra.main

    return Path(HydraConfig.get().runtime.output_dir)


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_with_objects(node: DictConfig, **objects):
    """Like ``hydra.utils.instantiate`` but passes Python objects (modules, dataclasses) untouched.

    hydra would merge keyword arguments into the config and turn them into config nodes.
    """
    params = OmegaConf.to_container(node, resolve=True)
    target = get_object(params.pop("_target_"))
    return target(**params, **objects)


def fingerprint(cfg: DictConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed."""
    keys = ["model", "method.objective", "modality.name", "modality.tokenizer", "modality.pos_axes"]
    if OmegaConf.select(cfg, "conditioning.kind") == "text":  # label runs keep their old fingerprint
        keys.append("conditioning")
    out = {}
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        out[key] = json.dumps(value, sort_keys=True)  # plain strings: safe for weights_only loading
    return out
