"""Sparse models: pruning during training (a loop plugin) and compaction."""
