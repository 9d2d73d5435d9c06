"""The main job's steps for the recipe that fits the machine: `spacy project run all` calls this.

    python scripts/main_job.py STEP --config auto|NAME --gpu-id auto|N [--dry-run] [-- EXTRA ...]

STEP is train, evaluate, calibrate or package. `--config auto` (the project's
default) chooses the transformer recipe, trf_crf, on GPU 0 where torch sees a
CUDA device, and the CPU recipe, cpu_crf, elsewhere; a config name trains that
config. `--gpu-id auto` is 0 with a CUDA device and -1 (the CPU) without one.
Every step prints the choice and why, then runs the project's own script with
training/<config>, metrics/<config> and the chosen GPU; EXTRA arguments are
passed on to it. `--dry-run` prints the command instead of running it.
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("train", "evaluate", "calibrate", "package")


def cuda_device() -> Optional[str]:
    """The name of CUDA device 0, or None where torch sees none."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def gpu_id_arg(value: str) -> int:
    """A --gpu-id value: "auto" (GPU 0 where torch sees a CUDA device, else -1) or a number."""
    if value == "auto":
        return 0 if cuda_device() else -1
    return int(value)


def choose(config: str, gpu_id: str, device: Optional[str]) -> Tuple[str, int, str]:
    """(config name, GPU id, why) for the requested config and GPU id ("auto" or a value) on this machine."""
    if gpu_id == "auto":
        gpu = 0 if device else -1
    else:
        gpu = int(gpu_id)
    if config != "auto":
        where = f"GPU {gpu}" if gpu >= 0 else "the CPU"
        return config, gpu, f"{config} on {where}, as asked"
    if device and gpu >= 0:
        return "trf_crf", gpu, f"trf_crf on GPU {gpu}: a CUDA device is available ({device})"
    if device:
        return "cpu_crf", gpu, f"cpu_crf on the CPU: a CUDA device is available ({device}), but --gpu-id is {gpu}"
    return (
        "cpu_crf",
        gpu,
        "cpu_crf on the CPU: torch sees no CUDA device (vars.config trf_crf trains the transformer here)",
    )


def command(step: str, config: str, gpu: int, extra: List[str]) -> List[str]:
    """The project script that does `step` for `config` on `gpu`."""
    py = [sys.executable]
    run, metrics = f"training/{config}", f"metrics/{config}"
    if step == "train":
        return py + ["scripts/train.py", f"configs/{config}.cfg", run, "--gpu-id", str(gpu)] + extra
    if step == "evaluate":
        return py + ["scripts/evaluate.py", f"{run}/model-best", "corpus", metrics, "--gpu-id", str(gpu)] + extra
    if step == "calibrate":
        return (
            py
            + [
                "scripts/calibrate.py",
                f"{run}/model-best",
                "corpus/dev.spacy",
                f"{metrics}/calibration",
                "--write",
                f"{run}/model-calibrated",
            ]
            + extra
        )
    return py + ["scripts/package.py", f"{run}/model-calibrated", "packages"] + extra


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--config", default="auto")
    parser.add_argument("--gpu-id", default="auto")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    config, gpu, why = choose(args.config, args.gpu_id, cuda_device())
    if not (ROOT / f"configs/{config}.cfg").exists():
        print(f"main job: configs/{config}.cfg does not exist", file=sys.stderr)
        return 2
    cmd = command(args.step, config, gpu, extra)
    print(f"main job, {args.step}: {why}", flush=True)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
