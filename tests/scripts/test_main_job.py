"""scripts/main_job.py: the main job's recipe and device follow the machine unless the user names them."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import main_job  # noqa: E402


@pytest.mark.parametrize(
    "config,gpu_id,device,want",
    [
        ("auto", "auto", "NVIDIA H100", ("trf_crf", 0)),
        ("auto", "auto", None, ("cpu_crf", -1)),
        ("auto", "-1", "NVIDIA H100", ("cpu_crf", -1)),  # told to stay on the CPU
        ("auto", "1", "NVIDIA H100", ("trf_crf", 1)),
        ("cpu_crf", "auto", "NVIDIA H100", ("cpu_crf", 0)),  # a named config is trained as asked
        ("trf_crf", "auto", None, ("trf_crf", -1)),
    ],
)
def test_the_choice_follows_the_machine_unless_told(config, gpu_id, device, want):
    chosen, gpu, why = main_job.choose(config, gpu_id, device)
    assert (chosen, gpu) == want and chosen in why
    assert ("CUDA" in why) == (config == "auto" and device is not None) or "no CUDA" in why


def test_each_step_runs_the_project_script_for_the_chosen_config():
    assert main_job.command("train", "trf_crf", 0, ["--max-steps", "5"])[1:] == [
        "scripts/train.py",
        "configs/trf_crf.cfg",
        "training/trf_crf",
        "--gpu-id",
        "0",
        "--max-steps",
        "5",
    ]
    assert main_job.command("evaluate", "cpu_crf", -1, [])[1:] == [
        "scripts/evaluate.py",
        "training/cpu_crf/model-best",
        "corpus",
        "metrics/cpu_crf",
        "--gpu-id",
        "-1",
    ]
    assert main_job.command("calibrate", "cpu_crf", -1, [])[-2:] == ["--write", "training/cpu_crf/model-calibrated"]
    assert main_job.command("package", "cpu_crf", -1, ["--name", "x"])[1:] == [
        "scripts/package.py",
        "training/cpu_crf/model-calibrated",
        "packages",
        "--name",
        "x",
    ]


def test_the_command_line_says_which_and_why(monkeypatch):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/main_job.py"),
            "train",
            "--config",
            "cpu_crf",
            "--gpu-id",
            "-1",
            "--dry-run",
            "--",
            "--max-steps",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "main job, train: cpu_crf on the CPU, as asked" in out and "configs/cpu_crf.cfg" in out
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts/main_job.py"), "train", "--config", "no_such"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "configs/no_such.cfg does not exist" in bad.stderr
    assert main_job.gpu_id_arg("3") == 3
    monkeypatch.setattr(main_job, "cuda_device", lambda: None)
    assert main_job.gpu_id_arg("auto") == -1
