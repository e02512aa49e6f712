"""``modality=joint``: one trunk trained on several modalities (docs/joint_training.md).

A joint config (configs/modality/joint.yaml) holds each member's own modality config under
``modality.members.<name>``. :func:`member_config` turns the run config into the config of one
member -- the run's config with ``modality`` replaced by that member -- so the member's data set,
tokenizer, writer, SiT, objective (mask ratio, p(t), REPA encoder), sampler (shift, CFG) and
metrics come from exactly the code and interpolations of a single-modality run of it. The members'
SiTs are then tied into one :class:`core.multimodal.JointSiT`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from core import distributed as dist_utils
from core.checkpoint import resolve_checkpoint
from core.io_utils import atomic_write, git_commit
from core.joint import JointData, JointObjective, JointTokenizer, JointTrainer, ModalitySchedule
from core.multimodal import JointSiT, export_member, is_joint_state
from core.report import write_report
from core.trainer import TrainConfig, read_metrics

from .build import build
from .config import ConfigError, fingerprint, sampler_config, validate, write_config
from .evaluation import EvalHook
from .repa_encoders import encoder_record
from .text_build import is_text
from .text_eval import text_metrics

log = logging.getLogger("run")


def is_joint(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "modality.members") is not None


# ---------------------------------------------------------------------------------------- config

def _weights(cfg: DictConfig, key: str) -> dict[str, float]:
    """``modality.<key>`` checked: numbers >= 0 for known members only, not all zero."""
    members = list(cfg.modality.members)
    node = OmegaConf.select(cfg, f"modality.{key}")
    if node is None or not OmegaConf.is_dict(node):
        raise ConfigError(f"modality.{key} must map each member {members} to a number, e.g. modality.{key}.image=0.5")
    out = {}
    for name, value in node.items():
        if name not in members:
            raise ConfigError(f"modality.{key}.{name}: unknown member; the members are {members} "
                              f"(add one under modality.members or remove the key)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"modality.{key}.{name}={value!r}: must be a number >= 0")
        if value < 0:
            raise ConfigError(f"modality.{key}.{name}={value}: must be >= 0")
        out[str(name)] = float(value)
    missing = [m for m in members if m not in out]
    if missing:
        raise ConfigError(f"modality.{key} has no value for member(s) {missing}; give e.g. modality.{key}.{missing[0]}=0")
    if key == "weights" and not any(v > 0 for v in out.values()):
        raise ConfigError(f"modality.weights are all zero ({out}); give at least one member a positive weight, "
                          "e.g. modality.weights.image=1")
    return out


def sampling_weights(cfg: DictConfig) -> dict[str, float]:
    return _weights(cfg, "weights")


def loss_weights(cfg: DictConfig) -> dict[str, float]:
    return _weights(cfg, "loss_weights") if OmegaConf.select(cfg, "modality.loss_weights") is not None else {}


def batch_sizes(cfg: DictConfig) -> dict[str, int]:
    """``modality.batch_sizes`` checked: member -> its global batch size (null or absent: ``train.batch_size``)."""
    members = list(cfg.modality.members)
    node = OmegaConf.select(cfg, "modality.batch_sizes")
    if node is None:
        node = {}
    elif not OmegaConf.is_dict(node):
        raise ConfigError(f"modality.batch_sizes must map members {members} to a batch size or null, "
                          f"e.g. modality.batch_sizes.video=8")
    out = {}
    for name, value in node.items():
        if name not in members:
            raise ConfigError(f"modality.batch_sizes.{name}: unknown member; the members are {members} "
                              f"(add one under modality.members or remove the key)")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"modality.batch_sizes.{name}={value!r}: must be an integer >= 1, or null for "
                              f"train.batch_size")
        out[str(name)] = int(cfg.train.batch_size) if value is None else value
    return {m: out.get(m, int(cfg.train.batch_size)) for m in members}


def check_batch_sizes(cfg: DictConfig, datasets: dict, world_size: int) -> dict[str, int]:
    """:func:`batch_sizes` of the members in ``datasets``, checked against their sizes and the processes."""
    sizes = batch_sizes(cfg)
    explicit = OmegaConf.select(cfg, "modality.batch_sizes") or {}
    for m, data in datasets.items():
        key = f"modality.batch_sizes.{m}" if explicit.get(m) is not None else "train.batch_size"
        if sizes[m] > len(data):
            raise ConfigError(f"{key}={sizes[m]}: member {m}'s data set has only {len(data)} items; use a smaller batch")
        if sizes[m] % world_size:
            raise ConfigError(f"{key}={sizes[m]} (global) must be divisible by the {world_size} processes")
    return {m: sizes[m] for m in datasets}


def active_members(cfg: DictConfig) -> list[str]:
    """Members with a positive sampling weight, in the config's order."""
    return [m for m, w in sampling_weights(cfg).items() if w > 0]


def member_config(cfg: DictConfig, name: str) -> DictConfig:
    """The run config as a single-modality run of member ``name`` would see it (unresolved, so that
    ``${modality.mask_ratio}``, ``${modality.time.sample_shift}``... read the member's values)."""
    if name not in cfg.modality.members:
        raise ConfigError(f"modality {name!r} is not a member of modality={cfg.modality.name}; "
                          f"choose one of {list(cfg.modality.members)}")
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(out, False)
    out.modality = out.modality.members[name]
    return out


# `modality.x` (and p(t)'s own `time.x`) at the start of a message or after a space or parenthesis
_MEMBER_KEY = re.compile(r"(?<![\w.])(?:modality\.(?!members\.)|(?=time\.))")


def validate_joint(cfg: DictConfig) -> None:
    """:func:`app.config.validate` for a joint config: the weights, then every active member."""
    sampling_weights(cfg)
    loss_weights(cfg)
    for name in active_members(cfg):
        try:
            validate(member_config(cfg, name))
        except ConfigError as exc:  # a member's key is named where it lives in the joint config
            raise ConfigError(_MEMBER_KEY.sub(f"modality.members.{name}.", str(exc))) from None
    batch_sizes(cfg)  # after the members: train.batch_size (the default) is checked by then


def joint_fingerprint(cfg: DictConfig) -> dict:
    """The single-modality fingerprint plus what a joint checkpoint must also agree on."""
    out = fingerprint(cfg)
    for name in active_members(cfg):
        for key, value in fingerprint(member_config(cfg, name)).items():
            if key.startswith("modality.") or key == "method.objective":
                out[f"members.{name}.{key}"] = value
    out["modality.weights"] = json.dumps(sampling_weights(cfg), sort_keys=True)
    out["modality.loss_weights"] = json.dumps(loss_weights(cfg), sort_keys=True)
    return out


# ---------------------------------------------------------------------------------------- build

def build_joint(cfg: DictConfig) -> dict:
    """Every active member built as its single-modality run would be, then tied into one model."""
    validate_joint(cfg)
    names = active_members(cfg)
    if is_text(cfg):  # one caption encoder over every member's captions (app/joint_text.py)
        from .joint_text import joint_text_parts  # noqa: PLC0415

        mcfgs = {m: member_config(cfg, m) for m in names}
        datasets, text = joint_text_parts(cfg, mcfgs)
        members = {m: build(mcfgs[m], datasets[m], text[m]) for m in names}
    else:
        members = {m: build(member_config(cfg, m)) for m in names}
    model = JointSiT({m: p["model"] for m, p in members.items()})
    objective = JointObjective({m: p["objective"] for m, p in members.items()}, loss_weights(cfg))
    return dict(members=members, model=model, objective=objective,
                tokenizer=JointTokenizer({m: p["tokenizer"] for m, p in members.items()}),
                dataset=JointData({m: p["dataset"] for m, p in members.items()}),
                writers={m: p["writer"] for m, p in members.items()},
                schedule=ModalitySchedule(sampling_weights(cfg), int(cfg.train.seed)))


class _MemberTrainer:
    """What :class:`app.evaluation.EvalHook` needs from a trainer, for one member of a joint run."""

    def __init__(self, trainer: JointTrainer, name: str, sampler_cfg):
        self.trainer, self.name, self.sampler_cfg = trainer, name, sampler_cfg
        self.dist, self.device = trainer.dist, trainer.device

    def generate(self, num_samples: int, seed: int, **kw):
        return self.trainer.generate(num_samples, seed, sampler_cfg=self.sampler_cfg, modality=self.name, **kw)


class JointEvalHook:
    """Each member evaluated as its single-modality run is (same metrics, held-out references).

    :attr:`results` is ``{member: [records]}`` (for eval.json); the hook returns ``member/metric``.
    """

    def __init__(self, cfg: DictConfig, names: list[str], datasets: dict, extra_metrics: dict | None = None):
        self.hooks = {}
        for m in names:  # extra_metrics: text runs' prompt adherence, per member
            mcfg = member_config(cfg, m)
            self.hooks[m] = EvalHook(mcfg, sampler_config(mcfg), datasets[m], (extra_metrics or {}).get(m, ()))
        self.results: dict[str, list[dict]] | None = None

    def __call__(self, trainer, step: int) -> dict:
        out, results = {}, {}
        for m, hook in self.hooks.items():
            values = hook(_MemberTrainer(trainer, m, hook.sampler_cfg), step)
            out.update({f"{m}/{k}": v for k, v in values.items()})
            if hook.results is not None:
                results[m] = [{**r, "modality": m} for r in hook.results]
        if results:
            self.results = results
        return out


# ---------------------------------------------------------------------------------------- train

def train_joint(cfg: DictConfig, run_dir: Path, device: torch.device, is_main: bool) -> dict:
    """``task=train`` with ``modality=joint``: as app.tasks.train, per member where it matters."""
    commit = git_commit()
    torch.manual_seed(int(cfg.seed))
    try:
        parts = build_joint(cfg)
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from exc
    names = parts["schedule"].names
    for m in names:
        declared = cfg.modality.members[m].get("num_classes")
        got = parts["members"][m]["dataset"].num_classes
        if declared is not None and declared != got:
            raise ConfigError(f"modality.members.{m}.num_classes={declared} but the dataset has {got} classes")
    member_batches = check_batch_sizes(cfg, parts["dataset"].members, dist_utils.current().world_size)
    if is_main:
        write_config(cfg, run_dir)
        encoders = {m: getattr(p["objective"], "encoder", None) for m, p in parts["members"].items()}
        if any(e is not None for e in encoders.values()):
            (run_dir / "encoder.json").write_text(json.dumps(
                {m: encoder_record(e) for m, e in encoders.items() if e is not None}, indent=1))
    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    for m in names:
        parts["tokenizer"].members[m].fit(parts["dataset"].members[m])
    sampler_cfgs = {m: sampler_config(member_config(cfg, m)) for m in names}
    members = parts["members"]  # text: the class-labelled data sets and prompt metrics, as app.tasks.train
    evaluator = JointEvalHook(cfg, names, {m: members[m].get("base_dataset", members[m]["dataset"]) for m in names},
                              {m: text_metrics(member_config(cfg, m), members[m]) for m in names})
    trainer = JointTrainer(model=parts["model"], objective=parts["objective"], tokenizer=parts["tokenizer"],
                           dataset=parts["dataset"], cfg=train_cfg, run_dir=run_dir,
                           sampler_cfg=sampler_cfgs[names[0]], writer=None, num_samples=int(cfg.sample.num_samples),
                           sample_seed=int(cfg.sample.seed), config_fingerprint=joint_fingerprint(cfg),
                           hooks=[evaluator], device=device, schedule=parts["schedule"], writers=parts["writers"],
                           sampler_cfgs=sampler_cfgs, batch_sizes=member_batches,
                           member_prompts={m: members[m]["prompts"] for m in names if members[m].get("prompts")})
    summary = trainer.fit()
    assets = trainer.write_samples("final")
    if is_main and assets:  # text: which prompt each member's sample was made from
        for m, prompts in trainer.member_prompts.items():
            assets[f"{m}_prompts"] = prompts.write_captions(run_dir / "samples" / m / "final_prompts.txt",
                                                            int(cfg.sample.num_samples))
    trainer.run_hooks()
    if not is_main:
        return {**summary, "run_dir": str(run_dir)}
    evals = evaluator.results
    if evals is not None:
        (run_dir / "eval.json").write_text(json.dumps(evals, indent=1, default=str))
    counts = parts["schedule"].counts_before(summary["steps"])
    n_params = sum(p.numel() for p in parts["model"].parameters())
    report_summary = {
        "modality": f"joint ({', '.join(names)})", "method": cfg.method.name, "model": cfg.model.name,
        "parameters": f"{n_params / 1e6:.2f} M", "steps": summary["steps"],
        "steps per member": ", ".join(f"{m} {counts[m]}" for m in names),
        "sampling probabilities": ", ".join(f"{m} {p:.3f}" for m, p in parts["schedule"].probabilities.items()),
        "loss weights": ", ".join(f"{m} {w:g}" for m, w in parts["objective"].loss_weights.items()),
        "batch size": (train_cfg.batch_size if set(member_batches.values()) == {train_cfg.batch_size} else
                       ", ".join(f"{m} {b}" for m, b in member_batches.items())),
        "wall time (this run)": f"{summary['wall_s']:.1f} s",
        "samples/s": summary["samples_per_s"],
        "sampler": "; ".join(f"{m}: {s.method}, {s.num_steps} steps, cfg {s.cfg_scale}, shift {s.shift}"
                             for m, s in sampler_cfgs.items()),
        "dataset": ", ".join(f"{m} {len(d)} items" for m, d in parts["dataset"].members.items()), "commit": commit,
    }
    if is_text(cfg):
        c = cfg.conditioning
        report_summary["conditioning"] = (f"text ({c.encoder} encoder shared by {', '.join(names)}, {c.arch} "
                                          f"attention, text time {c.text_time})")
    flat = None if evals is None else [{**r, "metric": f"{m}/{r['metric']}"} for m, recs in evals.items() for r in recs]
    write_report(run_dir, f"{cfg.method.name} on joint ({', '.join(names)})", report_summary,
                 read_metrics(run_dir / "metrics.jsonl"), assets, flat, [])
    log.info("run directory: %s", run_dir)
    return {**summary, "run_dir": str(run_dir), "assets": {k: str(v) for k, v in assets.items()},
            "steps_per_member": counts}


# ---------------------------------------------------------------------------------------- sample

def export_member_checkpoint(path, name: str, out: Path) -> Path:
    """Write member ``name`` of the joint checkpoint at ``path`` as a single-modality checkpoint.

    The result has our layout (``model``, ``ema``, ``tokenizer``, ``model_config``), so
    ``task=sample modality=<name> checkpoint.path=<out>`` (or ``core.convert.load_pretrained``)
    loads it like any single-modality run's checkpoint.
    """
    state = torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)
    if not is_joint_state(state):
        raise ConfigError(f"checkpoint.path={path} is not a joint checkpoint (no joint model_config)")
    arch = state["model_config"]
    model, member_arch = export_member(state["model"], arch, name)
    ema, _ = export_member(state["ema"]["model"], arch, name)
    prefix = f"members.{name}."
    tokenizer = {k[len(prefix):]: v for k, v in state.get("tokenizer", {}).items() if k.startswith(prefix)}
    member = {"model": model, "ema": {"model": ema, "num_updates": state["ema"].get("num_updates", 0)},
              "tokenizer": tokenizer, "model_config": member_arch, "step": state.get("step"),
              "exported_from": {"path": str(path), "member": name}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: torch.save(member, f))
    return out


def joint_checkpoint_hint(path, modality: str) -> str | None:
    """The fix, when a single-modality sampler was pointed at a joint checkpoint (else None)."""
    try:
        state = torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not is_joint_state(state):
        return None
    members = list(state["model_config"]["members"])
    return (f"checkpoint.path={path} is a joint checkpoint (members {members}); sample one member with "
            f"modality=joint sample.modality={modality if modality in members else members[0]}, or export it first: "
            f"python -m app.joint export {path} --modality <member> --out <file.pt>")


def prepare_sample(cfg: DictConfig, run_dir: Path, is_main: bool) -> DictConfig:
    """``task=sample`` with ``modality=joint``: the member ``sample.modality`` exported from
    ``checkpoint.path`` next to the samples, and the member's config to sample it with."""
    name = OmegaConf.select(cfg, "sample.modality")
    names = list(cfg.modality.members)
    if name is None:
        raise ConfigError(f"sample.modality is missing: a joint checkpoint samples one member; give "
                          f"sample.modality=<one of {names}>")
    out = Path(run_dir) / f"member_{name}.pt"
    mcfg = member_config(cfg, str(name))
    if is_main:
        export_member_checkpoint(cfg.checkpoint.path, str(name), out)
    dist_utils.barrier()
    mcfg.checkpoint.path = str(out)
    mcfg.checkpoint.layout = "ours"
    return mcfg


def main(argv=None) -> int:
    """``python -m app.joint export RUN_OR_CKPT --modality video --out video.pt``."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m app.joint", description="export one member of a joint checkpoint")
    p.add_argument("command", choices=["export"])
    p.add_argument("checkpoint", help="a joint run directory, its checkpoints/ or a .pt file")
    p.add_argument("--modality", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    print(export_member_checkpoint(a.checkpoint, a.modality, Path(a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
