"""How many threads a process computes with: OpenMP/BLAS pools and torch's.

Light on purpose (no numpy, spaCy or torch at import): scripts call
`pin_threads` before anything loads BLAS, which reads its thread count once.
"""
import os
from typing import Dict

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> Dict[str, str]:
    """The environment that sizes a process's OpenMP/BLAS thread pools."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return {var: str(threads) for var in THREAD_VARS}


def pin_threads(threads: int) -> None:
    """One process's share of the cores: OpenMP/BLAS pools (for libraries not
    loaded yet) and torch's intra- and inter-op pools."""
    os.environ.update(thread_env(threads))
    try:
        import torch
    except ImportError:  # a pipeline without torch
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable once, before any inter-op work
        pass
