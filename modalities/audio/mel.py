"""Log-mel tokenizer: waveform -> normalised log-mel patches, and back through Griffin-Lim.

Encode: ``(B, L)`` waveform -> power mel ``(B, M, F)`` (torchaudio MelSpectrogram) ->
``log(mel + eps)`` -> per-band normalisation ``(x - mean_m) / std_m`` -> pad frames to a
multiple of the patch -> ``(pm, pf)`` patches over (mel band, frame) as tokens
``(B, (M/pm)(F'/pf), pm pf)``, coordinates ``(0, band group, frame group)``.

The per-band statistics come from :meth:`fit` (one pass over the training set, called by the
training job) and live in buffers, so they are saved with checkpoints and a sampling job
decodes with the statistics the model was trained on.

Decode: undo the normalisation, ``exp``, map mel back to a non-negative linear spectrogram
by non-negative least squares (multiplicative updates; the plain pseudo-inverse followed by
clipping negatives was 3-4x worse in the round trip), then Griffin-Lim phase reconstruction. Patching is exact; the mel -> waveform step is lossy (phase, mel
resolution); ``tests/modalities/test_audio.py`` measures it.

Learned latent (optional): with ``latent_checkpoint`` (written by
:mod:`modalities.audio.mel_ae_train`), the normalised log-mel goes through a small convolutional
autoencoder and the tokens are ``latent_patch`` patches of its latent ``(C, M/4, F/4)``;
the mel statistics then come from that checkpoint (the autoencoder was trained with them)
and :meth:`fit` leaves them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torchaudio.transforms as AT
from einops import rearrange
from torch import Tensor

from core.tokens import Tokenizer

log = logging.getLogger(__name__)


class MelTokenizer(Tokenizer):
    """Args:
        sample_rate, num_samples: waveform rate and length the tokenizer accepts.
        n_fft, hop_length: STFT size and hop (frames = 1 + num_samples // hop_length).
        n_mels, f_min, f_max: mel filter bank (f_max None = Nyquist).
        patch: ``(bands, frames)`` per token; ``bands`` must divide ``n_mels``. Frames are
            padded (with silence) to a multiple of the patch and trimmed again on decode.
        log_eps: floor inside the log (power units), about -50 dB.
        griffin_lim_iters: Griffin-Lim iterations in :meth:`decode`.
        inverse_mel_iters: non-negative least-squares iterations for mel -> linear spectrogram.
        fit_max_items: items :meth:`fit` reads (evenly spaced over the dataset).
        latent_checkpoint: optional mel autoencoder checkpoint; tokens are then its latents.
        latent_patch: ``(bands, frames)`` patch over the latent grid when a checkpoint is given.
    """

    def __init__(self, sample_rate: int = 16000, num_samples: int = 16000, n_fft: int = 512,
                 hop_length: int = 128, n_mels: int = 64, f_min: float = 0.0, f_max: float | None = None,
                 patch: Sequence[int] = (8, 8), log_eps: float = 1e-5, griffin_lim_iters: int = 32,
                 inverse_mel_iters: int = 100, fit_max_items: int = 512, latent_checkpoint: str | None = None,
                 latent_patch: Sequence[int] = (2, 2)):
        super().__init__()
        self._config = dict(sample_rate=int(sample_rate), num_samples=int(num_samples), n_fft=int(n_fft),
                            hop_length=int(hop_length), n_mels=int(n_mels), f_min=float(f_min),
                            f_max=None if f_max is None else float(f_max), log_eps=float(log_eps))
        self.sample_rate, self.num_samples, self.n_mels = int(sample_rate), int(num_samples), int(n_mels)
        self.log_eps, self.fit_max_items = float(log_eps), int(fit_max_items)
        self.inverse_mel_iters = int(inverse_mel_iters)
        self.num_frames = 1 + self.num_samples // hop_length          # torch.stft with center=True
        self.ae = None
        ckpt = None
        if latent_checkpoint:
            from modalities.audio.mel_ae import DOWN, MelAutoencoder, load_checkpoint

            ckpt = load_checkpoint(latent_checkpoint)
            theirs = {k: ckpt["mel_config"].get(k) for k in self._config}
            if theirs != self._config:
                diff = {k: (self._config[k], theirs[k]) for k in self._config if self._config[k] != theirs[k]}
                raise ValueError(f"{latent_checkpoint}: the autoencoder was trained with other mel settings "
                                 f"(tokenizer vs checkpoint: {diff}); use the checkpoint's settings or retrain it")
            self.ae = MelAutoencoder(**ckpt["ae_config"])
            self.ae.load_state_dict(ckpt["ae"])
            self.ae.eval().requires_grad_(False)
            down, channels, (pm, pf) = DOWN, self.ae.latent_channels, (int(p) for p in latent_patch)
        else:
            down, channels, (pm, pf) = 1, 1, (int(p) for p in patch)
        if pm < 1 or pf < 1 or n_mels % (pm * down):
            raise ValueError(f"tokenizer patch ({pm}, {pf}): n_mels={n_mels} is not divisible by {pm * down}")
        self.patch, self.down = (pm, pf), down
        self.padded_frames = -(-self.num_frames // (pf * down)) * pf * down
        self.grid = (n_mels // (pm * down), self.padded_frames // (pf * down))
        self.token_dim = channels * pm * pf
        self.mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                     f_min=f_min, f_max=f_max, power=2.0, center=True)
        fb = self.mel.mel_scale.fb                                      # (n_freq, M)
        self.register_buffer("fb_gram", fb @ fb.T, persistent=False)    # (n_freq, n_freq)
        self.griffin_lim = AT.GriffinLim(n_fft=n_fft, hop_length=hop_length, n_iter=griffin_lim_iters, power=2.0,
                                         length=self.num_samples, rand_init=False)
        self.register_buffer("band_mean", torch.zeros(n_mels))
        self.register_buffer("band_std", torch.ones(n_mels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        if ckpt is not None:
            self.band_mean.copy_(ckpt["mel_stats"]["band_mean"])
            self.band_std.copy_(ckpt["mel_stats"]["band_std"])
            self.fitted.fill_(True)
        h, w = torch.meshgrid(torch.arange(self.grid[0]), torch.arange(self.grid[1]), indexing="ij")
        self.register_buffer("_coords", torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3), persistent=False)

    def config(self) -> dict:
        """The mel settings (what a mel autoencoder checkpoint must agree with)."""
        return dict(self._config)

    # --- normalisation statistics -------------------------------------------------------

    def log_mel(self, wave: Tensor) -> Tensor:
        """``(B, L)`` -> un-normalised log-mel ``(B, M, F)``."""
        if wave.dim() != 2 or wave.shape[1] != self.num_samples:
            raise ValueError(f"MelTokenizer expects waveforms (B, {self.num_samples}), got {tuple(wave.shape)}; "
                             f"check dataset.num_samples and tokenizer.num_samples")
        return torch.log(self.mel(wave.float()) + self.log_eps)

    @torch.no_grad()
    def fit(self, dataset) -> None:
        """Per-band mean and std of the log-mel over (up to ``fit_max_items``) training items."""
        if self.ae is not None:
            log.info("MelTokenizer: mel statistics come from the latent autoencoder checkpoint; not refitted")
            return
        n = len(dataset)
        idx = torch.linspace(0, n - 1, min(n, self.fit_max_items)).round().long().unique().tolist()
        device = self.band_mean.device
        s = torch.zeros(self.n_mels, dtype=torch.float64)
        s2 = torch.zeros(self.n_mels, dtype=torch.float64)
        count = 0
        for start in range(0, len(idx), 64):
            wave = torch.stack([torch.as_tensor(dataset[i][0]) for i in idx[start:start + 64]]).to(device)
            lm = self.log_mel(wave).double().cpu()                       # (b, M, F)
            s += lm.sum(dim=(0, 2))
            s2 += (lm ** 2).sum(dim=(0, 2))
            count += lm.shape[0] * lm.shape[2]
        mean = s / count
        std = (s2 / count - mean ** 2).clamp(min=0).sqrt().clamp(min=1e-3)
        self.band_mean.copy_(mean.float())
        self.band_std.copy_(std.float())
        self.fitted.fill_(True)
        log.info("MelTokenizer: fitted per-band log-mel statistics on %d items (mean %.2f, std %.2f)",
                 len(idx), float(mean.mean()), float(std.mean()))

    def _require_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("MelTokenizer: per-band normalisation statistics are not fitted; call "
                               "tokenizer.fit(train_dataset) first (run.py does) or load a checkpoint that has them")

    # --- tokens -------------------------------------------------------------------------

    def normalised_mel(self, wave: Tensor) -> Tensor:
        """``(B, L)`` -> normalised log-mel ``(B, M, F)`` (zero mean, unit std per band)."""
        self._require_fitted()
        return (self.log_mel(wave) - self.band_mean[:, None]) / self.band_std[:, None]

    def encode(self, x: Tensor) -> Tensor:
        """``(B, L)`` waveform -> ``(B, N, D)`` tokens (mel patches, or latent patches with an autoencoder)."""
        z = self.normalised_mel(x)
        pad = self.padded_frames - self.num_frames
        if pad:  # pad with the normalised value of silence so padding looks like quiet audio
            silence = (torch.log(torch.tensor(self.log_eps, device=z.device)) - self.band_mean) / self.band_std
            z = torch.cat([z, silence[None, :, None].expand(z.shape[0], -1, pad)], dim=2)
        pm, pf = self.patch
        if self.ae is None:
            return rearrange(z, "b (h pm) (w pf) -> b (h w) (pm pf)", pm=pm, pf=pf)
        with torch.no_grad():
            lat = self.ae.encode(z)                                     # (B, C, M/4, F'/4)
        return rearrange(lat, "b c (h pm) (w pf) -> b (h w) (c pm pf)", pm=pm, pf=pf)

    def tokens_to_mel(self, tokens: Tensor) -> Tensor:
        """``(B, N, D)`` -> normalised log-mel ``(B, M, F)`` (exact inverse of the mel patching)."""
        n = self.grid[0] * self.grid[1]
        if tokens.dim() != 3 or tokens.shape[1:] != (n, self.token_dim):
            raise ValueError(f"MelTokenizer.decode expects tokens (B, {n}, {self.token_dim}), got {tuple(tokens.shape)}")
        pm, pf = self.patch
        h, w = self.grid
        if self.ae is None:
            z = rearrange(tokens, "b (h w) (pm pf) -> b (h pm) (w pf)", h=h, w=w, pm=pm, pf=pf)
        else:
            lat = rearrange(tokens, "b (h w) (c pm pf) -> b c (h pm) (w pf)", h=h, w=w, pm=pm, pf=pf)
            with torch.no_grad():
                z = self.ae.decode(lat.float())
        return z[..., : self.num_frames]

    def mel_to_wave(self, z: Tensor) -> Tensor:
        """Normalised log-mel ``(B, M, F)`` -> waveform ``(B, L)`` (inverse mel + Griffin-Lim)."""
        self._require_fitted()
        power_mel = (torch.exp(z.float() * self.band_std[:, None] + self.band_mean[:, None]) - self.log_eps).clamp(min=0)
        wave = self.griffin_lim(self.inverse_mel(power_mel))
        return wave.clamp(-1, 1)

    def inverse_mel(self, power_mel: Tensor) -> Tensor:
        """Power mel ``(B, M, F)`` -> non-negative power spectrogram ``(B, n_freq, F)``.

        Minimises ``||fb^T s - mel||^2`` over ``s >= 0`` with Lee-Seung multiplicative
        updates ``s <- s * (fb mel) / (fb fb^T s)``, which keep ``s`` non-negative without
        clipping, starting from the filter-bank transpose normalised by each bin's weight.
        """
        fb = self.mel.mel_scale.fb                                       # (n_freq, M)
        numer = torch.einsum("fm,bmt->bft", fb, power_mel)               # fb mel
        s = numer / (fb.sum(1)[None, :, None] + 1e-8)
        for _ in range(self.inverse_mel_iters):
            s = s * numer / (torch.einsum("fg,bgt->bft", self.fb_gram, s) + 1e-12)
        return s

    def decode(self, tokens: Tensor) -> Tensor:
        """``(B, N, D)`` -> waveform ``(B, num_samples)`` in [-1, 1]."""
        return self.mel_to_wave(self.tokens_to_mel(tokens))

    def coords(self) -> Tensor:
        """``(N, 3)``: time 0, height = mel band group, width = frame group (raster order)."""
        return self._coords
