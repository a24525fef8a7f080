"""Choosing among and verifying pose hypotheses against the image."""
