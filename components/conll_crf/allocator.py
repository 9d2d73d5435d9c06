"""Keeping freed memory for reuse: glibc's thresholds for large blocks.

The head's buffers are large and short-lived (per batch of 64 CoNLL articles, the
Viterbi candidates, the forward-backward stacks and the probabilities' terms are
several MB to about 30 MB each). glibc serves a block above its mmap threshold
(128 KiB at first, raised by use to at most 32 MiB) with a fresh mapping that it
returns to the kernel when freed, and gives the heap's free top back above its
trim threshold; the next batch's buffers then arrive as new pages, which the
kernel faults in and zeroes. Where page faults are expensive (a virtual machine;
transparent huge pages, zeroed 2 MiB at a time) that cost is a large share of
crf_ner's time, and it varies with the machine's state: on the development VM,
the same models and code measured 0.88-0.96x spaCy's ner with glibc's defaults
and 1.14x with blocks up to 32 MiB kept in the heap (README, "Inference speed";
the peak resident size did not change).

`retain_freed_memory` sets the two thresholds with `mallopt`, as the
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ environment variables would
at start-up (jemalloc and tcmalloc keep freed memory on their own). It is
process-wide, so nothing calls it on import: a `crf_ner` component does when it
is created with `retain_freed_memory = true` (its default; a config setting;
`conll-crf annotate --no-retain-freed-memory` sets it false in every crf_ner of
the pipeline it loads). The price: up to `trim_threshold`
(1 GiB) of freed memory stays with the process instead of going back to the
system, so the resident size stays near its peak between batches (the peak
itself did not change in the measurements).
"""
import ctypes
import sys
from typing import Dict

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit systems
DEFAULT_TRIM_THRESHOLD = 1 << 30  # 128 MiB was not enough: a batch frees more than that at once


def retained_memory_env(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> Dict[str, str]:
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
