"""Model modules: plain nn.Modules configured by keyword arguments (no Hydra in here)."""

from .encoder import Encoder
from .prior import CodePrior, TransformerPrior, WaveNetPrior, build_prior, sample_codes
from .quantizer import QuantizerOutput, VectorQuantizer
from .vqvae import VQVAE, VQVAEOutput
from .wavenet import WaveNetDecoder

__all__ = [
    "CodePrior",
    "Encoder",
    "QuantizerOutput",
    "TransformerPrior",
    "VectorQuantizer",
    "VQVAE",
    "VQVAEOutput",
    "WaveNetDecoder",
    "WaveNetPrior",
    "build_prior",
    "sample_codes",
]
