"""Evaluation: retrieval metrics, confidence intervals, significance tests, threshold accuracy, baselines."""
