"""Text conditioning: word vocabulary, the offline text encoder, optional pretrained encoders, the
text-conditioned SiT (``TextSiT``) and the prompt set used for in-training samples and metrics."""
