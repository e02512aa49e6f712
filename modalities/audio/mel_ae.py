"""A small learned mel latent: a convolutional autoencoder over normalised log-mels.

The paper's audio model runs on an autoencoder's latents (Songbloom AE, 25 latents/s x 64),
not on spectrogram patches. This is the laptop-sized analogue: a 2-D conv autoencoder that
maps a normalised log-mel ``(1, M, F)`` to a latent ``(C, M/4, F/4)`` and back. Training is
one job (:func:`train_mel_autoencoder`, also ``python -m modalities.audio.mel_ae``, and the
intended target of ``run.py task=train_tokenizer modality=audio``); the checkpoint it writes
holds the autoencoder, the mel normalisation statistics it was trained with and the latent
scale, and :class:`~modalities.audio.mel.MelTokenizer` loads it through
``latent_checkpoint`` so the flow model trains on latent tokens.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalities.media_common import atomic_write_bytes

log = logging.getLogger(__name__)
DOWN = 4  # spatial downsampling of the autoencoder (two stride-2 convolutions)


class MelAutoencoder(nn.Module):
    """Args:
        latent_channels: channels of the latent ``(C, M/4, F/4)``.
        width: channels of the hidden convolutions.
    """

    def __init__(self, latent_channels: int = 4, width: int = 32):
        super().__init__()
        self.latent_channels, self.width = latent_channels, width
        w = width
        # Downsample first: full-resolution convolutions dominated the cost on a 2-core CPU.
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w // 2, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w // 2, w // 4, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w // 4, 1, 3, padding=1),
        )
        # Latents are divided by this (their std over the training set) so tokens are ~unit scale.
        self.register_buffer("latent_scale", torch.ones(()))

    def encode(self, mel: Tensor) -> Tensor:
        """Normalised log-mel ``(B, M, F)`` (M, F multiples of 4) -> scaled latent ``(B, C, M/4, F/4)``."""
        return self.encoder(mel[:, None]) / self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent ``(B, C, M/4, F/4)`` -> normalised log-mel ``(B, M, F)``."""
        return self.decoder(z * self.latent_scale)[:, 0]

    def forward(self, mel: Tensor) -> Tensor:
        return self.decode(self.encode(mel))


def pad_frames(mel: Tensor, multiple: int, value: Tensor) -> Tensor:
    """Pad ``(B, M, F)`` on the frame axis to a multiple, with a per-band ``value (M,)``."""
    pad = -mel.shape[-1] % multiple
    if not pad:
        return mel
    return torch.cat([mel, value[None, :, None].expand(mel.shape[0], -1, pad).to(mel)], dim=-1)


def save_checkpoint(path: Path, ae: MelAutoencoder, mel_state: dict, mel_config: dict, report: dict) -> Path:
    """Tensors and plain types only, so ``torch.load(weights_only=True)`` reads it."""
    state = {"format": "selfflow-mel-ae-v1", "ae": ae.state_dict(),
             "ae_config": {"latent_channels": ae.latent_channels, "width": ae.width},
             "mel_stats": {k: mel_state[k] for k in ("band_mean", "band_std")}, "mel_config": mel_config,
             "report": report}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mel autoencoder checkpoint not found; train one with "
                                f"`python -m modalities.audio.mel_ae --out DIR` and set modality.tokenizer.latent_checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "selfflow-mel-ae-v1":
        raise ValueError(f"{path}: not a mel autoencoder checkpoint (format selfflow-mel-ae-v1)")
    return state


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

    from modalities.audio.mel import MelTokenizer

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
    parser = argparse.ArgumentParser(prog="python -m modalities.audio.mel_ae",
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
    from modalities.audio import AudioFolderDataset, MelTokenizer, SynthInstrumentsDataset

    ds = AudioFolderDataset(args.root, crop="center") if args.root else SynthInstrumentsDataset(
        clips_per_class=args.clips_per_class)
    r = train_mel_autoencoder(ds, MelTokenizer(), args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              latent_channels=args.latent_channels, device=args.device)
    print(f"{r['checkpoint']}: reconstruction MAE {r['recon_mae_normalised_logmel']:.3f} "
          f"(normalised log-mel), latent {r['latent_shape']}, {r['train_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
