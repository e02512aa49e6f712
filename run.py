"""Hydra entry point: ``python run.py modality=image method=selfflow model=tiny train=cpu``.

Wires the pieces named in the config together (core/ never imports modalities/ or evals/):
dataset + tokenizer + writer from ``modality``, the SiT backbone from ``model``, the objective
(fm / selfflow / repa) from ``method``, the loop from ``train``, the sampler from ``sample``, and
the evaluators from ``eval``. Every run writes its resolved config, ``metrics.jsonl``,
checkpoints, samples, ``eval.json`` and ``report.md`` into one run directory.
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from core import distributed as dist_utils
from core.path import TimeDistribution
from core.report import write_report
from core.samplers import SamplerConfig
from core.trainer import Trainer, TrainConfig, read_metrics
from core.transformer import SiT
from modalities.splits import reference_for

log = logging.getLogger("run")

TASKS = ("train", "train_tokenizer", "sample")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail deep inside a run, with the key to fix."""
    _require(cfg.task in TASKS, f"task={cfg.task!r}: must be one of {TASKS}")
    m = cfg.model
    _require(m.hidden_size > 0 and m.depth > 0 and m.num_heads > 0, "model.hidden_size/depth/num_heads must be > 0")
    _require(m.hidden_size % m.num_heads == 0,
             f"model.hidden_size={m.hidden_size} must be divisible by model.num_heads={m.num_heads}")
    _require(0.0 <= cfg.modality.mask_ratio <= 0.5,
             f"modality.mask_ratio={cfg.modality.mask_ratio}: must be in [0, 0.5] (paper Eq. 4)")
    _require(cfg.sample.num_samples >= 1, f"sample.num_samples={cfg.sample.num_samples}: must be >= 1")
    _require("objective" in cfg.method and "_target_" in cfg.method.objective,
             "method.objective._target_ is missing; pick method=fm|selfflow|repa or give a target class")


def time_distribution(cfg: DictConfig) -> TimeDistribution:
    t = cfg.modality.time
    return TimeDistribution(dist=t.dist, mu=float(t.mu), sigma=float(t.sigma), shift=float(t.shift))


def sampler_config(cfg: DictConfig) -> SamplerConfig:
    s = cfg.sample
    return SamplerConfig(method=s.method, num_steps=int(s.num_steps), shift=float(s.shift),
                         cfg_scale=float(s.cfg_scale), guidance_low=float(s.guidance_low),
                         guidance_high=float(s.guidance_high), last_step=float(s.last_step),
                         diffusion_norm=float(s.diffusion_norm))


def instantiate_with_objects(node: DictConfig, **objects):
    """Like ``hydra.utils.instantiate`` but passes Python objects (modules, dataclasses) untouched.

    hydra would merge keyword arguments into the config and turn them into config nodes.
    """
    params = OmegaConf.to_container(node, resolve=True)
    target = get_object(params.pop("_target_"))
    return target(**params, **objects)


def build(cfg: DictConfig) -> dict:
    """Instantiate dataset, tokenizer, writer, model and objective from a composed config."""
    validate(cfg)
    dataset = instantiate(cfg.modality.dataset)
    tokenizer = instantiate(cfg.modality.tokenizer)
    writer = instantiate(cfg.modality.writer)
    m = cfg.model
    model = SiT(in_channels=tokenizer.token_dim, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                mlp_ratio=m.mlp_ratio, num_classes=dataset.num_classes, learn_sigma=m.learn_sigma,
                pos_axes=list(cfg.modality.pos_axes), grad_checkpointing=m.grad_checkpointing,
                prediction=m.get("prediction", "v"))
    if model.prediction == "v" and model.in_channels > model.hidden_size:
        log.warning("model.prediction=v with %d-value tokens and hidden_size=%d: the patch embedding cannot carry "
                    "the noise, so the velocity loss plateaus and samples stay noisy; use model.prediction=x "
                    "(or auto), a smaller modality.tokenizer.patch or a wider model", model.in_channels,
                    model.hidden_size)
    extra = {}
    if "encoder" in cfg.method:
        extra["encoder"] = instantiate(cfg.method.encoder, in_dim=tokenizer.token_dim)
    objective_kwargs = dict(time_dist=time_distribution(cfg), **extra)
    target = cfg.method.objective._target_
    if not target.endswith("FlowMatchingObjective"):
        objective_kwargs.update(hidden_size=m.hidden_size, depth=m.depth)
    objective = instantiate_with_objects(cfg.method.objective, **objective_kwargs)
    return dict(dataset=dataset, tokenizer=tokenizer, writer=writer, model=model, objective=objective)


def fingerprint(cfg: DictConfig) -> dict:
    """The settings a checkpoint must agree on to be resumed."""
    keys = ["model", "method.objective", "modality.name", "modality.tokenizer", "modality.pos_axes"]
    out = {}
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        out[key] = json.dumps(value, sort_keys=True)  # plain strings: safe for weights_only loading
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def make_eval_hook(cfg: DictConfig, sampler_cfg: SamplerConfig, dataset):
    """A trainer hook scoring EMA samples with the modality's metrics through ``evals`` (lazy import)."""

    def hook(trainer: Trainer, step: int) -> dict:
        if not cfg.eval.enabled or cfg.eval.num_samples <= 0:
            return {}
        protocol = {"step": step, "sampler": sampler_cfg.method, "num_steps": sampler_cfg.num_steps,
                    "cfg_scale": sampler_cfg.cfg_scale, "sample_shift": sampler_cfg.shift}
        try:
            from evals.api import evaluate  # noqa: PLC0415 -- optional, heavy
        except ImportError as exc:
            results = [{"metric": "eval", "value": None, "reason": f"evals package unavailable: {exc}"}]
        else:
            fake, labels, nfe = trainer.generate(int(cfg.eval.num_samples), seed=int(cfg.sample.seed) + 1)  # all ranks
            if not trainer.dist.is_main:
                return {}
            real, protocol["reference"] = reference_for(dataset)  # held-out split, not the training items
            protocol["nfe"] = nfe
            metrics = None if cfg.eval.metrics == "auto" else list(cfg.eval.metrics)
            results = evaluate(modality=cfg.modality.name, fake=fake, real=real,
                               metrics=metrics, protocol=protocol, cache_dir=Path(cfg.cache_dir).expanduser(),
                               sample_rate=OmegaConf.select(cfg, "modality.dataset.sample_rate"),
                               device=str(trainer.device), limit_real=cfg.eval.get("limit_real"),
                               batch_size=int(cfg.eval.get("batch_size", 50)))
            results += modality_metrics(cfg, fake, dataset, protocol, labels)
        trainer.eval_results = results
        return {r["metric"]: r["value"] for r in results if isinstance(r.get("value"), (int, float))}

    return hook


def modality_metrics(cfg: DictConfig, fake, dataset, protocol: dict, labels=None) -> list[dict]:
    """Metrics a modality names under ``modality.metrics`` (video motion, domain classifiers).

    Each is ``callable(fake, dataset[, labels=...])``; it gets the samples' conditioning labels
    when it has a ``labels`` parameter. It returns a dict (first value the headline, the rest
    kept as details) or a list of finished records (``{"metric", "value", ...}``).
    """
    results = []
    for name, node in (cfg.modality.get("metrics") or {}).items():
        fn = instantiate(node)
        takes_labels = "labels" in inspect.signature(fn).parameters
        values = fn(fake, dataset, labels=labels) if takes_labels else fn(fake, dataset)
        if isinstance(values, list):
            results += [{**record, **{k: v for k, v in protocol.items() if k not in record}} for record in values]
            continue
        headline = next(iter(values))
        record = {"metric": f"{name}_{headline}", "value": values[headline], "details": values,
                  "extractor": "none (network-free)", **protocol}
        if values[headline] is None:
            record.update(available=False, reason=values.get("reason", "no value"))
        results.append(record)
    return results


def train_tokenizer(cfg: DictConfig) -> dict:
    """``task=train_tokenizer``: train the modality's learned tokenizer (e.g. the mel autoencoder)."""
    node = cfg.modality.get("tokenizer_training")
    if node is None:
        raise ConfigError(f"task=train_tokenizer: modality={cfg.modality.name} has no learned tokenizer "
                          "(no modality.tokenizer_training section); try modality=audio")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return get_object(node._target_)(cfg, run_dir)


def sample_task(cfg: DictConfig) -> dict:
    """``task=sample``: N samples from a checkpoint (ours or a published layout) into an ADM npz, resumably.

    Every rank runs this under torchrun; batches are sharded round-robin and rank 0 merges them.
    """
    from core.convert import load_pretrained  # noqa: PLC0415
    from core.sample_job import run_sampling  # noqa: PLC0415

    ck, s = cfg.get("checkpoint"), cfg.sample
    _require(ck is not None and bool(ck.get("path")),
             "checkpoint.path is missing: task=sample needs checkpoint.path=<.pt file or run dir> and "
             "checkpoint.layout=selfflow|repa|sit|ours (or +experiment=selfflow_imagenet256|repa_sit_xl2|sit_xl2)")
    _require(s.get("autocast") in (None, "bf16", "fp16"), f"sample.autocast={s.get('autocast')!r}: must be null, bf16 or fp16")
    info = dist_utils.init_distributed(cfg.train.get("dist_backend", "auto"))
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(HydraConfig.get().runtime.output_dir)
    out_dir = Path(dist_utils.broadcast_object(str(s.get("out_dir") or run_dir)))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    use_cuda = torch.cuda.is_available() and cfg.train.get("device", "auto") in ("auto", "cuda")
    device = torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")
    model, conv = load_pretrained(ck.path, ck.get("layout", "ours"), prefer=ck.get("prefer", "ema"),
                                  strict=bool(ck.get("strict", True)), patch_size=int(cfg.model.patch_size),
                                  pos_axes=list(cfg.modality.pos_axes), num_heads=int(cfg.model.num_heads))
    tokenizer = instantiate(cfg.modality.tokenizer)
    if conv.tokenizer_state is not None:  # our checkpoints carry fitted tokenizer buffers
        tokenizer.load_state_dict(conv.tokenizer_state)
    model, tokenizer = model.to(device), tokenizer.to(device).eval()
    autocast = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[s.get("autocast")]
    summary = run_sampling(
        model, tokenizer.decode, tokenizer.coords(), sampler_config(cfg), int(s.num_samples),
        int(s.get("batch_size", 64)), int(s.seed), out_dir, class_mode=s.get("class_mode", "random"),
        quantize_mode=s.get("quantize", "round"), save_png=bool(s.get("save_png", False)), autocast_dtype=autocast,
        protocol={"checkpoint": conv.summary(), "model": cfg.model.name, "modality": cfg.modality.name,
                  "commit": git_commit()})
    if info.is_main:
        log.info("samples: %s (%d batches generated, %d reused)", summary["npz"], summary["generated_batches"],
                 summary["skipped_batches"])
    return {**summary, "run_dir": str(out_dir)}


def main(cfg: DictConfig) -> dict:
    """Train, sample with the EMA model, evaluate, and write the report. Returns a summary.

    Under ``torchrun`` every rank runs this; rank 0 alone writes files and evaluates.
    """
    validate(cfg)
    if cfg.task == "train_tokenizer":
        return train_tokenizer(cfg)
    if cfg.task == "sample":
        return sample_task(cfg)
    info = dist_utils.init_distributed(cfg.train.get("dist_backend", "auto"))
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(HydraConfig.get().runtime.output_dir)
    run_dir = Path(dist_utils.broadcast_object(str(run_dir)))  # ranks may have started at different seconds
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(int(cfg.seed))
    parts = build(cfg)
    encoder = getattr(parts["objective"], "encoder", None)
    if encoder is not None and info.is_main:  # which network REPA really used ("auto" picks at run time)
        (run_dir / "encoder.json").write_text(json.dumps({
            "class": type(encoder).__name__, "name": getattr(encoder, "name", type(encoder).__name__),
            "feature_dim": encoder.feature_dim, "weights_sha256": getattr(encoder, "weights_sha256", None)}, indent=1))
    declared = cfg.modality.get("num_classes")
    if declared is not None and declared != parts["dataset"].num_classes:
        raise ConfigError(f"modality.num_classes={declared} but the dataset has {parts['dataset'].num_classes} "
                          f"classes; fix modality.num_classes")
    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    sampler_cfg = sampler_config(cfg)
    parts["tokenizer"].fit(parts["dataset"])
    trainer = Trainer(model=parts["model"], objective=parts["objective"], tokenizer=parts["tokenizer"],
                      dataset=parts["dataset"], cfg=train_cfg, run_dir=run_dir, sampler_cfg=sampler_cfg,
                      writer=parts["writer"], num_samples=int(cfg.sample.num_samples), sample_seed=int(cfg.sample.seed),
                      config_fingerprint=fingerprint(cfg))
    trainer.eval_results = None
    trainer.hooks.append(make_eval_hook(cfg, sampler_cfg, parts["dataset"]))
    summary = trainer.fit()
    assets = trainer.write_samples("final")
    trainer.run_hooks()
    if not info.is_main:
        return {**summary, "run_dir": str(run_dir)}
    evals = trainer.eval_results
    if evals is not None:
        (run_dir / "eval.json").write_text(json.dumps(evals, indent=1, default=str))
    n_params = sum(p.numel() for p in parts["model"].parameters())
    skipped = getattr(parts["dataset"], "skipped", [])
    if hasattr(skipped, "merge_spools"):  # files that broke inside DataLoader workers (any rank)
        skipped.merge_spools(sorted(run_dir.glob("skipped_in_workers_rank*.jsonl")))
    report_summary = {
        "modality": cfg.modality.name, "method": cfg.method.name, "model": cfg.model.name,
        "parameters": f"{n_params / 1e6:.2f} M", "prediction": parts["model"].prediction,
        "steps": summary["steps"], "batch size": train_cfg.batch_size,
        "wall time (this run)": f"{summary['wall_s']:.1f} s", "samples/s": summary["samples_per_s"],
        "sampler": f"{sampler_cfg.method}, {sampler_cfg.num_steps} steps, cfg {sampler_cfg.cfg_scale}",
        "dataset": f"{len(parts['dataset'])} items, {len(skipped)} skipped", "commit": git_commit(),
    }
    if encoder is not None:
        report_summary["REPA encoder"] = getattr(encoder, "name", type(encoder).__name__)
    notes = [f"skipped unreadable file {p}: {why}" for p, why in skipped[:20]]
    write_report(run_dir, f"{cfg.method.name} on {cfg.modality.name}", report_summary,
                 read_metrics(run_dir / "metrics.jsonl"), assets, evals, notes)
    log.info("run directory: %s", run_dir)
    return {**summary, "run_dir": str(run_dir), "assets": {k: str(v) for k, v in assets.items()}}


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def cli(cfg: DictConfig) -> None:
    if cfg.get("benchmark") is not None:  # `python run.py benchmark=standard`: the cross-method suite
        from evals.suite.__main__ import main as suite_main  # noqa: PLC0415 -- only for this task

        raise SystemExit(suite_main(["--budget", str(cfg.benchmark.name)]))
    try:
        main(cfg)
    except (ConfigError, InstantiationException) as exc:
        raise SystemExit(f"config error: {exc}") from None


if __name__ == "__main__":
    cli()
