"""What a GPU check ran on, as JSON: versions, the device, the commit ($GIT_COMMIT), and two things only that
machine can tell: that pydantic imports beside its typing-extensions, and that thinc's CUDA kernels compile
with its cupy (one custom kernel, seq2col, run and checked)."""

import json
import os
import platform
import subprocess

import cupy
import pydantic
import spacy
import thinc
import torch
from thinc.api import get_current_ops

spacy.require_gpu(0)
ops = get_current_ops()
window = ops.seq2col(ops.xp.ones((4, 3), dtype="float32"), 1)  # each row: its neighbours and itself, 0 past the ends
smi = subprocess.run(
    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
    capture_output=True,
    text=True,
).stdout.strip()
print(
    json.dumps(
        {
            "commit": os.environ.get("GIT_COMMIT"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0),
            "nvidia_smi": smi,
            "spacy": spacy.__version__,
            "thinc": thinc.__version__,
            "cupy": cupy.__version__,
            "pydantic": pydantic.VERSION,
            "thinc_kernel_ok": float(window.sum()) == 30.0,
        },
        indent=1,
    )
)
