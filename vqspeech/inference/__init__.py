"""Using a trained model: VQSpeech (encode, decode, convert), the file handling of the inference
verbs, the reference and fast WaveNet generators, and sampling from a prior."""

from .vqspeech import VQSpeech

__all__ = ["VQSpeech"]
