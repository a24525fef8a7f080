"""Evaluation: pose-error metrics (BOP definitions) and benchmarks."""
