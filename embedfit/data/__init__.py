"""Datasets in, BEIR's plain dicts out: the loaders (BEIR folder, pairs file, NQ simplified, hub id), text cleaning,
filters, the one rule for repeated ids, and the train/dev/test split."""
