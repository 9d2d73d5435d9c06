"""What a shorter training budget would have selected, read from finished runs' training logs.

    python experiments/scripts/step_budget.py NAME [NAME ...] --budget 1200 [--runs RUNS] [--md PATH]

For each run `<RUNS>/<NAME>_s<seed>` (written by `seeds.py train`; RUNS defaults to the repository's
training/seeds), reads its JSONL training log and prints the
best dev score during training (the checkpoint `model-best` keeps) over the whole run and over the steps up to
`--budget`, with their steps and the minutes the log shows at the budget's last evaluation.

Why this needs no retraining: with a constant learning rate and the same seed, the first B steps of a longer run
are the run with budget B (the batches, dropout masks and updates do not depend on max_steps; the patience is
longer than the budget), so the best checkpoint at budget B is the best evaluation at a step <= B. A schedule that
depends on max_steps (e.g. a linear decay to 0) breaks this, and the script refuses such runs.
"""

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]


def evaluations(log: Path) -> List[Dict]:
    """The log's evaluation rows: step, score, minutes since the start."""
    rows = []
    with log.open(encoding="utf8") as file:
        for line_no, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{log}:{line_no}: not a JSON line ({err})") from None
            if row.get("score") is not None:
                rows.append({"step": row["step"], "score": 100 * row["score"], "minutes": row["seconds"] / 60})
    if not rows:
        raise SystemExit(f"{log}: no evaluation rows")
    return rows


def constant_rate(run: Path) -> bool:
    """Whether the run's saved config trains with a fixed learning rate (a number, not a schedule)."""
    from confection import Config

    config = Config().from_disk(run / "model-last" / "config.cfg", interpolate=False)
    return not isinstance(config["training"]["optimizer"]["learn_rate"], dict)


def budget_rows(runs: Path, name: str, budget: int) -> List[Dict]:
    found = sorted(runs.glob(f"{name}_s*"), key=lambda p: int(p.name.rsplit("_s", 1)[1]))
    if not found:
        raise SystemExit(f"no runs {runs}/{name}_s<seed>")
    rows = []
    for run in found:
        if not constant_rate(run):
            raise SystemExit(f"{run}: its learning rate is a schedule; a shorter budget would change the run itself")
        evals = evaluations(run / "log.jsonl")
        full = max(evals, key=lambda e: e["score"])
        within = [e for e in evals if e["step"] <= budget]
        short = max(within, key=lambda e: e["score"])
        rows.append(
            {
                "run": run.name,
                "best": round(full["score"], 2),
                "best_step": full["step"],
                "minutes": round(evals[-1]["minutes"], 1),
                "budget_best": round(short["score"], 2),
                "budget_step": short["step"],
                "budget_minutes": round(within[-1]["minutes"], 1),
                "change": round(short["score"] - full["score"], 2),
            }
        )
    return rows


def markdown(rows: List[Dict], budget: int) -> str:
    lines = [
        f"| run | best dev F (step) | minutes | best dev F within {budget:,} steps (step) | minutes | change |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['best']:.2f} ({r['best_step']:,}) | {r['minutes']} | "
            f"{r['budget_best']:.2f} ({r['budget_step']:,}) | {r['budget_minutes']} | {r['change']:+.2f} |"
        )
    changes = [r["change"] for r in rows]
    sd = statistics.stdev(changes) if len(changes) > 1 else 0.0
    lines.append(f"\nMean change {statistics.mean(changes):+.2f} ± {sd:.2f} over {len(changes)} runs.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="run names as given to seeds.py train (without _s<seed>)")
    parser.add_argument("--budget", type=int, required=True, help="the shorter budget, in steps")
    parser.add_argument("--runs", type=Path, default=ROOT / "training" / "seeds")
    parser.add_argument("--md", type=Path, help="also write the tables here")
    args = parser.parse_args()
    text = "\n\n".join(markdown(budget_rows(args.runs, name, args.budget), args.budget) for name in args.names)
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n", encoding="utf8")


if __name__ == "__main__":
    main()
