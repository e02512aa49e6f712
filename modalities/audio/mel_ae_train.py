"""Training job of the mel latent autoencoder (network and checkpoint format: ``mel_ae.py``).

``python -m modalities.audio.mel_ae_train --out DIR`` or ``run.py task=train_tokenizer
modality=audio`` (:func:`train_tokenizer`); the checkpoint goes to ``DIR/mel_ae.pt``, which
``MelTokenizer(latent_checkpoint=...)`` loads. Kept apart from ``mel_ae.py`` because it builds a
:class:`~modalities.audio.mel.MelTokenizer`, which itself loads ``mel_ae.py``'s network.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modalities.audio.mel import MelTokenizer
from modalities.audio.mel_ae import DOWN, MelAutoencoder, pad_frames, save_checkpoint

log = logging.getLogger(__name__)


def train_mel_autoencoder(dataset, tokenizer, out: str | Path, steps: int = 500, batch_size: int = 32,
                          lr: float = 2e-3, latent_channels: int = 4, width: int = 32, device: str = "cpu",
                          seed: int = 0, log_every: int = 100) -> dict:
    """Fit ``tokenizer``'s mel statistics, train the autoencoder on normalised log-mels, save it.

    ``tokenizer`` is a plain :class:`~modalities.audio.mel.MelTokenizer` (no latent) whose mel
    settings the checkpoint records. Writes ``<out>/mel_ae.pt`` and ``<out>/mel_ae.json``
    (config + reconstruction error) and returns the report.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = tokenizer.to(device)
    tokenizer.fit(dataset)
    # The data set is small: compute every normalised log-mel once and train from memory.
    mels = []
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            wave = torch.stack([dataset[i][0] for i in range(start, min(len(dataset), start + 64))]).to(device)
            mels.append(tokenizer.normalised_mel(wave))
    silence = (torch.log(torch.tensor(tokenizer.log_eps)) - tokenizer.band_mean.cpu()) / tokenizer.band_std.cpu()
    data = pad_frames(torch.cat(mels), DOWN, silence.to(device))              # (N, M, F')
    if data.shape[1] % DOWN:
        raise ValueError(f"n_mels={data.shape[1]} must be a multiple of {DOWN} for the mel autoencoder")
    ae = MelAutoencoder(latent_channels, width).to(device)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator(device="cpu").manual_seed(seed)
    start_t = time.time()
    history = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        x = data[idx.to(device)]
        loss = F.mse_loss(ae(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": float(loss.detach())})
            log.info("mel autoencoder step %d: mse %.4f", step, history[-1]["loss"])
    ae.eval()
    with torch.no_grad():
        z = torch.cat([ae.encoder(data[i:i + 128, None]) for i in range(0, data.shape[0], 128)])
        ae.latent_scale.fill_(float(z.std()))
        rec = torch.cat([ae(data[i:i + 128]) for i in range(0, data.shape[0], 128)])
        mae = float((rec - data)[..., : tokenizer.num_frames].abs().mean())
    report = {"steps": steps, "batch_size": batch_size, "lr": lr, "train_s": round(time.time() - start_t, 1),
              "items": int(data.shape[0]), "latent_shape": list(z.shape[1:]), "latent_scale": float(ae.latent_scale),
              "recon_mae_normalised_logmel": mae, "history": history}
    mel_config = tokenizer.config()
    ckpt = save_checkpoint(out / "mel_ae.pt", ae.cpu(), {k: v.cpu() for k, v in tokenizer.state_dict().items()},
                           mel_config, report)
    (out / "mel_ae.json").write_text(json.dumps({"checkpoint": str(ckpt), "mel_config": mel_config, **report}, indent=1))
    log.info("mel autoencoder: reconstruction MAE %.3f (normalised log-mel) -> %s", mae, ckpt)
    return {"checkpoint": str(ckpt), **report}


def train_tokenizer(cfg, run_dir: str | Path) -> dict:
    """Entry for ``run.py task=train_tokenizer modality=audio`` (``cfg`` is the composed config).

    Reads ``cfg.modality.dataset``, the mel settings of ``cfg.modality.tokenizer`` and the
    options under ``cfg.modality.tokenizer_training``.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    dataset = instantiate(cfg.modality.dataset)
    tok_cfg = OmegaConf.to_container(cfg.modality.tokenizer, resolve=True)
    tok_cfg.pop("_target_", None)
    tok_cfg.pop("latent_checkpoint", None)
    tok_cfg.pop("latent_patch", None)
    opts = OmegaConf.to_container(cfg.modality.tokenizer_training, resolve=True)
    opts.pop("_target_", None)
    opts.setdefault("seed", int(cfg.get("seed", 0)))
    return train_mel_autoencoder(dataset, MelTokenizer(**tok_cfg), run_dir, **opts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modalities.audio.mel_ae_train",
                                     description="Train the mel latent autoencoder on the default synthetic "
                                                 "instruments (or --root: an audio folder).")
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", default=None, help="audio folder (one sub-folder per class); default: synthetic set")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--latent-channels", type=int, default=4)
    parser.add_argument("--clips-per-class", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from modalities.audio.folder import AudioFolderDataset
    from modalities.audio.synth import SynthInstrumentsDataset

    ds = AudioFolderDataset(args.root, crop="center") if args.root else SynthInstrumentsDataset(
        clips_per_class=args.clips_per_class)
    r = train_mel_autoencoder(ds, MelTokenizer(), args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              latent_channels=args.latent_channels, device=args.device)
    print(f"{r['checkpoint']}: reconstruction MAE {r['recon_mae_normalised_logmel']:.3f} "
          f"(normalised log-mel), latent {r['latent_shape']}, {r['train_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
