"""Process-wide settings: how many threads a process computes with, and whether
glibc keeps freed memory for reuse. Only the owner of a process should change
them: the `crf_ner` component changes neither unless its config asks
(`retain_freed_memory`); `conll-crf annotate` and the benchmark scripts, which
own their processes, do.

Threads: `pin_threads` sizes the OpenMP/BLAS pools (for libraries not loaded
yet) and torch's; scripts call it before anything loads BLAS, which reads its
thread count once. This module imports neither numpy, spaCy nor torch at import.

Freed memory: the head's buffers are large and short-lived (per batch of 64
CoNLL articles, the Viterbi candidates, the forward-backward stacks and the
probabilities' terms are several MB to about 30 MB each). glibc serves a block
above its mmap threshold (128 KiB at first, raised by use to at most 32 MiB)
with a fresh mapping that it returns to the kernel when freed, and gives the
heap's free top back above its trim threshold; the next batch's buffers then
arrive as new pages, which the kernel faults in and zeroes. Where page faults
are expensive (a virtual machine; transparent huge pages) that cost is a large
share of crf_ner's time (docs/benchmarks.md has the figures).
`retain_freed_memory` sets the two thresholds with `mallopt`, as the
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ environment variables would
at start-up (jemalloc and tcmalloc keep freed memory on their own). The price:
up to `trim_threshold` (1 GiB) of freed memory stays with the process instead
of going back to the system, so its resident size stays near its peak.
"""

import ctypes
import os
import sys
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


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit systems
DEFAULT_TRIM_THRESHOLD = 1 << 30  # a batch frees more than 128 MiB at once


def retained_memory_env(
    mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> Dict[str, str]:
    """The environment that gives a new process the same thresholds (read by glibc at start-up)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(mmap_threshold), "MALLOC_TRIM_THRESHOLD_": str(trim_threshold)}


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Keep freed blocks of up to `mmap_threshold` bytes, and up to `trim_threshold`
    bytes of free heap, in this process for reuse. True when glibc took both
    settings; False where the C library is not glibc (nothing changes)."""
    if not 0 < mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be in (0, {MMAP_THRESHOLD_MAX}], got {mmap_threshold}")
    if not 0 < trim_threshold < 1 << 31:
        raise ValueError(f"trim_threshold must be in (0, 2**31), got {trim_threshold}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
