"""Evaluation of learned units: phoneme probe, ABX, speaker probes, conversion metrics, report."""
