"""diffuseg: medical image segmentation with diffusion models (MedSegDiff and ambiguity-aware diffusion)."""

__version__ = "0.1.0"
