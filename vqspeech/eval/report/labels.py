"""The report's words: row labels and directions, probe columns, plot captions, which command
writes each input, and the methods and tools the page credits."""

from __future__ import annotations

# Which recipe stage / command writes each input (shown when it is missing).
PRODUCERS = {
    "train_summary": "recipe stage 2 (`vqspeech train EXP_DIR ...`)",
    "metrics": "recipe stage 8 (`vqspeech evaluate loss EXP_DIR --split test --out EXP_DIR/metrics.json`)",
    "probe": "recipe stage 8 (`vqspeech evaluate probe --codes EXP_DIR/codes --manifest M --name vqvae "
    "--out EXP_DIR/probe/vqvae.json`; the baseline: `vqspeech baseline mfcc-kmeans`, then "
    "`vqspeech evaluate probe ... --name mfcc-kmeans`)",
    "eval_convert": "recipe stage 8 (`vqspeech evaluate conversion EXP_DIR`)",
    "convert": "recipe stage 4 (`vqspeech convert EXP_DIR MANIFEST --speaker S -o EXP_DIR/convert/S`)",
    "prior_samples": "recipe stages 6-7 (`vqspeech prior train`, then "
    "`vqspeech prior sample EXP_DIR/prior --speaker S -o EXP_DIR/prior_samples/S`)",
    "prepare": "recipe stage 1 (`vqspeech prepare CORPUS OUT --layout NAME`)",
}


# --- labels: (label, direction) where direction is "up", "down" or "" ------------------------------

TRAIN_LABELS = {
    "step": ("Training steps", ""),
    "minutes": ("Training time (minutes)", ""),
    "valid_bits_per_sample": ("Validation cross-entropy (bits per sample)", "down"),
    "valid_mel_loss": ("Validation multi-scale log-mel L1", "down"),
    "valid_perplexity": ("Validation codebook perplexity", "up"),
    "valid_codes_used": ("Validation codes used", "up"),
    "valid_utterances": ("Validation utterances", ""),
    "valid_seconds": ("Validation audio (s)", ""),
}
METRIC_LABELS = {
    "bits_per_sample": ("Cross-entropy, teacher forced (bits per sample)", "down"),
    "mel_loss": ("Multi-scale log-mel L1 of the decoded audio", "down"),
    "perplexity": ("Codebook perplexity", "up"),
    "codes_used": ("Codes used", "up"),
    "utterances": ("Utterances", ""),
    "seconds": ("Audio (s)", ""),
}
# Probe rows: key -> (label, direction, kind). kind "pct": a fraction shown as a percentage.
PROBE_ROWS = {
    "accuracy": ("Frame phone accuracy (held-out code \u2192 phone mapping)", "up", "pct"),
    "pnmi": ("Phone-normalised mutual information (PNMI)", "up", "num"),
    "accuracy_no_silence": ("Frame phone accuracy, speech frames only (silence excluded)", "up", "pct"),
    "pnmi_no_silence": ("PNMI, speech frames only (silence excluded)", "up", "num"),
    "phone_purity": ("Phone purity (the mapping scored on its own frames)", "up", "pct"),
    "cluster_purity": ("Cluster purity (frames whose code is their phone's most frequent)", "up", "pct"),
    "abx_within": ("ABX error, within speaker", "down", "pct"),
    "abx_across": ("ABX error, across speakers", "down", "pct"),
    "abx_within_triphone": ("ABX error, within speaker (triphones)", "down", "pct"),
    "abx_across_triphone": ("ABX error, across speakers (triphones)", "down", "pct"),
    "abx_within_latents": ("ABX error, within speaker (continuous features)", "down", "pct"),
    "abx_across_latents": ("ABX error, across speakers (continuous features)", "down", "pct"),
    "abx_within_triphone_latents": ("ABX error, within speaker, triphones (continuous features)", "down", "pct"),
    "abx_across_triphone_latents": ("ABX error, across speakers, triphones (continuous features)", "down", "pct"),
    "linear_probe_accuracy": ("Linear probe phone accuracy (continuous features)", "up", "pct"),
    "speaker_id_acc": ("Speaker-ID accuracy from the units (lower: less speaker information)", "down", "pct"),
    "speaker_id_acc_input": ("Speaker-ID accuracy from the input features (reference)", "", "pct"),
    "speaker_id_chance": ("Speaker-ID chance level (largest speaker's share)", "", "pct"),
    "codes_used": ("Codes used", "", "int"),
    "K": ("Codebook size K", "", "int"),
    "num_phone_classes": ("Phone classes", "", "int"),
    "num_frames": ("Frames scored", "", "int"),
    "num_frames_no_silence": ("Speech frames scored (silence excluded)", "", "int"),
    "num_utterances": ("Utterances", "", "int"),
    "num_speakers": ("Speakers", "", "int"),
    "code_rate_hz": ("Code rate (Hz)", "", "num"),
    "num_items": ("ABX items", "", "int"),
    "num_items_triphone": ("ABX items (triphones)", "", "int"),
}
PROBE_SYSTEMS = {"vqvae": "VQ-VAE codes", "mfcc-kmeans": "MFCC k-means"}
PROBE_BASELINES = {"random_codes": "Random codes", "majority_phone": "Majority phone"}
PLOT_LABELS = {"code_usage": "code usage", "code_phone": "codes vs phones", "phone_accuracy": "accuracy per phone"}
CONVERT_LABELS = {
    "conversion_speaker_accuracy": ("Conversions closer to the target speaker than to the source", "up"),
    "num_conversions_scored": ("Conversions scored", ""),
    "num_requested": ("Utterances requested", ""),
    "num_items": ("Utterances evaluated", ""),
    "sample_rate": ("Sample rate (Hz)", ""),
    "seed": ("Seed", ""),
    "items": ("Items", ""),
    "utterances": ("Utterances", ""),
    "speakers": ("Speakers", ""),
    "seconds": ("Audio (s)", ""),
}
ARROWS = {"up": ("\u2191", "higher is better"), "down": ("\u2193", "lower is better")}

# Methods and tools the page credits: (name, authors and licence, what it is used for, where).
TOOLS = [
    (
        "VQ-VAE",
        "A. van den Oord, O. Vinyals and K. Kavukcuoglu, \u201cNeural Discrete Representation "
        "Learning\u201d, NeurIPS 2017",
        "the method this toolkit implements",
        "https://arxiv.org/abs/1711.00937",
    ),
    (
        "pocketsphinx",
        "CMU Sphinx (D. Huggins-Daines et al.), BSD-style licence, with its US English models",
        "phone alignments for the probe; speech recognition for the word error rates",
        "https://github.com/cmusphinx/pocketsphinx",
    ),
    (
        "Resemblyzer",
        "Resemble AI (C. Jemine), Apache-2.0, a GE2E speaker encoder (Wan et al., 2018)",
        "speaker embeddings for the speaker similarity of conversions",
        "https://github.com/resemble-ai/Resemblyzer",
    ),
]
