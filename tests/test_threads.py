"""Thread pinning: the environment it sets and what a fresh process then uses."""
import json
import subprocess
import sys

import pytest

from conll_crf.threads import THREAD_VARS, thread_env


def test_thread_env():
    assert thread_env(3) == {var: "3" for var in THREAD_VARS}
    with pytest.raises(ValueError):
        thread_env(0)


def test_pin_threads_before_torch_loads():
    code = (
        "import json, os, sys\n"
        "from conll_crf.threads import pin_threads\n"
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"  # light: nothing loaded BLAS yet
        "pin_threads(1)\n"
        "import torch\n"
        "print(json.dumps({'env': {v: os.environ[v] for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')},"
        " 'torch': torch.get_num_threads(), 'interop': torch.get_num_interop_threads()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}, "torch": 1, "interop": 1}
