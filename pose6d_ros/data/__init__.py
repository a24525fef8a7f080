"""Datasets and file formats: BOP I/O, rendering and synthetic scenes."""
