"""experiments/scripts/step_budget.py: the best checkpoint a shorter budget would have kept, from training logs."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("step_budget", ROOT / "experiments/scripts/step_budget.py")
step_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step_budget)


def write_run(runs: Path, name: str, scores, learn_rate: str = "0.002") -> None:
    run = runs / name
    (run / "model-last").mkdir(parents=True)
    (run / "model-last" / "config.cfg").write_text(
        f'[training]\n\n[training.optimizer]\n@optimizers = "Adam.v1"\nlearn_rate = {learn_rate}\n', encoding="utf8"
    )
    lines = []
    for i, score in enumerate(scores):
        # a training row without a score between evaluations, as spaCy's loop logs them
        lines.append(json.dumps({"step": 200 * i + 1, "seconds": 600 * i + 1, "score": None}))
        lines.append(json.dumps({"step": 200 * i, "seconds": 600 * i, "score": score}))
    (run / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf8")


def test_best_within_the_budget_against_the_whole_run(tmp_path):
    # evaluations at steps 0, 200, ..., 1000; scores as spaCy logs them (0-1)
    write_run(tmp_path, "recipe_s1", [0.1, 0.5, 0.9, 0.7, 0.95, 0.6])  # best at 800, within 600: 0.9 at 400
    write_run(tmp_path, "recipe_s2", [0.1, 0.8, 0.6, 0.7, 0.5, 0.4])  # best at 200 in both
    rows = step_budget.budget_rows(tmp_path, "recipe", 600)
    assert [(r["best"], r["best_step"], r["budget_best"], r["budget_step"]) for r in rows] == [
        (95.0, 800, 90.0, 400),
        (80.0, 200, 80.0, 200),
    ]
    assert [r["change"] for r in rows] == [-5.0, 0.0]
    assert [r["budget_minutes"] for r in rows] == [30.0, 30.0] and rows[0]["minutes"] == 50.0
    table = step_budget.markdown(rows, 600)
    assert "| recipe_s1 | 95.00 (800) | 50.0 | 90.00 (400) | 30.0 | -5.00 |" in table
    assert "Mean change -2.50 ± 3.54 over 2 runs." in table


def test_refuses_a_run_with_a_learning_rate_schedule(tmp_path):
    # a decaying rate depends on max_steps: the first steps of a longer run are not the shorter run
    schedule = '{"@schedules":"warmup_linear.v1","warmup_steps":100,"total_steps":2400,"initial_rate":0.002}'
    write_run(tmp_path, "decay_s1", [0.5, 0.6], learn_rate=schedule)
    with pytest.raises(SystemExit, match="decay_s1: its learning rate is a schedule"):
        step_budget.budget_rows(tmp_path, "decay", 200)


def test_names_the_bad_line_of_a_log(tmp_path):
    write_run(tmp_path, "bad_s1", [0.5])
    log = tmp_path / "bad_s1" / "log.jsonl"
    log.write_text(log.read_text() + "{not json\n", encoding="utf8")
    with pytest.raises(SystemExit, match=r"log.jsonl:3: not a JSON line"):
        step_budget.budget_rows(tmp_path, "bad", 200)
