"""Evaluation: the reconstruction loss on a split (``loss``), the phoneme probe of a codes folder
(``frames``, ``code_metrics``, ``abx``, ``classifiers``, ``features``, ``probe``) beside an MFCC +
k-means baseline (``baseline``), the scores of reconstructions and conversions (``conversion``
with ``speaker_similarity``, ``recognition``, ``mcd``), and the HTML report (``report``)."""
