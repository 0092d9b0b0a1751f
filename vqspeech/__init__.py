"""vqspeech: discrete speech units with a VQ-VAE and a speaker-conditioned WaveNet decoder."""

__version__ = "0.1.0"

from .inference import VQSpeech  # noqa: E402

__all__ = ["VQSpeech", "__version__"]
