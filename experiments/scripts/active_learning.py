"""Active learning on CoNLL train, simulated: does the calibrated review queue choose better training data than chance?

    OMP_NUM_THREADS=1 python experiments/scripts/active_learning.py run --seed 1 [--rounds 3]
        [--start 0.1] [--step 0.1] [--max-steps 800] [--config configs/cpu_crf.cfg] [--out training/active_learning]
    python experiments/scripts/active_learning.py report [--out training/active_learning]
        [--md experiments/metrics/active_learning.md] [--png docs/figures/active_learning.png]

`run` draws a random start of whole articles holding `--start` of eng.train's
tokens (the seed decides which) and trains the recipe on it. Each round then
adds `--step` of the tokens, chosen two ways from the articles not yet labelled:

- calibrated: the last round's model annotates the pool (gold tokens with their
  sentence starts, as a corpus is reviewed), its temperature fitted on dev
  (`calibrate.fit_temperature`: what a user's `conll-crf calibrate` does), and
  articles are taken by expected entity errors per token (`conll_crf.review`),
  most first: with a budget in tokens, errors per token labelled is what a
  round buys;
- random: articles in an order the seed and the round decide.

Both arms add whole articles until the round's token budget is reached, and train
with the same recipe, seed and number of steps. The score is the dev F (eng.testa)
of the run's best checkpoint as `spacy train` measured it. Runs resume: a trained
round (its train_meta.json) and a made selection (selection.json) are kept.
"""

import argparse
import json
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List

import numpy
import spacy
from spacy.tokens import DocBin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from calibrate import DocEntities, fit_temperature  # noqa: E402  (the project's script)

from conll_crf.conll import gold_token_docs  # noqa: E402
from conll_crf.review import expected_errors  # noqa: E402

ARMS = ("calibrated", "random")


def take_until(order: List[int], sizes: List[int], budget: int) -> List[int]:
    """The first articles of `order` until their tokens reach `budget` (at least one article)."""
    out, total = [], 0
    for i in order:
        if total >= budget:
            break
        out.append(i)
        total += sizes[i]
    return out


def train_round(args, run: Path, articles: List[int], docs) -> float:
    """Train the recipe on `articles` into `run` (skipped when trained); the best dev F."""
    if not (run / "train_meta.json").exists():
        run.mkdir(parents=True, exist_ok=True)
        DocBin(docs=[docs[i] for i in articles], store_user_data=True).to_disk(run / "train.spacy")
        cmd = [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            str(args.config),
            str(run),
            "--train",
            str(run / "train.spacy"),
            "--dev",
            str(args.dev),
            "--max-steps",
            str(args.max_steps),
            "--system.seed",
            str(args.seed),
            "--training.seed",
            str(args.seed),
        ]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        (run / "train.spacy").unlink()
    meta = json.loads((run / "model-best" / "meta.json").read_text())
    return float(meta["performance"]["ents_f"])


def calibrated_order(model: Path, pool: List[int], docs, dev_refs) -> List[int]:
    """The pool's articles by expected errors per token under `model`, its temperature fitted on dev."""
    nlp = spacy.load(model)
    pipe = nlp.get_pipe("crf_ner")
    inputs = gold_token_docs(nlp.vocab, dev_refs)
    items = [DocEntities(pipe, d, g, em) for d, g, em in zip(inputs, dev_refs, pipe.emissions(inputs))]
    temperature = fit_temperature(items)
    cfg = {"components": {"crf_ner": {"temperature": temperature, "candidate_threshold": 0.01}}}
    nlp = spacy.load(model, config=cfg)
    texts = gold_token_docs(nlp.vocab, [docs[i] for i in pool])
    density = [expected_errors(d) / max(len(d), 1) for d in nlp.pipe(texts, batch_size=32)]
    ranked = sorted(range(len(pool)), key=lambda k: (-density[k], pool[k]))
    print(f"{model}: temperature {temperature:.3f} fitted on dev; pool {len(pool)} articles", flush=True)
    return [pool[k] for k in ranked]


def run(args) -> None:
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(args.train).get_docs(nlp.vocab))
    dev_refs = list(DocBin().from_disk(args.dev).get_docs(nlp.vocab))
    sizes = [len(d) for d in docs]
    total = sum(sizes)
    out = args.out / f"s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "selection.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "start" not in state:
        order = list(range(len(docs)))
        random.Random(args.seed).shuffle(order)
        state["start"] = take_until(order, sizes, round(args.start * total))
        state_path.write_text(json.dumps(state) + "\n")
    start_f = train_round(args, out / "round0", state["start"], docs)
    results: Dict[str, List[Dict]] = {}
    for arm in ARMS:
        labelled = list(state["start"])
        rows = [{"round": 0, "articles": len(labelled), "tokens": sum(sizes[i] for i in labelled), "dev_f": start_f}]
        model = out / "round0" / "model-best"
        for r in range(1, args.rounds + 1):
            key = f"{arm}_round{r}"
            if key not in state:
                chosen = set(labelled)
                pool = [i for i in range(len(docs)) if i not in chosen]
                if arm == "calibrated":
                    order = calibrated_order(model, pool, docs, dev_refs)
                else:
                    order = list(pool)
                    random.Random(f"{args.seed}-{r}").shuffle(order)
                state[key] = take_until(order, sizes, round(args.step * total))
                state_path.write_text(json.dumps(state) + "\n")
            labelled += state[key]
            run_dir = out / key
            f = train_round(args, run_dir, labelled, docs)
            rows.append({"round": r, "articles": len(labelled), "tokens": sum(sizes[i] for i in labelled), "dev_f": f})
            model = run_dir / "model-best"
            print(f"seed {args.seed} {arm} round {r}: {rows[-1]}", flush=True)
        results[arm] = rows
    summary = {
        "seed": args.seed,
        "config": str(args.config),
        "max_steps": args.max_steps,
        "train_tokens": total,
        "train_articles": len(docs),
        "arms": results,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")


def report(args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(args.out.glob("s*/results.json"))]
    if not runs:
        sys.exit(f"no results under {args.out}: run `run --seed N` first")
    n_rounds = min(len(r["arms"][arm]) for r in runs for arm in ARMS)
    lines = [
        f"Active learning, simulated on eng.train ({runs[0]['train_articles']} articles, "
        f"{runs[0]['train_tokens']:,} tokens); seeds {', '.join(str(r['seed']) for r in runs)}; "
        f"{runs[0]['config']} with max_steps {runs[0]['max_steps']}; dev F (eng.testa) of each run's best checkpoint.",
        "",
        "| round | arm | labelled tokens (mean) | dev F, mean ± sd | per seed | calibrated - random, per seed |",
        "|---|---|---|---|---|---|",
    ]
    curves = {}
    for arm in ARMS:
        xs, ys, sds = [], [], []
        for k in range(n_rounds):
            fs = numpy.array([r["arms"][arm][k]["dev_f"] * 100 for r in runs])
            toks = numpy.mean([r["arms"][arm][k]["tokens"] for r in runs])
            sd = fs.std(ddof=1) if len(fs) > 1 else 0.0
            xs.append(toks)
            ys.append(fs.mean())
            sds.append(sd)
            per_seed = ", ".join(f"{f:.2f}" for f in fs)
            lead = ""
            if arm == "calibrated" and k > 0:
                diffs = [(r["arms"]["calibrated"][k]["dev_f"] - r["arms"]["random"][k]["dev_f"]) * 100 for r in runs]
                lead = ", ".join(f"{d:+.2f}" for d in diffs)
            lines.append(f"| {k} | {arm} | {toks:,.0f} | {fs.mean():.2f} ± {sd:.2f} | {per_seed} | {lead} |")
        curves[arm] = (xs, ys, sds)
    print("\n".join(lines))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text("\n".join(lines) + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, (xs, ys, sds) in curves.items():
            ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, label=arm)
        ax.set_xlabel("labelled tokens")
        ax.set_ylabel("dev F (eng.testa)")
        ax.set_title(f"Active learning: calibrated queue vs random ({len(runs)} seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--start", type=float, default=0.1)
    p.add_argument("--step", type=float, default=0.1)
    p.add_argument("--max-steps", type=int, default=800)
    p.add_argument("--config", type=Path, default=ROOT / "configs/cpu_crf.cfg")
    p.add_argument("--train", type=Path, default=ROOT / "corpus/train.spacy")
    p.add_argument("--dev", type=Path, default=ROOT / "corpus/dev.spacy")
    p.add_argument("--out", type=Path, default=ROOT / "training/active_learning")
    r = sub.add_parser("report")
    r.add_argument("--out", type=Path, default=ROOT / "training/active_learning")
    r.add_argument("--md", type=Path, default=None)
    r.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
