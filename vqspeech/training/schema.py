"""What a valid training config is: the range of every value, checked before anything is written.

Unknown keys are refused when the config is composed (:func:`vqspeech.config.check_known_keys`);
here each known key's value is checked, one rule per key, plus the rules that relate two keys
(layers a multiple of cycles, strides that multiply to the hop length, ...). A failure is one
sentence naming the key: ``Config value model.decoder.layers=0 must be an integer >= 1.``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..data.codes import MAX_CODE_RATE_HZ, MAX_CODES
from ..errors import UserError
from ..fileio import is_finite_number, is_int
from ..models.prior import PRIORS
from ..models.quantizer import QUANTIZERS
from ..models.vqvae import DECODERS, OBJECTIVES

Rule = tuple[Callable[[Any], bool], str]
"""(check of the value, what the value must be)."""


def integer(at_least: int, at_most: int | None = None) -> Rule:
    if at_most is None:
        return lambda v: is_int(v) and v >= at_least, f"an integer >= {at_least}"
    return lambda v: is_int(v) and at_least <= v <= at_most, f"an integer from {at_least} to {at_most}"


WIDTH = 4096
"""Upper bound of every layer width: far above any model here, far below what exhausts memory
(a typo such as residual_channels=100000 asks for gigabytes before the first step)."""
DEPTH = 256
"""Upper bound of layer counts and dilation lists."""


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number in the interval from ``low`` to ``high`` (open at an end when asked)."""

    def ok(v: Any) -> bool:
        if not is_finite_number(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    return ok, f"a number in {left}{low:g}, {high:g}{right}"


def positive_ints(at_least: int = 1) -> Rule:
    """A non-empty list of at most :data:`DEPTH` integers from ``at_least`` to 65536."""
    return (
        lambda v: isinstance(v, list) and 0 < len(v) <= DEPTH and all(is_int(x) and at_least <= x <= 65536 for x in v),
        f"a non-empty list of at most {DEPTH} integers from {at_least} to 65536",
    )


def choice(*options: str) -> Rule:
    return lambda v: v in options, " or ".join(options)


BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
BETAS: Rule = (
    lambda v: isinstance(v, list) and len(v) == 2 and all(is_finite_number(b) and 0 <= b < 1 for b in v),
    "two numbers in [0, 1)",
)

MAX_BATCH_SAMPLES = 1 << 21
"""Audio samples in one VQ-VAE training batch, at most: 64 crops of 2 s at 16 kHz. A WaveNet keeps
every layer's activations per sample, so a typo such as crop_seconds=500 would exhaust memory."""

MAX_LAYERS_PER_CYCLE = 16
"""A WaveNet's dilations double within a cycle, so its layers per cycle are bounded: 16 reaches a
dilation of 2^15 (the paper's decoder has 10 per cycle; 2^255 would exhaust memory in padding)."""

MAX_PRIOR_BATCH_CODES = 1 << 18
"""Codes in one prior training batch (batch_size x crop_frames), at most."""

MAX_ATTENTION_SCORES = 1 << 28
"""batch_size x heads x crop_frames^2 of a transformer prior, at most (1 GiB of float32 scores)."""

MAX_STEPS = 10**9
"""Upper bound of step counts: years of training at any speed (a typo of extra digits otherwise
asks for a run that never ends, its schedule spread over it)."""

TRAIN_RULES: dict[str, Rule] = {
    "seed": integer(0, 2**32 - 1),
    "train.batch_size": integer(1, 65536),
    "train.crop_seconds": number(0, 600, low_open=True),
    "train.speakers_per_batch": integer(0),
    "train.lr": number(0, 1, low_open=True),
    "train.betas": BETAS,
    "train.weight_decay": number(0, 1),
    "train.schedule": choice("constant", "cosine"),
    "train.amp": BOOL,
    "train.threads": integer(0, 1024),
    "train.warmup_steps": integer(0, MAX_STEPS),
    "train.lr_min_ratio": number(0, 1),
    "train.max_steps": integer(1, MAX_STEPS),
    "train.max_minutes": (lambda v: v is None or (is_finite_number(v) and v > 0), "a positive number or null"),
    "train.grad_clip": number(0, low_open=True),
    "train.num_workers": integer(0, 64),
    "train.log_every": integer(1),
    "train.valid_every": integer(1),
    "train.valid_max_utterances": integer(1),
    "train.media_every": integer(0),
    "train.media_seconds": number(0, 600, low_open=True),
    "train.checkpoint_every": integer(1),
}

UNITS_FROM_RULE: Rule = (lambda v: v is None or (isinstance(v, str) and bool(v)), "null or a path")

MODEL_RULES: dict[str, Rule] = {
    "model.sample_rate": integer(1000, 192000),
    "model.hop_length": integer(1),
    "model.num_codes": integer(2, MAX_CODES),
    "model.latent_dim": integer(1, WIDTH),
    "model.jitter": number(0, 1),
    "model.encoder.frontend": choice("mel", "conv"),
    "model.encoder.n_mels": integer(1, 512),
    "model.encoder.n_fft": (
        lambda v: v is None or (is_int(v) and 2 <= v <= 65536),
        "null or an integer from 2 to 65536",
    ),
    "model.encoder.strides": positive_ints(1),
    "model.encoder.channels": integer(1, WIDTH),
    "model.encoder.dilations": positive_ints(1),
    "model.encoder.normalize": BOOL,
    "model.encoder.warp": number(0, 0.5),
    "model.encoder.cepstra": integer(0, 512),
    "model.quantizer.type": choice(*QUANTIZERS),
    "model.quantizer.beta": number(0),
    "model.quantizer.ema": BOOL,
    "model.quantizer.decay": number(0, 1, low_open=True, high_open=True),
    "model.quantizer.init_from_data": BOOL,
    "model.quantizer.kmeans_iters": integer(0, 1000),
    "model.quantizer.groups": integer(1, 64),
    "model.quantizer.dead_code_threshold": number(0, 1),
    "model.quantizer.usage_decay": number(0, 1, low_open=True, high_open=True),
    "model.quantizer.whiten": BOOL,
    "model.quantizer.whiten_decay": number(0, 1, low_open=True, high_open=True),
    "model.top.stride": (lambda v: is_int(v) and (v == 0 or v >= 2), "0 (one level) or an integer >= 2"),
    "model.top.num_codes": integer(2, MAX_CODES),
    "model.top.channels": integer(1, WIDTH),
    "model.top.dilations": positive_ints(1),
    "model.decoder_type": choice(*DECODERS),
    "model.objective": choice(*OBJECTIVES),
    "model.speaker_adversary.weight": number(0, 100),
    "model.speaker_adversary.hidden": integer(1, WIDTH),
    "model.speaker_encoder.share": number(0, 1, high_open=True),
    "model.speaker_encoder.reference_seconds": number(0.1, 60),
    "model.speaker_encoder.n_mels": integer(1, 512),
    "model.speaker_encoder.channels": integer(1, WIDTH),
    "model.speaker_encoder.dilations": positive_ints(1),
}

MEL_DECODER_RULES: dict[str, Rule] = {
    "model.mel_decoder.n_mels": integer(1, 512),
    "model.mel_decoder.channels": integer(1, WIDTH),
    "model.mel_decoder.dilations": positive_ints(1),
    "model.mel_decoder.global_channels": integer(1, WIDTH),
}

CPC_RULES: dict[str, Rule] = {
    "model.cpc.context_channels": integer(1, WIDTH),
    "model.cpc.prediction_steps": integer(1, 100),
    "model.cpc.negatives": integer(1, 1000),
}

WAVENET_DECODER_RULES: dict[str, Rule] = {
    f"model.decoder.{key}": integer(1, DEPTH if key in ("layers", "cycles") else WIDTH)
    for key in (
        "residual_channels",
        "gate_channels",
        "skip_channels",
        "layers",
        "cycles",
        "local_channels",
        "global_channels",
    )
} | {"model.decoder.kernel_size": integer(2, 16)}

CONV_DECODER_RULES: dict[str, Rule] = {
    "model.conv_decoder.channels": integer(1, WIDTH),
    "model.conv_decoder.upsample_strides": positive_ints(1),
    "model.conv_decoder.upsample_kernel_sizes": (
        lambda v: v is None or (isinstance(v, list) and all(is_int(k) and k >= 1 for k in v)),
        "null or a list of integers >= 1",
    ),
    "model.conv_decoder.resblock_kernel_sizes": positive_ints(1),
    "model.conv_decoder.resblock_dilations": (
        lambda v: isinstance(v, list) and bool(v) and all(positive_ints(1)[0](d) for d in v),
        "a non-empty list of non-empty lists of integers >= 1",
    ),
    "model.conv_decoder.global_channels": integer(1, WIDTH),
}

ADVERSARIAL_RULES: dict[str, Rule] = {
    "train.adversarial.warmup_steps": integer(0),
    "train.adversarial.mel_weight": number(0, low_open=True),
    "train.adversarial.fm_weight": number(0),
    "train.adversarial.adv_weight": number(0),
    "train.adversarial.adaptive_weight": BOOL,
    "train.adversarial.max_weight": number(0, low_open=True),
    "train.adversarial.mpd": BOOL,
    "train.adversarial.msd": BOOL,
    "train.adversarial.d_lr": number(0, 1, low_open=True),
    "train.adversarial.d_betas": BETAS,
    "train.adversarial.d_weight_decay": number(0, 1),
}

PRIOR_RULES: dict[str, Rule] = {
    "data.crop_frames": integer(2, 65536),
    "data.level": choice("bottom", "top"),
    "prior.arch": choice(*PRIORS),
    "prior.dropout": number(0, 1, high_open=True),
}

PRIOR_ARCH_RULES: dict[str, dict[str, Rule]] = {
    "transformer": {
        **{f"prior.{k}": integer(1, WIDTH) for k in ("d_model", "heads", "mlp_ratio")},
        "prior.layers": integer(1, DEPTH),
        "prior.context": integer(1, 65536),
        "prior.rope_base": number(1, low_open=True),
    },
    "wavenet": {
        **{
            f"prior.{k}": integer(1, DEPTH if k in ("layers", "cycles") else WIDTH)
            for k in ("residual_channels", "gate_channels", "skip_channels", "layers", "cycles", "global_channels")
        },
        "prior.kernel_size": integer(1, 16),
    },
}


def _get(cfg: dict, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = value[part]
    return value


def check_rules(cfg: dict[str, Any], rules: dict[str, Rule]) -> None:
    """UserError (one sentence naming the key) for the first value that breaks its rule or is missing."""
    for key, (ok, what) in rules.items():
        try:
            value = _get(cfg, key)
        except (KeyError, TypeError):
            raise UserError(f"Config value {key} is missing; add it to the config or pass {key}=VALUE.") from None
        if not ok(value):
            raise UserError(f"Config value {key}={value!r} must be {what}.")


def _relation(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise UserError(f"Config value {key}={value!r} must {what}.")


def check_vqvae_config(cfg: dict[str, Any]) -> None:
    """Every value of a VQ-VAE training config (``conf/config.yaml``) in range, before any work."""
    check_rules(cfg, {**TRAIN_RULES, "train.units_from": UNITS_FROM_RULE, **MODEL_RULES})
    model = cfg["model"]
    if model["objective"] == "mel":
        check_rules(cfg, MEL_DECODER_RULES)
    if model["objective"] == "cpc":
        check_rules(cfg, CPC_RULES)
        _relation(
            cfg["train"]["speakers_per_batch"] > 0,
            "train.speakers_per_batch",
            cfg["train"]["speakers_per_batch"],
            "be at least 1 with model.objective=cpc (its negatives come from crops of the same speaker)",
        )
    per_speaker = cfg["train"]["speakers_per_batch"]
    if per_speaker:
        batch = cfg["train"]["batch_size"]
        _relation(
            batch % per_speaker == 0,
            "train.speakers_per_batch",
            per_speaker,
            f"divide train.batch_size={batch}",
        )
    batch_samples = cfg["train"]["batch_size"] * cfg["train"]["crop_seconds"] * model["sample_rate"]
    _relation(
        batch_samples <= MAX_BATCH_SAMPLES,
        "train.crop_seconds",
        cfg["train"]["crop_seconds"],
        f"keep train.batch_size x crop samples at most {MAX_BATCH_SAMPLES:,} (now {batch_samples:,.0f}); "
        "lower train.batch_size or train.crop_seconds",
    )
    hop, latent = model["hop_length"], model["latent_dim"]
    groups = model["quantizer"]["groups"]
    _relation(
        hop <= model["sample_rate"],
        "model.hop_length",
        hop,
        "be at most model.sample_rate (at least one code a second)",
    )
    _relation(
        model["sample_rate"] / hop <= MAX_CODE_RATE_HZ,
        "model.hop_length",
        hop,
        f"give at most {MAX_CODE_RATE_HZ:g} codes a second (model.sample_rate / model.hop_length)",
    )
    default_bins = max(512, 1 << (2 * hop - 1).bit_length()) // 2 + 1  # LogMelFrontend's default FFT
    if model["encoder"]["frontend"] == "mel":
        bins = (model["encoder"]["n_fft"] // 2 + 1) if model["encoder"]["n_fft"] else default_bins
        _relation(
            model["encoder"]["n_mels"] <= bins,
            "model.encoder.n_mels",
            model["encoder"]["n_mels"],
            f"be at most the {bins} frequency bins of its FFT",
        )
        _relation(
            model["encoder"]["cepstra"] <= model["encoder"]["n_mels"],
            "model.encoder.cepstra",
            model["encoder"]["cepstra"],
            f"be at most model.encoder.n_mels={model['encoder']['n_mels']} (a DCT of that many log-mel bands)",
        )
    if model["objective"] == "mel":
        _relation(
            model["mel_decoder"]["n_mels"] <= default_bins,
            "model.mel_decoder.n_mels",
            model["mel_decoder"]["n_mels"],
            f"be at most the {default_bins} frequency bins of its FFT",
        )
    _relation(latent % groups == 0, "model.quantizer.groups", groups, f"divide model.latent_dim={latent}")
    if model["encoder"]["frontend"] == "conv":
        _relation(
            not model["encoder"]["warp"],
            "model.encoder.warp",
            model["encoder"]["warp"],
            "be 0 with the conv front end (the warp acts on the mel front end's spectrum)",
        )
        _relation(
            not model["encoder"]["cepstra"],
            "model.encoder.cepstra",
            model["encoder"]["cepstra"],
            "be 0 with the conv front end (cepstra are of the mel front end's spectrum)",
        )
        strides = model["encoder"]["strides"]
        _relation(
            math.prod(strides) == hop,
            "model.encoder.strides",
            strides,
            f"multiply to model.hop_length={hop} (the conv front end's downsampling)",
        )
    if model["decoder_type"] == "wavenet":
        check_rules(cfg, WAVENET_DECODER_RULES)
        decoder = model["decoder"]
        _relation(
            decoder["layers"] % decoder["cycles"] == 0,
            "model.decoder.cycles",
            decoder["cycles"],
            f"divide model.decoder.layers={decoder['layers']}",
        )
        _relation(
            decoder["layers"] // decoder["cycles"] <= MAX_LAYERS_PER_CYCLE,
            "model.decoder.cycles",
            decoder["cycles"],
            f"be at least model.decoder.layers / {MAX_LAYERS_PER_CYCLE} (dilations double within a cycle)",
        )
        _relation(
            decoder["gate_channels"] % 2 == 0,
            "model.decoder.gate_channels",
            decoder["gate_channels"],
            "be even (half tanh, half sigmoid)",
        )
    else:
        check_rules(cfg, {**CONV_DECODER_RULES, **ADVERSARIAL_RULES})
        conv = model["conv_decoder"]
        strides = conv["upsample_strides"]
        _relation(
            math.prod(strides) == hop,
            "model.conv_decoder.upsample_strides",
            strides,
            f"multiply to model.hop_length={hop}",
        )
        _relation(
            len(conv["resblock_kernel_sizes"]) == len(conv["resblock_dilations"]),
            "model.conv_decoder.resblock_dilations",
            conv["resblock_dilations"],
            "have one entry per resblock kernel size",
        )
        adversarial = cfg["train"]["adversarial"]
        _relation(
            adversarial["mpd"] or adversarial["msd"],
            "train.adversarial.msd",
            adversarial["msd"],
            "be true when train.adversarial.mpd is false (enable at least one discriminator)",
        )


def check_prior_config(cfg: dict[str, Any]) -> None:
    """Every value of a prior training config (``conf/prior_train.yaml``) in range, before any work."""
    check_rules(
        cfg,
        {
            "seed": TRAIN_RULES["seed"],
            **{k: r for k, r in TRAIN_RULES.items() if k.startswith("train.")},
            **PRIOR_RULES,
        },
    )
    prior = cfg["prior"]
    check_rules(cfg, PRIOR_ARCH_RULES[prior["arch"]])
    batch, crop = cfg["train"]["batch_size"], cfg["data"]["crop_frames"]
    _relation(
        batch * crop <= MAX_PRIOR_BATCH_CODES,
        "data.crop_frames",
        crop,
        f"keep train.batch_size x data.crop_frames at most {MAX_PRIOR_BATCH_CODES:,} (now {batch * crop:,})",
    )
    if prior["arch"] == "transformer":
        _relation(
            batch * prior["heads"] * crop * crop <= MAX_ATTENTION_SCORES,
            "data.crop_frames",
            crop,
            f"keep train.batch_size x prior.heads x data.crop_frames^2 at most {MAX_ATTENTION_SCORES:,} "
            "(the attention scores)",
        )
        _relation(
            cfg["data"]["crop_frames"] <= prior["context"],
            "data.crop_frames",
            cfg["data"]["crop_frames"],
            f"be at most prior.context={prior['context']} (the transformer's context)",
        )
        heads, width = prior["heads"], prior["d_model"]
        _relation(
            width % heads == 0 and (width // heads) % 2 == 0,
            "prior.d_model",
            width,
            f"split into prior.heads={heads} heads of even size",
        )
    else:
        _relation(
            prior["layers"] % prior["cycles"] == 0,
            "prior.cycles",
            prior["cycles"],
            f"divide prior.layers={prior['layers']}",
        )
        _relation(
            prior["layers"] // prior["cycles"] <= MAX_LAYERS_PER_CYCLE,
            "prior.cycles",
            prior["cycles"],
            f"be at least prior.layers / {MAX_LAYERS_PER_CYCLE} (dilations double within a cycle)",
        )
