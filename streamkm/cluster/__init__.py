"""Batch and streaming k-means in pure NumPy."""

__all__: list[str] = []
