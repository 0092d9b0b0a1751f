"""vqspeech: discrete speech units with a VQ-VAE and a speaker-conditioned WaveNet decoder."""

__version__ = "0.1.0"

from .data.codes import Encoding  # noqa: E402
from .inference import VQSpeech  # noqa: E402

__all__ = ["Encoding", "VQSpeech", "__version__"]
