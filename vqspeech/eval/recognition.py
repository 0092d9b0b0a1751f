"""Offline word recognition with pocketsphinx (bundled US English model) and word error rate.

    rec = Recognizer()                                  # open vocabulary: pocketsphinx's en-us LM
    rec = Recognizer(digits=True, single_word=True)     # one of zero..nine (FSDD: a digit per file)
    rec = Recognizer(sentences=corpus_texts)            # a bigram LM of the corpus's own sentences
    words = rec.transcribe(audio, sample_rate)          # ["seven"]
    errors, n = word_errors(normalize_words("Seven", digits=True), words)

Audio is resampled to 16 kHz (pocketsphinx does not work at 8 kHz), scaled to -20 dBFS RMS, padded
with 0.3 s of silence on each side and given fixed-seed dither of 3e-3 standard deviation (about
-50 dBFS, 30 dB below the speech). The dither matters twice: exact digital silence makes
pocketsphinx's features degenerate (see :mod:`vqspeech.data.align`), and for band-limited audio
(8 kHz corpora upsampled to 16 kHz, with nothing above 4 kHz) a noise floor in the empty band
brings it closer to what the acoustic model was trained on. Measured on 150 random FSDD
recordings with the single-digit grammar: 69 % correct without padding and with 1-LSB dither,
83 % with these settings; a grammar allowing digit sequences (``<digit>+``) got 58 %.

With ``sentences``, the language model is a bigram model of those transcripts (absolute discounting,
backed off to their unigrams; ``bigram_arpa``) and words missing from pocketsphinx's dictionary get
an espeak-ng pronunciation. pocketsphinx's general en-us model knows little of a small corpus's
sentences (espeak-voiced demo sentences came out with a word error of 1.0); a closed-domain model
measures what matters here, how much of the speech survives reconstruction and conversion, with
the original recordings' error as the floor.

In digits mode the vocabulary is restricted by a JSGF grammar to ``zero`` .. ``nine`` and ``oh``;
``oh`` is reported as ``zero``, and digit characters in reference texts (``"7"``) are read as words.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pocketsphinx import Decoder

from ..audio import normalize_level, resample
from ..data.align import ALIGN_RATE, decode_pcm, espeak_pronunciation, is_word, pcm16, transcript_words, word_name
from ..errors import UserError, first_line

RATE = ALIGN_RATE
"""pocketsphinx's acoustic model rate (16 kHz)."""

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

PAD_SECONDS = 0.3
DITHER = 3e-3

_ALIASES = {"oh": "zero", "o": "zero", **{str(i): w for i, w in enumerate(DIGIT_WORDS)}}


def _digit_grammar(single_word: bool) -> str:
    alternatives = " | ".join((*DIGIT_WORDS, "oh"))
    body = "<digit>" if single_word else "<digit>+"
    return f"#JSGF V1.0;\ngrammar digits;\n<digit> = {alternatives} ;\npublic <utterance> = {body} ;\n"


def normalize_words(text: str | None, digits: bool = False) -> list[str]:
    """A transcript -> lower-case words; with ``digits``, ``oh`` and ``0``..``9`` become digit words.

    Digit strings are split into single digits in digits mode (``"42"`` -> ``four two``)."""
    if not text:
        return []
    words = transcript_words(text)
    if not digits:
        return words
    out: list[str] = []
    for word in words:
        if word.isdigit():
            out.extend(DIGIT_WORDS[int(c)] for c in word)
        else:
            out.append(_ALIASES.get(word, word))
    return out


def bigram_arpa(sentences: Sequence[Sequence[str]], discount: float = 0.5) -> str:
    """An ARPA bigram language model of word sequences: absolute discounting, unigram back-off.

    p(w | v) = (c(v, w) - D) / c(v) for seen pairs; the mass D * types(v) / c(v) left over goes to
    the unigram distribution of the words never seen after v (the back-off weight renormalises).
    """
    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    for words in sentences:
        tokens = ["<s>", *words, "</s>"]
        unigrams.update(tokens[1:])
        bigrams.update(zip(tokens[:-1], tokens[1:], strict=True))
    if not bigrams:
        raise UserError("No transcript has any word; a language model needs some text.")
    total = sum(unigrams.values())
    p_uni = {w: c / total for w, c in unigrams.items()}
    history_counts: Counter = Counter()
    followers: dict[str, list[str]] = {}
    for (v, w), c in bigrams.items():
        history_counts[v] += c
        followers.setdefault(v, []).append(w)
    backoff = {}
    for v, seen in followers.items():
        left = discount * len(seen) / history_counts[v]
        unseen_mass = 1.0 - sum(p_uni[w] for w in seen)
        backoff[v] = left / unseen_mass if unseen_mass > 1e-12 else 1e-12
    vocabulary = ["<s>", *sorted(unigrams)]
    lines = ["\\data\\", f"ngram 1={len(vocabulary)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for w in vocabulary:
        prob = -99.0 if w == "<s>" else math.log10(p_uni[w])
        bow = f"\t{math.log10(backoff[w]):.6f}" if w in backoff else ""
        lines.append(f"{prob:.6f}\t{w}{bow}")
    lines += ["", "\\2-grams:"]
    for (v, w), c in sorted(bigrams.items()):
        lines.append(f"{math.log10((c - discount) / history_counts[v]):.6f}\t{v} {w}")
    return "\n".join(lines + ["", "\\end\\", ""])


def is_digit_transcript(text: str | None) -> bool:
    """True for a transcript that is exactly one digit (``"seven"``, ``"7"``, ``"oh"``)."""
    words = normalize_words(text, digits=True)
    return len(words) == 1 and words[0] in DIGIT_WORDS


class Recognizer:
    """pocketsphinx decoding of one utterance at a time (not thread-safe; one per process).

    ``digits`` restricts the vocabulary to the digit words; ``single_word`` then expects exactly one
    digit per utterance (much more accurate when that is true, as in FSDD). ``sentences`` (texts)
    replaces the general language model by a bigram model of those texts."""

    def __init__(
        self,
        digits: bool = False,
        single_word: bool = False,
        *,
        sentences: Sequence[str] | None = None,
        pad_seconds: float = PAD_SECONDS,
        dither: float = DITHER,
        seed: int = 0,
    ):
        if single_word and not digits:
            raise ValueError("single_word applies to the digits vocabulary only")
        if digits and sentences is not None:
            raise ValueError("give either digits or sentences, not both")
        self.digits, self.single_word = digits, single_word
        self.pad_seconds, self.dither, self.seed = pad_seconds, dither, seed
        if digits:
            self.decoder = Decoder(samprate=RATE, lm=None, loglevel="FATAL")
            self.decoder.add_jsgf_string("digits", _digit_grammar(single_word))
            self.decoder.activate_search("digits")
        elif sentences is not None:
            word_lists = [normalize_words(text) for text in sentences]
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "corpus.arpa"
                path.write_text(bigram_arpa([w for w in word_lists if w]))
                self.decoder = Decoder(samprate=RATE, lm=str(path), loglevel="FATAL")
            self._add_missing_words({w for words in word_lists for w in words})
        else:
            self.decoder = Decoder(samprate=RATE, loglevel="FATAL")

    def _add_missing_words(self, words: set[str]) -> None:
        for word in sorted(words):
            if self.decoder.lookup_word(word) is None:
                phones = espeak_pronunciation(word)
                if phones:
                    self.decoder.add_word(word, phones, True)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> list[str]:
        """audio [T] at any rate -> recognised words (lower case; [] when nothing was recognised)."""
        audio = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, RATE)
        pcm = pcm16(normalize_level(np.nan_to_num(audio)), self.pad_seconds, self.dither, self.seed)
        try:
            decode_pcm(self.decoder, pcm)
        except RuntimeError as exc:
            raise UserError(f"pocketsphinx could not decode the audio ({first_line(exc)}).") from None
        hyp = self.decoder.hyp()
        words = [word_name(w).lower() for w in (hyp.hypstr.split() if hyp is not None else []) if is_word(w)]
        return normalize_words(" ".join(words), digits=self.digits)


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance between two sequences (substitutions, deletions, insertions cost 1)."""
    ref, hyp = list(reference), list(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, int]:
    """(edit distance, number of reference words)."""
    return edit_distance(reference, hypothesis), len(reference)


def word_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus WER: total edits / total reference words (may exceed 1). NaN with no reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    total = sum(len(r) for r in references)
    return errors / total if total else float("nan")
