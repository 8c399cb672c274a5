"""Embedder (drop-in ``encode``), model loading and patching (``bidirectional``, ``accelerate``)."""
