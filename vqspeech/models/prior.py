"""Autoregressive priors over code sequences, conditioned on the speaker: p(c_t | c_<t, speaker).

Two interchangeable architectures share the ``CodePrior`` interface:

* ``WaveNetPrior``: causal dilated gated convolutions (the decoder's ``ResidualLayer`` with one code
  per step and no local conditioning); incremental steps use per-layer ring buffers.
* ``TransformerPrior``: a pre-LayerNorm decoder-only transformer (nanoGPT-like) with rotary position
  embeddings and a sliding attention window of ``context`` codes; incremental steps use a key/value
  cache per layer.

Both shift their input right by one internally: ``forward(codes)[:, t]`` predicts ``codes[:, t]`` from
a learned start token, ``codes[:, :t]`` and the speaker. Code ``num_codes`` is the start token.

For hierarchical codes (VQ-VAE-2) either architecture can also be conditioned on the top codes
(``top_codes`` > 0): :class:`TopConditioning` turns the whole top sequence [B, ceil(T / stride)]
into one vector per bottom position [B, T, width], added to the input embeddings. The top codes are
drawn before the bottom ones, so this conditioning looks at every top position (non-causal); the
bottom codes stay strictly causal. An unconditioned prior (``top_codes`` 0) has no extra modules.

For grouped codes (``groups`` G > 1, a product of G codebooks) a step's code is a tuple [G]: the
input embedding is the sum of the G codes' embeddings, and the tuple is predicted one group after
the other, p(c_t) = prod_g p(c_t,g | c_<t, c_t,<g), by adding the embeddings of the step's earlier
groups to the hidden state before the output head (one head of G x K outputs, group g reads its K).
Logits are then [B, T, G, K]; sampling draws the G codes of a step in order.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .wavenet import ResidualLayer, residual_layers


class TopConditioning(nn.Module):
    """Top codes [B, J] -> an input term at the bottom rate [B, T, width]: embedding -> Conv1d(k=3)
    -> ReLU -> Conv1d(k=3) at the top rate (non-causal, zero-padded at the ends) -> each top
    position repeated ``stride`` times -> the first T positions. Top code j covers bottom positions
    j*stride .. (j+1)*stride - 1."""

    def __init__(self, num_codes: int, stride: int, width: int):
        super().__init__()
        if num_codes < 1 or stride < 1:
            raise ValueError(f"top conditioning needs top_codes >= 1 and top_stride >= 1, not {num_codes} and {stride}")
        self.num_codes, self.stride = num_codes, stride
        self.embedding = nn.Embedding(num_codes, width)
        self.convs = nn.Sequential(
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1)
        )

    def forward(self, top: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """top [B, J] long -> [B, T, width] with T = ``length`` (default J * stride, all of it);
        raises ValueError when J * stride < T."""
        covered = top.shape[1] * self.stride
        length = covered if length is None else length
        if covered < length:
            raise ValueError(
                f"{top.shape[1]} top codes cover {covered} positions at stride "
                f"{self.stride}, fewer than the {length} to condition"
            )
        x = self.convs(self.embedding(top).transpose(1, 2))  # [B, width, J]
        return x.repeat_interleave(self.stride, dim=-1)[:, :, :length].transpose(1, 2)


class CodePrior(nn.Module, metaclass=abc.ABCMeta):
    """Base class: codes [B, T] + speakers [B] (+ top codes [B, ceil(T / stride)] when conditioned)
    -> next-code logits [B, T, K] (strictly causal in the codes). Grouped codes: [B, T, G] ->
    [B, T, G, K], logits[:, t, g] seeing codes[:, :t] and codes[:, t, :g]."""

    code_embedding: nn.Embedding  # (K + 1) codes per group (the start token last), built by the subclass

    def __init__(self, num_speakers: int, num_codes: int, top_codes: int = 0, top_stride: int = 1, groups: int = 1):
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be >= 1, not {groups}")
        self.num_speakers, self.num_codes, self.groups = num_speakers, num_codes, groups
        self.top_codes, self.top_stride = top_codes, top_stride
        self.top_conditioning: TopConditioning | None = None  # built last by the subclass, if conditioned
        self.group_embedding: nn.Embedding | None = None  # grouped codes only, built last

    def _build_top_conditioning(self, width: int) -> None:
        """Called at the end of a subclass's constructor: the optional modules draw their random
        initial weights last, so a prior's other weights depend only on the seed, whatever options
        it has."""
        if self.top_codes:
            self.top_conditioning = TopConditioning(self.top_codes, self.top_stride, width)

    def _build_group_embedding(self, hidden: int) -> None:
        """Grouped codes: the embeddings of a step's earlier groups, added to the hidden state
        [.., hidden] before the head (codes of group g at rows g*K .. g*K + K - 1). Built last."""
        if self.groups > 1:
            self.group_embedding = nn.Embedding((self.groups - 1) * self.num_codes, hidden)

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any],
        num_speakers: int,
        num_codes: int,
        top_codes: int = 0,
        top_stride: int = 1,
        groups: int = 1,
    ) -> CodePrior:
        """Build from a dict shaped like ``conf/prior/*.yaml`` (the ``arch`` key is ignored here)."""
        return cls(
            num_speakers,
            num_codes,
            **{k: v for k, v in dict(cfg).items() if k != "arch"},
            top_codes=top_codes,
            top_stride=top_stride,
            groups=groups,
        )

    # -- grouped codes: input embedding of a tuple, the head one group at a time ------------------

    def embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (grouped: [B, T, G], each in 0..K with K the start token) -> [B, T, width]."""
        if self.groups == 1:
            return self.code_embedding(tokens)
        offsets = torch.arange(self.groups, device=tokens.device) * (self.num_codes + 1)
        return self.code_embedding(tokens + offsets).sum(dim=-2)

    @abc.abstractmethod
    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., H] -> logits [..., G * K]."""

    def group_logits(self, hidden: torch.Tensor, earlier: torch.Tensor, group: int) -> torch.Tensor:
        """Logits [..., K] of ``group`` given the hidden state [..., H] and that step's codes of the
        groups before it, earlier [..., >= group]."""
        if group:
            if self.group_embedding is None:
                raise ValueError(f"a prior with groups={self.groups} has no group {group}")
            offsets = torch.arange(group, device=earlier.device) * self.num_codes
            hidden = hidden + self.group_embedding(earlier[..., :group] + offsets).sum(dim=-2)
        return self._head(hidden)[..., group * self.num_codes : (group + 1) * self.num_codes]

    def codes_logits(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: hidden [B, T, H] and the codes they predict -> logits [B, T, K]
        (grouped: [B, T, G, K])."""
        if self.groups == 1:
            return self._head(hidden)
        return torch.stack([self.group_logits(hidden, codes, g) for g in range(self.groups)], dim=-2)

    @abc.abstractmethod
    def step_hidden(self, state, prev_codes: torch.Tensor | None, speakers: torch.Tensor) -> torch.Tensor:
        """Feed ``prev_codes`` [B] (grouped: [B, G]; None: the start token), update ``state`` in
        place, return the hidden state [B, H] the next code's head reads."""

    def step(self, state, prev_codes: torch.Tensor | None, speakers: torch.Tensor) -> torch.Tensor:
        """One step of a single-codebook prior: the next code's logits [B, K] (grouped priors go
        through :meth:`step_hidden` and :meth:`group_logits`, as :func:`sample_codes` does)."""
        if self.groups > 1:
            raise ValueError(
                "a grouped prior predicts a step's codes one group at a time; use "
                "step_hidden and group_logits (see sample_codes)"
            )
        return self._head(self.step_hidden(state, prev_codes, speakers))

    @property
    def conditioned(self) -> bool:
        """True when the prior models bottom codes given top codes."""
        return self.top_conditioning is not None

    def top_inputs(self, top: torch.Tensor | None, length: int | None = None) -> torch.Tensor | None:
        """The conditioning added to the input embeddings: top [B, J] -> [B, length, width] (default
        length J * stride), or None for an unconditioned prior. Raises ValueError when a conditioned
        prior gets no top codes, or an unconditioned one gets some."""
        if self.top_conditioning is None:
            if top is not None:
                raise ValueError("this prior is not conditioned on top codes (top_codes=0); do not pass top")
            return None
        if top is None:
            raise ValueError(
                f"this prior is conditioned on top codes (top_codes={self.top_codes}, "
                f"stride {self.top_stride}); pass top=[B, ceil(T / stride)]"
            )
        return self.top_conditioning(top, length)

    @property
    def start_token(self) -> int:
        return self.num_codes

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def shift_right(self, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: codes [B, T] (grouped: [B, T, G]) -> inputs = (start, c_0, ..., c_{T-2})."""
        if codes.dim() == 3:
            return F.pad(codes[:, :-1], (0, 0, 1, 0), value=self.start_token)
        return F.pad(codes[:, :-1], (1, 0), value=self.start_token)

    def step_inputs(self, prev_codes: torch.Tensor | None, speakers: torch.Tensor) -> torch.Tensor:
        """The input token of one step [B] (grouped: [B, G]): the start token when ``prev_codes``
        is None."""
        if prev_codes is None:
            shape = speakers.shape if self.groups == 1 else (*speakers.shape, self.groups)
            return torch.full(shape, self.start_token, dtype=torch.long, device=speakers.device)
        return prev_codes

    @abc.abstractmethod
    def forward(self, codes: torch.Tensor, speakers: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, T], speakers [B], top [B, >= ceil(T / stride)] (conditioned priors only) ->
        logits [B, T, K]; ``logits[:, t]`` sees ``codes[:, :t]`` (and all of ``top``)."""

    @abc.abstractmethod
    def new_state(self, batch: int, device=None, top: torch.Tensor | None = None):
        """A fresh incremental-generation state (caches) for ``batch`` sequences; a conditioned prior
        needs the top codes [B, J] of the whole sequence to be generated (up to J * stride steps)."""


def top_column(state) -> torch.Tensor | None:
    """The state's conditioning at its current step: [B, width], or None when unconditioned."""
    if state.top is None:
        return None
    if state.t >= state.top.shape[1]:
        raise ValueError(
            f"the top codes given to new_state cover {state.top.shape[1]} steps; step {state.t} is past them"
        )
    return state.top[:, state.t]


# --------------------------------------------------------------------------------------------
# WaveNet prior


class WaveNetPriorState:
    """Per-layer ring buffers of past residual inputs (layer i: [B, R, (k-1)*d_i + 1]), as in
    ``vqspeech.inference.generate.IncrementalState``; ``t`` is the number of steps taken; ``top`` the upsampled
    top-code conditioning [B, J * stride, R] (None when unconditioned)."""

    def __init__(self, prior: WaveNetPrior, batch: int, device, dtype, top: torch.Tensor | None = None):
        self.buffers = [
            torch.zeros(batch, layer.residual_channels, layer.receptive_field + 1, device=device, dtype=dtype)
            for layer in residual_layers(prior.layers)
        ]
        self.t = 0
        self.top = top


class WaveNetPrior(CodePrior):
    """Causal WaveNet over codes: embedding (K codes + start) -> gated dilated layers with the speaker
    as global conditioning -> skip sum -> ReLU -> linear -> ReLU -> linear -> K logits.

    Dropout (if any) acts on the input embeddings and on the summed skips. Initialisation is PyTorch's
    default, as in the decoder.
    """

    def __init__(
        self,
        num_speakers: int,
        num_codes: int,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 64,
        kernel_size: int = 2,
        layers: int = 14,
        cycles: int = 2,
        global_channels: int = 32,
        dropout: float = 0.0,
        top_codes: int = 0,
        top_stride: int = 1,
        groups: int = 1,
    ):
        super().__init__(num_speakers, num_codes, top_codes, top_stride, groups)
        if layers % cycles:
            raise ValueError(f"prior layers={layers} is not a multiple of cycles={cycles}")
        self.code_embedding = nn.Embedding(groups * (num_codes + 1), residual_channels)
        self.speaker_embedding = nn.Embedding(num_speakers, global_channels)
        per_cycle = layers // cycles
        self.layers = nn.ModuleList(
            ResidualLayer(
                residual_channels,
                gate_channels,
                skip_channels,
                kernel_size,
                2 ** (i % per_cycle),
                local_channels=0,
                global_channels=global_channels,
            )
            for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(
            nn.ReLU(), nn.Linear(skip_channels, skip_channels), nn.ReLU(), nn.Linear(skip_channels, groups * num_codes)
        )
        self._build_top_conditioning(residual_channels)
        self._build_group_embedding(skip_channels)

    @property
    def receptive_field(self) -> int:
        """Input positions (the current one included) that one output depends on."""
        return 1 + sum(layer.receptive_field for layer in residual_layers(self.layers))

    def forward(self, codes: torch.Tensor, speakers: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, T] long, speakers [B], top [B, >= ceil(T / stride)] when conditioned -> logits
        [B, T, K]; any T."""
        x = self.embed_codes(self.shift_right(codes))  # [B, T, R]
        cond = self.top_inputs(top, codes.shape[1])
        if cond is not None:
            x = x + cond
        x = self.dropout(x).transpose(1, 2)  # [B, R, T]
        speaker = self.speaker_embedding(speakers)
        skips: torch.Tensor | int = 0
        for layer in residual_layers(self.layers):
            cond = layer.conditioning(None, speaker).expand(-1, -1, x.shape[-1])  # [B, gate, T], a view
            x, skip = layer(x, cond, hop_length=1)
            skips = skips + skip
        return self.codes_logits(_layer_sum(skips).transpose(1, 2), codes)

    def _head(self, skips: torch.Tensor) -> torch.Tensor:
        """Summed skips [..., S] -> logits [..., G * K]."""
        return self.output(self.dropout(skips * math.sqrt(1.0 / len(self.layers))))

    def new_state(self, batch: int, device=None, top: torch.Tensor | None = None) -> WaveNetPriorState:
        return WaveNetPriorState(self, batch, device, self.code_embedding.weight.dtype, self.top_inputs(top))

    def step_hidden(
        self, state: WaveNetPriorState, prev_codes: torch.Tensor | None, speakers: torch.Tensor
    ) -> torch.Tensor:
        """The summed skips [B, S] for the next code; prev_codes [B] (grouped [B, G]; None at the
        first step), speakers [B]. Updates ``state`` in place. Costs one column per layer, whatever
        the receptive field."""
        x = self.embed_codes(self.step_inputs(prev_codes, speakers))  # [B, R]
        cond = top_column(state)
        if cond is not None:
            x = x + cond
        speaker = self.speaker_embedding(speakers)
        skips: torch.Tensor | int = 0
        for layer, buffer in zip(residual_layers(self.layers), state.buffers, strict=True):
            size = buffer.shape[-1]
            buffer[:, :, state.t % size] = x
            taps = [(state.t - (layer.kernel_size - 1 - j) * layer.dilation) % size for j in range(layer.kernel_size)]
            x, skip = layer.step(buffer[:, :, taps], x, layer.conditioning(None, speaker)[:, :, 0])
            skips = skips + skip
        state.t += 1
        return _layer_sum(skips)


def _layer_sum(skips: torch.Tensor | int) -> torch.Tensor:
    """The skip sum of a stack of layers (0 + skip_1 + ...); the int 0 would mean no layers."""
    if not isinstance(skips, torch.Tensor):
        raise ValueError("a WaveNet prior needs at least one layer")
    return skips


# --------------------------------------------------------------------------------------------
# Transformer prior


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al., 2021), "rotate half" layout.
    x [B, H, T, hd], positions [T] (absolute), inv_freq [hd/2] -> [B, H, T, hd].

    Rotating queries and keys by their absolute positions makes their dot product depend only on
    the relative offset, so keys cached at any absolute position stay valid.
    """
    angles = positions.to(inv_freq.dtype)[:, None] * inv_freq  # [T, hd/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """One layer's keys and values for the last ``context`` positions: [B, H, context, hd] each."""

    def __init__(self, batch: int, heads: int, context: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, heads, context, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)


class TransformerPriorState:
    """A key/value cache per layer, the absolute position ``t`` of the next input and the upsampled
    top-code conditioning ``top`` [B, J * stride, d] (None when unconditioned)."""

    def __init__(self, prior: TransformerPrior, batch: int, device, dtype, top: torch.Tensor | None = None):
        head_dim = prior.d_model // prior.heads
        self.caches = [KVCache(batch, prior.heads, prior.context, head_dim, device, dtype) for _ in prior.blocks]
        self.t = 0
        self.top = top


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with RoPE and a sliding window of ``context`` positions."""

    inv_freq: torch.Tensor  # [hd/2] non-persistent buffer: the rotary frequencies

    def __init__(self, d_model: int, heads: int, context: int, dropout: float, rope_base: float):
        super().__init__()
        if d_model % heads or (d_model // heads) % 2:
            raise ValueError(f"d_model={d_model} must split into {heads} heads of even size")
        self.heads, self.context, self.dropout = heads, context, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)
        head_dim = d_model // heads
        self.register_buffer(
            "inv_freq", rope_base ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False
        )

    def _split(self, x: torch.Tensor, positions: torch.Tensor):
        """x [B, T, d] -> q, k, v [B, H, T, hd] with q and k rotated."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return apply_rotary(q, positions, self.inv_freq), apply_rotary(k, positions, self.inv_freq), v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """y [B, H, T, hd] -> [B, T, d] after the output projection."""
        batch, _, length, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, d] -> [B, T, d]; position t attends to t-context+1 .. t."""
        length = x.shape[1]
        q, k, v = self._split(x, torch.arange(length, device=x.device))
        dropout = self.dropout if self.training else 0.0
        if length <= self.context:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:  # longer than the window: the same banded mask that incremental steps see
            i = torch.arange(length, device=x.device)
            offset = i[:, None] - i[None, :]
            mask = (offset >= 0) & (offset < self.context)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self._merge(y)

    def step(self, x: torch.Tensor, cache: KVCache, t: int) -> torch.Tensor:
        """x [B, 1, d] at absolute position t -> [B, 1, d], appending to ``cache``."""
        q, k, v = self._split(x, torch.tensor([t], device=x.device))
        # ring buffer: with no mask, attention is a sum over keys, so their order does not matter and
        # the oldest entry can be overwritten in place (keys carry their own absolute rotation)
        slot = t % self.context
        cache.k[:, :, slot], cache.v[:, :, slot] = k[:, :, 0], v[:, :, 0]
        filled = min(t + 1, self.context)
        y = F.scaled_dot_product_attention(q, cache.k[:, :, :filled], cache.v[:, :, :filled])
        return self._merge(y)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, heads: int, context: int, mlp_ratio: int, dropout: float, rope_base: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, context, dropout, rope_base)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def step(self, x: torch.Tensor, cache: KVCache, t: int) -> torch.Tensor:
        x = x + self.attn.step(self.ln1(x), cache, t)
        return x + self.mlp(self.ln2(x))


class TransformerPrior(CodePrior):
    """Decoder-only transformer over codes: (code embedding + speaker embedding) -> pre-LN blocks with
    RoPE self-attention over a sliding window of ``context`` positions -> LayerNorm -> K logits.

    The speaker embedding is added to every input position (not a prefix), so it never leaves the
    attention window. Training crops are normally <= ``context`` (plain causal attention); longer
    inputs use the same banded window as ``step``, so forward and incremental steps agree at any length.
    """

    def __init__(
        self,
        num_speakers: int,
        num_codes: int,
        d_model: int = 128,
        layers: int = 4,
        heads: int = 4,
        context: int = 256,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        rope_base: float = 10000.0,
        top_codes: int = 0,
        top_stride: int = 1,
        groups: int = 1,
    ):
        super().__init__(num_speakers, num_codes, top_codes, top_stride, groups)
        self.d_model, self.heads, self.context = d_model, heads, context
        self.code_embedding = nn.Embedding(groups * (num_codes + 1), d_model)
        self.speaker_embedding = nn.Embedding(num_speakers, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, heads, context, mlp_ratio, dropout, rope_base) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, groups * num_codes)
        self.apply(self._init_weights)
        for block in self._typed_blocks():  # GPT-2: residual projections scaled by 1/sqrt(2 * layers)
            mlp_out = block.mlp[2]
            if not isinstance(mlp_out, nn.Linear):
                raise TypeError("Block.mlp[2] is not the MLP's output projection")
            for proj in (block.attn.proj, mlp_out):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))
        self._build_top_conditioning(d_model)
        if self.top_conditioning is not None:  # its embedding on the scale of the code embedding's
            self.top_conditioning.apply(self._init_weights)
        self._build_group_embedding(d_model)
        if self.group_embedding is not None:
            self.group_embedding.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _typed_blocks(self) -> list[Block]:
        """``blocks`` with their type (a ModuleList yields plain Modules)."""
        blocks = [block for block in self.blocks if isinstance(block, Block)]
        if len(blocks) != len(self.blocks):
            raise TypeError("TransformerPrior.blocks holds a module that is not a Block")
        return blocks

    @property
    def receptive_field(self) -> int:
        """Input positions (the current one included) that one output depends on: each layer looks
        back ``context - 1`` positions, and stacked windows add up."""
        return len(self.blocks) * (self.context - 1) + 1

    def _embed(self, tokens: torch.Tensor, speakers: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] (grouped [B, T, G]), speakers [B], top-code conditioning [B, T, d] or None
        -> [B, T, d]."""
        x = self.embed_codes(tokens) + self.speaker_embedding(speakers)[:, None]
        return self.dropout(x if cond is None else x + cond)

    def forward(self, codes: torch.Tensor, speakers: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, T] long, speakers [B], top [B, >= ceil(T / stride)] when conditioned -> logits
        [B, T, K]."""
        x = self._embed(self.shift_right(codes), speakers, self.top_inputs(top, codes.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.codes_logits(self.ln_f(x), codes)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm outputs [..., d] -> logits [..., G * K]."""
        return self.head(hidden)

    def new_state(self, batch: int, device=None, top: torch.Tensor | None = None) -> TransformerPriorState:
        return TransformerPriorState(self, batch, device, self.code_embedding.weight.dtype, self.top_inputs(top))

    def step_hidden(
        self, state: TransformerPriorState, prev_codes: torch.Tensor | None, speakers: torch.Tensor
    ) -> torch.Tensor:
        """The final-LayerNorm output [B, d] for the next code; prev_codes [B] (grouped [B, G]; None
        at the first step), speakers [B]. Updates ``state`` in place; beyond ``context`` steps the
        oldest cache entries are dropped."""
        cond = top_column(state)
        x = self._embed(
            self.step_inputs(prev_codes, speakers)[:, None], speakers, None if cond is None else cond[:, None]
        )
        for block, cache in zip(self._typed_blocks(), state.caches, strict=True):
            x = block.step(x, cache, state.t)
        state.t += 1
        return self.ln_f(x[:, 0])


# --------------------------------------------------------------------------------------------

PRIORS: dict[str, type[CodePrior]] = {"wavenet": WaveNetPrior, "transformer": TransformerPrior}


def build_prior(
    cfg: Mapping[str, Any], num_speakers: int, num_codes: int, top_codes: int = 0, top_stride: int = 1, groups: int = 1
) -> CodePrior:
    """Build the prior named by ``cfg["arch"]`` from a dict shaped like ``conf/prior/*.yaml``;
    ``top_codes`` > 0 conditions it on top codes of that codebook size, ``top_stride`` bottom codes
    per top code; ``groups`` > 1 models tuples of that many codes (K each) per step."""
    arch = cfg["arch"]
    if arch not in PRIORS:
        raise ValueError(f"unknown prior arch {arch!r}; expected one of {sorted(PRIORS)}")
    return PRIORS[arch].from_config(cfg, num_speakers, num_codes, top_codes, top_stride, groups)


def draw(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """One code per row of logits [B, K]: argmax at temperature 0, else a draw from the softmax of
    logits / temperature restricted to the ``top_k`` largest."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_codes(
    prior: CodePrior,
    speakers: torch.Tensor,
    length: int,
    *,
    top: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "draw",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral sampling. speakers [B] (and top codes [B, >= ceil(length / stride)] for a
    conditioned prior) -> (codes [B, length] (grouped: [B, length, G]), log-likelihood [B] in nats).

    The log-likelihood is that of the drawn codes under the untempered, unfiltered model (given the
    top codes). ``temperature`` 0 means argmax; ``top_k`` keeps only the k largest logits. Runs in
    eval mode; ``progress`` shows a bar over the steps, labelled ``desc``.
    """
    batch = speakers.shape[0]
    if top is not None and top.shape[1] * prior.top_stride < length:
        raise ValueError(f"{top.shape[1]} top codes at stride {prior.top_stride} cannot condition {length} codes")
    state = prior.new_state(batch, speakers.device, top=top)  # the conditioning has no dropout
    was_training = prior.training
    prior.eval()
    codes = torch.empty(batch, length, prior.groups, dtype=torch.long, device=speakers.device)
    log_likelihood = torch.zeros(batch, device=speakers.device)
    prev = None
    for t in tqdm(range(length), desc=desc, unit="code", disable=not progress, leave=False):
        hidden = prior.step_hidden(state, prev, speakers)
        for g in range(prior.groups):  # a grouped step's codes one after the other
            logits = prior.group_logits(hidden, codes[:, t], g).float()
            drawn = draw(logits, temperature, top_k, generator)
            log_likelihood += logits.log_softmax(dim=-1).gather(1, drawn[:, None]).squeeze(1)
            codes[:, t, g] = drawn
        prev = codes[:, t] if prior.groups > 1 else codes[:, t, 0]
    if prior.groups == 1:
        codes = codes[..., 0]
    prior.train(was_training)
    return codes, log_likelihood
