"""Multi-seed comparison of configurations: train, evaluate, summarise.

    python experiments/scripts/seeds.py train CONFIG --seeds 1 2 3 [--name NAME] [--gpu-id -1] [overrides ...]
    python experiments/scripts/seeds.py evaluate [--runs training/seeds] [--corpus corpus]
    python experiments/scripts/seeds.py summarize [--runs training/seeds] [--baseline cpu_ner]
        [--pair NAME=BASELINE ...] [--previous JSON] [--md PATH] [--json PATH] [--png PATH]
        [--shipped NAME ... --pairs-png PATH]

`train` trains CONFIG (a config file, e.g. experiments/configs/NAME.cfg, or the
name of one of the product's configs/NAME.cfg) once per seed (--system.seed and
--training.seed; extra `--section.key value` overrides are passed on) with the
product's scripts/train.py into RUNS/NAME_s<seed> (NAME defaults to the config
file's name), one after the other, skipping finished runs. Paths default to the
product's folders (training/seeds, corpus), whatever the working directory. `evaluate` runs scripts/evaluate.py on the
model-best of every finished run that has no scores yet (gold
tokens with gold sentence starts, conlleval cross-check, and raw text).
`summarize` groups runs by NAME and reports per group the dev F (best during
training), gold-token F, raw-text F, conlleval F and training time as mean and
standard deviation over the seeds, with the seeds; each group's lead over the
baseline uses only the seeds both have. `--previous` reads an earlier
summary's JSON and keeps the per-seed scores of every run it holds that is not
under RUNS (trained on another machine or before a clean checkout), so a new
summary adds rows without losing the old ones; a run on disk always wins.
The seeds of one NAME must have been trained with the same config and
overrides (train_meta.json; the summary JSON keeps each seed's recipe, so runs
kept by --previous are checked too): a summary that would average two recipes
stops and names the settings that differ; a seed whose recipe was never
recorded is named as unchecked.
"""

import argparse
import hashlib
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]  # the product: scripts/train.py, scripts/evaluate.py, corpus/, training/
RUN = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")


def train(args, extra: List[str]) -> None:
    config = Path(args.config)
    if config.suffix != ".cfg":
        config = ROOT / f"configs/{args.config}.cfg"
    for seed in args.seeds:
        out = args.runs / f"{args.name or config.stem}_s{seed}"
        if (out / "train_meta.json").exists():
            print(f"{out}: trained already, skipped")
            continue
        cmd = [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            str(config.resolve()),
            str(out),
            "--train",
            str(args.corpus / "train.spacy"),
            "--dev",
            str(args.corpus / "dev.spacy"),
            "--gpu-id",
            str(args.gpu_id),
            "--system.seed",
            str(seed),
            "--training.seed",
            str(seed),
            *extra,
        ]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def evaluate(args) -> None:
    # finished runs only: train.py writes train_meta.json at the end (model-best exists from the first evaluation on)
    for run in sorted(p for p in args.runs.iterdir() if RUN.match(p.name) and (p / "train_meta.json").exists()):
        if not (run / "eval" / "unseen.json").exists():  # F on names seen / never seen in training
            cmd = [sys.executable, str(ROOT / "scripts/unseen_entities.py"), str(run / "model-best")]
            cmd += [
                str(args.corpus / "train.spacy"),
                str(args.corpus / "dev.spacy"),
                "--json",
                str(run / "eval/unseen.json"),
            ]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        if (run / "eval" / "raw_text_sentencizer.json").exists():
            continue
        cmd = [
            sys.executable,
            str(ROOT / "scripts/evaluate.py"),
            str(run / "model-best"),
            str(args.corpus),
            str(run / "eval"),
        ]
        if (run / "eval" / "raw_text.json").exists():  # scored before mode 3 existed: add it
            cmd.append("--sentencizer-only")
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def run_scores(run: Path) -> Dict[str, float]:
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in log if r.get("score") is not None]
    best = max(evals, key=lambda r: r["score"])
    gold = json.loads((run / "eval/gold_tokens.json").read_text())
    raw = json.loads((run / "eval/raw_text.json").read_text())
    sent = run / "eval/raw_text_sentencizer.json"
    unseen = run / "eval/unseen.json"
    meta = json.loads((run / "train_meta.json").read_text())
    return {
        "dev_f_best": 100 * best["score"],
        "best_step": best.get("step"),
        "gold_f": 100 * (gold["ents_f"] or 0.0),
        "conlleval_f": 100 * gold["conlleval"]["ents_f"],
        "raw_f": 100 * (raw["ents_f"] or 0.0),
        "raw_sent_f": 100 * (json.loads(sent.read_text())["ents_f"] or 0.0) if sent.exists() else float("nan"),
        "unseen_f": json.loads(unseen.read_text())["scores"]["unseen"]["f"] if unseen.exists() else float("nan"),
        "invalid": sum(gold["invalid_tag_sequences"].values()),
        "crossing": gold.get("entities_across_sentence_starts", 0),
        "train_minutes": meta["wall_seconds"] / 60,
    }


METRICS = [
    ("dev_f_best", "dev F (best, during training)"),
    ("gold_f", "gold tokens F"),
    ("conlleval_f", "conlleval F"),
    ("raw_f", "raw text F"),
    ("raw_sent_f", "raw text + sentencizer F"),
    ("unseen_f", "unseen-entity F (gold tokens)"),
    ("train_minutes", "training minutes"),
]
LEADS = ("dev_f_best", "gold_f", "raw_f", "raw_sent_f", "unseen_f")


def mean_sd(values: List[float]) -> Dict[str, float]:
    values = [v for v in values if v == v]  # a score a run does not have (NaN) is left out
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


# overrides that differ between the seeds of one run by design
PER_SEED = ("system.seed", "training.seed", "paths.log")


def trained_config_sha256(run: Path) -> Optional[str]:
    """The hash of the config a run was actually trained with (model-best's config.cfg: the file and
    every override), less what differs per seed (seeds, the log path); a path setting counts by its
    last part (assets/encoder_vectors and /elsewhere/assets/encoder_vectors are the same vectors)."""
    from thinc.api import Config

    for model in ("model-best", "model-last"):
        path = run / model / "config.cfg"
        if path.exists():
            break
    else:
        return None
    config = Config().from_disk(path, interpolate=False)
    config["paths"] = {
        k: (Path(v).name if isinstance(v, str) else v) for k, v in config.get("paths", {}).items() if k != "log"
    }
    for section in ("system", "training"):
        config.get(section, {}).pop("seed", None)
    for component in config.get("components", {}).values():  # how memory is kept, never a result
        component.pop("retain_freed_memory", None)
        # prediction settings added in 0.4 at their defaults: a run saved before them trained the same recipe
        if component.get("temperature_unseen", "absent") is None:
            component.pop("temperature_unseen")
        if component.get("thresholds", "absent") == {}:
            component.pop("thresholds")
    return hashlib.sha256(config.to_str().encode("utf8")).hexdigest()


def recipe(run: Path) -> Optional[Dict]:
    """What a run was trained with, less what differs per seed: the config file's name,
    the parsed config's hash (where train.py recorded it), the overrides (None for
    runs recorded before train.py kept them), and the hash of the config it was
    trained with (the saved model's)."""
    meta = json.loads((run / "train_meta.json").read_text())
    trained = trained_config_sha256(run)
    if "config" not in meta:
        return {"trained_config_sha256": trained} if trained else None
    overrides = {k: v for k, v in meta.get("overrides", {}).items() if k not in PER_SEED}
    return {
        "config_file": Path(meta["config"]).name,
        "config_sha256": meta.get("config_sha256"),
        **{f"--{k}": v for k, v in sorted(overrides.items())},
        "trained_config_sha256": trained,
    }


def _comparable(recipes: List[Dict]) -> List[Dict]:
    """The recipes as compared: by the config each was trained with where every one has it
    (file and overrides together, whatever the file's name); else by the config file's hash
    when every one has it (a renamed config is the same recipe) and the overrides; else by
    the config file's name and the overrides."""
    if all(r.get("trained_config_sha256") for r in recipes):
        return [{"trained_config_sha256": r["trained_config_sha256"]} for r in recipes]
    by_hash = all(r.get("config_sha256") for r in recipes)
    drop = {"trained_config_sha256", "config_file" if by_hash else "config_sha256"}
    return [{k: v for k, v in r.items() if k not in drop} for r in recipes]


def check_recipes(recipes: Dict[str, Dict[int, Optional[Dict]]], previous: Optional[Path] = None) -> None:
    """Exit naming the run, its seeds and the settings that differ if the seeds of one
    run name were trained with different configs or overrides (a mean over them would
    mix two recipes). Seeds whose recipe is unknown (kept from a summary that did not
    record it, or trained before train.py did) are named, not checked."""
    for name, by_seed in sorted(recipes.items()):
        known = {seed: r for seed, r in sorted(by_seed.items()) if r is not None}
        unknown = sorted(seed for seed, r in by_seed.items() if r is None)
        if unknown and known:
            print(
                f"{name}: the recipe of seed(s) {', '.join(map(str, unknown))} is not recorded"
                f"{f' in {previous}' if previous else ''}: checked only among seeds {', '.join(map(str, known))}"
            )
        comparable = dict(zip(known, _comparable(list(known.values()))))
        if len({json.dumps(r, sort_keys=True) for r in comparable.values()}) <= 1:
            continue
        keys = sorted({k for r in comparable.values() for k in r})
        differ = [k for k in keys if len({json.dumps(r.get(k)) for r in comparable.values()}) > 1]
        detail = "; ".join(
            f"{k}: " + ", ".join(f"s{seed}={r.get(k)!r}" for seed, r in comparable.items()) for k in differ
        )
        sys.exit(
            f"{name}: its seeds were trained with different settings ({detail}); "
            f"rename one (seeds.py train --name) or move it out of the runs folder"
        )


def summarize(args) -> None:
    groups: Dict[str, Dict[int, Dict[str, float]]] = {}
    recipes: Dict[str, Dict[int, Optional[Dict]]] = {}
    for run in sorted(args.runs.iterdir()) if args.runs.is_dir() else []:
        m = RUN.match(run.name)
        if m and (run / "eval/raw_text.json").exists() and (run / "log.jsonl").exists():
            groups.setdefault(m["name"], {})[int(m["seed"])] = run_scores(run)
            recipes.setdefault(m["name"], {})[int(m["seed"])] = recipe(run)
    kept = 0
    if args.previous is not None and not args.previous.exists():
        print(f"{args.previous}: no earlier summary, nothing kept")
    elif args.previous is not None:
        for name, row in json.loads(args.previous.read_text()).items():
            if name in args.drop:
                continue
            for seed, scores in row.get("runs", {}).items():
                if int(seed) not in groups.get(name, {}):
                    groups.setdefault(name, {})[int(seed)] = scores
                    recipes.setdefault(name, {})[int(seed)] = row.get("recipes", {}).get(seed)
                    kept += 1
        print(f"kept {kept} run(s) from {args.previous} that are not under {args.runs}")
    check_recipes(recipes, args.previous)
    if not groups:
        sys.exit(f"no evaluated runs under {args.runs} (run `seeds.py evaluate` first)")
    groups = dict(sorted(groups.items()))
    pairs = dict(p.split("=", 1) for p in args.pair)  # NAME -> its own baseline
    summary = {}
    for name, runs in groups.items():
        runs = dict(sorted(runs.items()))
        row = {"seeds": sorted(runs), **{k: mean_sd([r[k] for r in runs.values()]) for k, _ in METRICS}}
        row["invalid"] = sum(r["invalid"] for r in runs.values())
        row["crossing"] = sum(r["crossing"] for r in runs.values())
        row["runs"] = runs
        row["recipes"] = {seed: recipes.get(name, {}).get(seed) for seed in runs}
        baseline = pairs.get(name, args.baseline)
        base = groups.get(baseline)
        if base and name != baseline and name not in pairs.values():
            shared = sorted(set(runs) & set(base))
            if shared:
                for key in LEADS:
                    row[f"lead_{key}"] = mean_sd([runs[s][key] - base[s][key] for s in shared])
                row["lead_seeds"] = shared
                row["baseline"] = baseline
        summary[name] = row
    lines = [
        "| run | seeds | "
        + " | ".join(label for _, label in METRICS)
        + " | baseline | lead: dev / gold / raw / raw + sentencizer / unseen | invalid seqs | across sentences |",
        "|---|---|" + "---|" * len(METRICS) + "---|---|---|---|",
    ]
    for name, row in summary.items():
        cells = [f"{row[k]['mean']:.2f} ± {row[k]['sd']:.2f}" for k, _ in METRICS]
        lead = (
            " / ".join(f"{row[f'lead_{k}']['mean']:+.2f} ± {row[f'lead_{k}']['sd']:.2f}" for k in LEADS)
            if "lead_seeds" in row
            else "-"
        )
        lines.append(
            f"| {name} | {', '.join(map(str, row['seeds']))} | "
            + " | ".join(cells)
            + f" | {row.get('baseline', '-')} | {lead} | {row['invalid']} | {row['crossing']} |"
        )
    table = "\n".join(lines)
    print(table)
    print("(mean ± sample standard deviation over the seeds; dev = eng.testa; gold tokens with gold sentence starts)")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.png:
        plot(summary, args.png)
    if args.pairs_png:
        plot_pairs(summary, args.shipped, args.pairs_png)


def plot(summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("dev_f_best", "dev F (best)"), ("gold_f", "gold tokens F"), ("raw_f", "raw text F")]
    names = list(summary)
    # one row per run, names on the y axis: readable with two dozen runs
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 2.5, 0.32 * len(names) + 1.4), sharey=True)
    for ax, (key, label) in zip(axes, keys):
        for i, name in enumerate(names):
            vals = [r[key] for r in summary[name]["runs"].values()]
            ax.scatter(vals, [i] * len(vals), s=16, alpha=0.7)
            ax.errorbar(
                summary[name][key]["mean"],
                i,
                xerr=summary[name][key]["sd"],
                fmt="|",
                color="black",
                capsize=4,
                markersize=12,
            )
        ax.set_title(label)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("F1 (%) on eng.testa")
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Each dot one seed; bar: mean ± sd")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot_pairs(summary, names: List[str], path: Path) -> None:
    """Each named row against its baseline, seed by seed (a line joins the two runs of one seed), on gold tokens
    and raw text: what a lead over seeds looks like."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [n for n in names if n not in summary or "baseline" not in summary[n]]
    if missing:
        sys.exit(f"--shipped {', '.join(missing)}: not a summarized row with a baseline")
    keys = [("gold_f", "gold tokens F"), ("raw_f", "raw text F")]
    fig, axes = plt.subplots(len(names), len(keys), figsize=(5.2 * len(keys), 1.9 * len(names) + 0.9), squeeze=False)
    for row, name in enumerate(names):
        base = summary[name]["baseline"]
        seeds = summary[name]["lead_seeds"]
        for col, (key, label) in enumerate(keys):
            ax = axes[row][col]
            ours = [summary[name]["runs"][s][key] for s in seeds]
            theirs = [summary[base]["runs"][s][key] for s in seeds]
            for a, b in zip(ours, theirs):
                ax.plot([b, a], [0, 1], color="grey", alpha=0.5, linewidth=1)
            ax.scatter(theirs, [0] * len(theirs), color="tab:orange", zorder=3)
            ax.scatter(ours, [1] * len(ours), color="tab:blue", zorder=3)
            lead = summary[name][f"lead_{key}"]
            ax.set_yticks([0, 1], [base, name], fontsize=8)
            ax.set_ylim(-0.5, 1.5)
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{label}: lead {lead['mean']:+.2f} ± {lead['sd']:.2f} ({len(seeds)} seeds)", fontsize=9)
            ax.set_xlabel("F1 (%) on eng.testa", fontsize=8)
    fig.suptitle(
        "Ours (blue) against spaCy's ner (orange) on the same seeds; a line joins one seed's two runs", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    t.add_argument("--name", default=None)
    t.add_argument("--gpu-id", type=int, default=-1)
    t.add_argument("--runs", type=Path, default=ROOT / "training/seeds")
    t.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    e = sub.add_parser("evaluate")
    e.add_argument("--runs", type=Path, default=ROOT / "training/seeds")
    e.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    s = sub.add_parser("summarize")
    s.add_argument("--runs", type=Path, default=ROOT / "training/seeds")
    s.add_argument("--baseline", default="cpu_ner")
    s.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="NAME=BASELINE",
        help="compare NAME with BASELINE instead of --baseline (e.g. both trained on the same augmented data)",
    )
    s.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="an earlier summary's JSON: its runs that are not under --runs are kept, with their recipes "
        "(a run is known by NAME and seed: give a new recipe a new --name)",
    )
    s.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="NAME",
        help="with --previous: do not keep the earlier runs of NAME",
    )
    s.add_argument("--md", type=Path, default=None)
    s.add_argument("--json", type=Path, default=None)
    s.add_argument("--png", type=Path, default=None)
    s.add_argument(
        "--shipped",
        action="append",
        default=[],
        metavar="NAME",
        help="a row to draw against its baseline, seed by seed, in --pairs-png (repeatable)",
    )
    s.add_argument("--pairs-png", type=Path, default=None)
    args, extra = parser.parse_known_args()
    if args.cmd == "train":
        train(args, extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    elif args.cmd == "evaluate":
        evaluate(args)
    else:
        summarize(args)


if __name__ == "__main__":
    main()
