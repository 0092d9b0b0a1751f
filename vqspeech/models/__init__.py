"""Model modules: plain nn.Modules configured by keyword arguments (no Hydra in here)."""

from .encoder import Encoder
from .quantizer import QuantizerOutput, VectorQuantizer
from .vqvae import VQVAE, VQVAEOutput
from .wavenet import WaveNetDecoder

__all__ = ["Encoder", "QuantizerOutput", "VectorQuantizer", "VQVAE", "VQVAEOutput", "WaveNetDecoder"]
