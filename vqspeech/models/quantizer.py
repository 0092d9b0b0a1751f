"""Vector quantisation with a straight-through gradient (van den Oord et al., 2017).

Options on one module (:class:`VectorQuantizer`): codebook + commitment loss, or EMA codebook
updates (VQ-VAE-2); initialisation from encoder outputs (sampled, or refined by k-means); dead
codes re-seeded from encoder outputs; nearest codes in whitened coordinates (a Mahalanobis
distance under the latents' running covariance). :class:`ProductQuantizer` composes G of them over slices of
the latent. Under torch.distributed the codebook statistics are all-reduced and random choices are
made on rank 0 and broadcast, so every process keeps the same codebook.

``model.quantizer.type`` names the quantizer in :data:`QUANTIZERS`; ``model.quantizer.groups`` > 1
makes a product of that many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


@dataclass
class QuantizerOutput:
    """What a quantizer returns for latents z [B, D, T]. Grouped codebooks (G groups of K codes):
    ``codes`` [B, T, G], ``usage`` [G * K] (group g's counts at g*K), ``perplexity`` that of the
    code tuples; the losses are means over all D channels."""

    quantized: torch.Tensor  # [B, D, T] codebook vectors, straight-through to z
    codes: torch.Tensor  # [B, T] long (grouped: [B, T, G])
    loss: torch.Tensor  # codebook + beta * commitment (EMA: beta * commitment)
    codebook_loss: torch.Tensor  # ||sg(z) - e||^2 (zero with EMA updates)
    commitment_loss: torch.Tensor  # ||z - sg(e)||^2
    perplexity: torch.Tensor  # exp(entropy of this batch's code (tuple) distribution)
    usage: torch.Tensor  # [K] counts in this batch (grouped: [G * K])
    dead_codes: int  # codes whose running usage fell below the threshold (training)
    reseeded: int  # dead codes re-seeded in this call


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code distribution given by usage counts [K]: K when uniform, 1 for one code."""
    probs = counts.float() / counts.sum().clamp_min(1.0)
    return torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())


@torch.no_grad()
def kmeans(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd's algorithm: x [N, D], initial centroids [K, D] -> centroids [K, D] after ``iters``
    assignment/update rounds; a centroid that loses all its points stays where it was."""
    centroids = centroids.clone()
    for _ in range(iters):
        distances = torch.addmm(centroids.pow(2).sum(1)[None], x, centroids.t(), alpha=-2.0)
        assign = distances.argmin(dim=1)
        counts = torch.bincount(assign, minlength=len(centroids)).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """z [B, D, T] -> nearest of K codebook vectors.

    Args:
        num_codes: K.
        dim: D, the latent size.
        beta: commitment weight.
        ema: update the codebook by exponential moving averages instead of the codebook loss.
        decay: EMA decay for the codebook statistics.
        init_from_data: set the codebook from the first training batch's encoder outputs.
        kmeans_iters: with ``init_from_data``, refine those sampled vectors by this many Lloyd
            (k-means) iterations on the same batch (0 = sampled vectors as they are).
        dead_code_threshold: a code is dead when its running usage falls below this fraction of
            the uniform share 1/K; dead codes are re-seeded from current encoder outputs (0 = off).
        usage_decay: decay of the running usage estimate.
        whiten: quantize u = (z - mean) W, W = cov^(-1/2) of the latents (running estimates,
            ``whiten_decay``), so every direction of the latent counts by its spread rather than its
            scale; the codebook lives in u's coordinates and ``quantized``/``lookup`` map back to z's.
        whiten_decay: decay of the running mean and covariance.
    """

    codebook: torch.Tensor  # [K, D]: an nn.Parameter, or with ``ema`` a buffer
    ema_count: torch.Tensor  # [K] buffer (``ema`` only)
    ema_sum: torch.Tensor  # [K, D] buffer (``ema`` only)
    usage_ema: torch.Tensor  # [K] buffer: running usage
    initialized: torch.Tensor  # bool buffer
    white_mean: torch.Tensor  # [D] buffer (``whiten`` only): running mean of z
    white_cov: torch.Tensor  # [D, D] buffer (``whiten`` only): running covariance of z
    white_matrix: torch.Tensor  # [D, D] buffer: W = cov^(-1/2) (symmetric)
    unwhite_matrix: torch.Tensor  # [D, D] buffer: W^-1 = cov^(1/2)

    def __init__(
        self,
        num_codes: int = 128,
        dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        init_from_data: bool = True,
        dead_code_threshold: float = 0.05,
        usage_decay: float = 0.99,
        kmeans_iters: int = 0,
        whiten: bool = False,
        whiten_decay: float = 0.99,
    ):
        super().__init__()
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, not {kmeans_iters}")
        self.whiten, self.whiten_decay = whiten, whiten_decay
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.num_groups = 1
        self.kmeans_iters = kmeans_iters
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        codebook = torch.randn(num_codes, dim) / dim**0.5
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("usage_ema", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("initialized", torch.tensor(not init_from_data))
        if whiten:
            self.register_buffer("white_mean", torch.zeros(dim))
            self.register_buffer("white_cov", torch.eye(dim))
            self.register_buffer("white_matrix", torch.eye(dim))
            self.register_buffer("unwhite_matrix", torch.eye(dim))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat [N, D] -> codes [N]: argmin ||z||^2 - 2 z.e + ||e||^2 with one matmul."""
        codebook = self.codebook.float()
        distances = torch.addmm(codebook.pow(2).sum(1)[None], flat.float(), codebook.t(), alpha=-2.0)
        return distances.argmin(dim=1)  # ||z||^2 is constant per row and left out

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] -> vectors [B, D, T] (in z's coordinates)."""
        return self.unwhitened(F.embedding(codes, self.codebook)).transpose(1, 2)

    def whitened(self, flat: torch.Tensor) -> torch.Tensor:
        """flat z [N, D] -> the coordinates the codebook lives in: (z - mean) W with ``whiten``, else z."""
        if not self.whiten:
            return flat
        return (flat - self.white_mean.to(flat.dtype)) @ self.white_matrix.to(flat.dtype)

    def unwhitened(self, flat: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`whitened`: u [N, D] -> u W^-1 + mean."""
        if not self.whiten:
            return flat
        return flat @ self.unwhite_matrix.to(flat.dtype) + self.white_mean.to(flat.dtype)

    def coordinates(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D, T] -> [B, D, T] in the coordinates codes are chosen in (whitened with ``whiten``)."""
        if not self.whiten:
            return z
        return self.whitened(z.transpose(1, 2)).transpose(1, 2)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        batch, dim, frames = z.shape
        flat = z.transpose(1, 2).reshape(-1, dim)  # 'b d t -> (b t) d'
        if self.whiten and self.training:
            self._update_whitening(flat.detach().float(), first=not bool(self.initialized))
        flat = self.whitened(flat)  # the losses and the straight-through estimator work in these coordinates
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        codes = self.nearest(flat.detach())
        usage = torch.bincount(codes, minlength=self.num_codes).float()
        quantized_flat = F.embedding(codes, self.codebook)  # looked up before this step's updates

        dead = reseeded = 0
        if self.training:
            global_usage = usage.clone()
            if _distributed():
                dist.all_reduce(global_usage)
            if self.ema:
                self._ema_update(flat.detach(), codes, global_usage)
            dead, reseeded = self._reseed_dead_codes(flat.detach(), global_usage)

        commitment = F.mse_loss(flat, quantized_flat.detach())
        if self.ema:
            codebook_loss = torch.zeros((), device=z.device)
        else:
            codebook_loss = F.mse_loss(quantized_flat, flat.detach())
        quantized_flat = flat + (quantized_flat - flat).detach()  # straight-through estimator
        quantized_flat = self.unwhitened(quantized_flat)  # = z + (e W^-1 + mean - z): the gradient passes to z

        return QuantizerOutput(
            quantized=quantized_flat.view(batch, frames, dim).transpose(1, 2),
            codes=codes.view(batch, frames),
            loss=codebook_loss + self.beta * commitment,
            codebook_loss=codebook_loss,
            commitment_loss=commitment,
            perplexity=perplexity(usage),
            usage=usage,
            dead_codes=dead,
            reseeded=reseeded,
        )

    @torch.no_grad()
    def _update_whitening(self, flat: torch.Tensor, first: bool) -> None:
        """Fold this batch's mean and covariance of z [N, D] into the running estimates (the first
        batch sets them), then W = cov^(-1/2) and W^-1 by one symmetric eigendecomposition."""
        count = torch.tensor(float(flat.shape[0]), device=flat.device)
        sums = torch.cat([flat.sum(0), (flat.t() @ flat).flatten()]).double()
        if _distributed():
            dist.all_reduce(count)
            dist.all_reduce(sums)
        dim = flat.shape[1]
        mean = sums[:dim] / count
        cov = sums[dim:].view(dim, dim) / count - torch.outer(mean, mean)
        rate = 1.0 if first else 1.0 - self.whiten_decay
        self.white_mean.mul_(1 - rate).add_(mean.float(), alpha=rate)
        self.white_cov.mul_(1 - rate).add_(cov.float(), alpha=rate)
        values, vectors = torch.linalg.eigh(self.white_cov.double())
        values = values.clamp_min(self.eps * values.max().clamp_min(self.eps))  # a flat direction is not blown up
        self.white_matrix.copy_((vectors * values.rsqrt()) @ vectors.t())
        self.unwhite_matrix.copy_((vectors * values.sqrt()) @ vectors.t())

    @torch.no_grad()
    def _sample_vectors(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` rows of ``flat`` chosen at random on rank 0 and broadcast to every rank."""
        if flat.shape[0] >= count:
            picked = flat[torch.randperm(flat.shape[0], device=flat.device)[:count]]
        else:
            picked = flat[torch.randint(flat.shape[0], (count,), device=flat.device)]
            picked = picked + 0.01 * picked.std() * torch.randn_like(picked)
        picked = picked.float().contiguous()
        if _distributed():
            dist.broadcast(picked, src=0)
        return picked

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        vectors = self._sample_vectors(flat, self.num_codes)
        if self.kmeans_iters:
            vectors = kmeans(flat.float(), vectors, self.kmeans_iters)
            if _distributed():  # each rank clustered its own batch: keep rank 0's codebook
                dist.broadcast(vectors, src=0)
        self.codebook.data.copy_(vectors)
        if self.ema:
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat.float())
        if _distributed():
            dist.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total  # Laplace
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def _reseed_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> tuple[int, int]:
        """Update the running usage; re-seed codes below the threshold. Returns (dead, re-seeded)."""
        probs = counts / counts.sum().clamp_min(1.0)
        self.usage_ema.mul_(self.usage_decay).add_(probs, alpha=1 - self.usage_decay)
        if self.dead_code_threshold <= 0:
            return 0, 0
        dead = self.usage_ema < self.dead_code_threshold / self.num_codes
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0, 0
        fresh = self._sample_vectors(flat, num_dead)
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        if self.ema:
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
        self.usage_ema[dead] = 1.0 / self.num_codes  # a grace period before it can count as dead
        return num_dead, num_dead


class ProductQuantizer(nn.Module):
    """G codebooks of K codes over G slices of the latent: a product of codebooks against collapse.

    z [B, D, T] is cut into G slices of D / G channels, each quantized by its own VectorQuantizer
    (every option of that module applies per group); codes are [B, T, G] and the effective
    vocabulary is the set of code tuples, up to K^G. ``perplexity`` is that of the tuples in the
    batch; ``usage`` concatenates the G groups' counts [G * K].
    """

    def __init__(
        self,
        num_codes: int = 128,
        dim: int = 64,
        groups: int = 2,
        part: type[VectorQuantizer] = VectorQuantizer,
        **options,
    ):
        super().__init__()
        if groups < 2 or dim % groups:
            raise ValueError(f"product quantization needs groups >= 2 dividing latent_dim={dim}, not {groups}")
        self.num_codes, self.dim, self.num_groups = num_codes, dim, groups
        self.quantizers = nn.ModuleList(part(num_codes, dim // groups, **options) for _ in range(groups))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        outs = [q(part) for q, part in zip(self.quantizers, z.chunk(self.num_groups, dim=1), strict=True)]
        codes = torch.stack([o.codes for o in outs], dim=-1)  # [B, T, G]
        _, tuple_counts = torch.unique(codes.reshape(-1, self.num_groups), dim=0, return_counts=True)
        mean = lambda name: torch.stack([getattr(o, name) for o in outs]).mean()  # noqa: E731
        return QuantizerOutput(
            quantized=torch.cat([o.quantized for o in outs], dim=1),
            codes=codes,
            loss=mean("loss"),  # the mean of per-slice MSEs = the MSE over all D channels
            codebook_loss=mean("codebook_loss"),
            commitment_loss=mean("commitment_loss"),
            perplexity=perplexity(tuple_counts),
            usage=torch.cat([o.usage for o in outs]),
            dead_codes=sum(o.dead_codes for o in outs),
            reseeded=sum(o.reseeded for o in outs),
        )

    def _parts(self) -> list[VectorQuantizer]:
        """The G quantizers, one per slice, with their type (a ModuleList yields plain Modules)."""
        parts = [q for q in self.quantizers if isinstance(q, VectorQuantizer)]
        if len(parts) != len(self.quantizers):
            raise TypeError("ProductQuantizer.quantizers holds a module that is not a VectorQuantizer")
        return parts

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, G] -> vectors [B, D, T]."""
        return torch.cat([q.lookup(codes[..., g]) for g, q in enumerate(self._parts())], dim=1)

    def coordinates(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D, T] -> each slice in the coordinates its quantizer chooses codes in."""
        parts = zip(self._parts(), z.chunk(self.num_groups, dim=1), strict=True)
        return torch.cat([q.coordinates(part) for q, part in parts], dim=1)


QUANTIZERS: dict[str, type[VectorQuantizer]] = {"vq": VectorQuantizer}
"""``model.quantizer.type`` -> quantizer class, built as ``cls(num_codes, dim, **options)``."""

Quantizer = VectorQuantizer | ProductQuantizer
"""What :func:`build_quantizer` returns: both map z [B, D, T] to a :class:`QuantizerOutput` and have
``lookup``, ``coordinates``, ``num_codes``, ``dim`` and ``num_groups``."""


def build_quantizer(num_codes: int, dim: int, type: str = "vq", groups: int = 1, **options) -> Quantizer:
    """The quantizer named ``type`` in :data:`QUANTIZERS`, or with ``groups`` > 1 a product of that
    many (:class:`ProductQuantizer`; it composes :class:`VectorQuantizer`)."""
    if type not in QUANTIZERS:
        raise ValueError(f"unknown quantizer type {type!r}; expected one of {sorted(QUANTIZERS)}")
    if groups == 1:
        return QUANTIZERS[type](num_codes, dim, **options)
    return ProductQuantizer(num_codes, dim, groups, part=QUANTIZERS[type], **options)
