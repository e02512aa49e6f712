"""A network-free metric for the joint-run tests: statistics of the generated samples."""

import torch


def sample_stats(fake: torch.Tensor, dataset) -> dict:
    """Headline ``mean`` of the samples, plus their std and count (any modality's decoded samples)."""
    x = fake.detach().float()
    return {"mean": float(x.mean()), "std": float(x.std()), "n": int(x.shape[0]), "num_classes": dataset.num_classes}
