"""conll_crf.process: thread pinning (the environment it sets and what a fresh process then uses), and
freed large blocks staying in the heap once retain_freed_memory ran (glibc only)."""

import json
import subprocess
import sys

import pytest

from conll_crf.process import MMAP_THRESHOLD_MAX, THREAD_VARS, retain_freed_memory, retained_memory_env, thread_env

PROBE = r"""
import ctypes, sys
from conll_crf.process import retain_freed_memory
libc = ctypes.CDLL("libc.so.6")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "retain":
    assert retain_freed_memory()
size = 8 << 20
p = libc.malloc(size)
ctypes.memset(p, 1, size)
libc.free(p)
print(libc.mallinfo2().fordblks)  # free bytes the heap keeps
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        import ctypes

        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc >= 2.33 only")
def test_a_freed_large_block_stays_in_the_heap():
    free_bytes = {}
    for mode in ("default", "retain"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
        free_bytes[mode] = int(out)
    assert free_bytes["default"] < 8 << 20  # an 8 MB block was its own mapping, unmapped when freed
    assert free_bytes["retain"] >= 8 << 20  # kept for the next batch's buffers


def test_settings_are_checked_and_the_environment_matches():
    with pytest.raises(ValueError, match="mmap_threshold"):
        retain_freed_memory(mmap_threshold=MMAP_THRESHOLD_MAX + 1)
    with pytest.raises(ValueError, match="trim_threshold"):
        retain_freed_memory(trim_threshold=1 << 31)
    env = retained_memory_env()
    assert env == {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def test_thread_env():
    assert thread_env(3) == {var: "3" for var in THREAD_VARS}
    with pytest.raises(ValueError):
        thread_env(0)


def test_pin_threads_before_torch_loads():
    code = (
        "import json, os, sys\n"
        "from conll_crf.process import pin_threads\n"
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"  # light: nothing loaded BLAS yet
        "pin_threads(1)\n"
        "import torch\n"
        "names = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')\n"
        "print(json.dumps({'env': {v: os.environ[v] for v in names},"
        " 'torch': torch.get_num_threads(), 'interop': torch.get_num_interop_threads()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {
        "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        "torch": 1,
        "interop": 1,
    }
