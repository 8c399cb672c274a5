"""One module per operation: the PyTorch/numpy reference (the specification) and the dispatch to
``embedcore.kernels`` (Triton), ``embedcore._C`` (CPU) or ``embedcore._cuda``."""
