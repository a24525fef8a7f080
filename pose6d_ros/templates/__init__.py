"""Training-free coarse poses: per-object template banks of pretrained features, retrieval."""
