"""reliable_saliency: tested PyTorch implementations behind the reliable-saliency book."""

__version__ = "0.1.0"
