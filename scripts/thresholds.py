"""Per-label thresholds for a target precision, picked on dev by cross-fitting.

    python scripts/thresholds.py MODEL DEV.spacy --precision 0.95 [--out DIR] [--write MODEL_OUT] [--seed 0]

Runs the pipeline (its own temperature(s), threshold 0) on DEV's gold tokens
with the gold sentence starts, whole articles, and keeps every predicted entity
with its probability and whether it is right. For each label, the threshold is
the lowest probability t such that the entities at or above t reach the target
precision on the fitting part (the most recall that keeps the precision); a
label that never reaches it gets 1.0 (nothing of it passes, unless its
probability is exactly 1). Cross-fitting: the articles are shuffled (--seed)
into two halves; thresholds fitted on one are scored on the other, both ways,
and the held-out entities pooled: per label and in all, the precision and
recall reached (recall against every gold entity, those the model missed
included). Writes DIR/thresholds.json and DIR/thresholds.png (held-out
precision and recall per label against the target). --write saves the model
with the thresholds fitted on all of DEV in its config (crf_ner's
`thresholds`); the packaged model ships without them.
"""

import argparse
import json
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Tuple

import numpy
import spacy
from spacy.tokens import DocBin

from conll_crf.conll import gold_token_docs

Row = Tuple[int, str, float, bool]  # article, label, probability, correct


def predicted_rows(nlp, refs) -> Tuple[List[Row], Dict[Tuple[int, str], int]]:
    """Every predicted entity (article, label, probability, correct) and the gold count per (article, label)."""
    rows, gold = [], {}
    docs = nlp.pipe(gold_token_docs(nlp.vocab, refs), batch_size=32)
    for i, (doc, ref) in enumerate(zip(docs, refs)):
        truth = {(e.start, e.end, e.label_) for e in ref.ents}
        for e in ref.ents:
            gold[(i, e.label_)] = gold.get((i, e.label_), 0) + 1
        for e in doc.ents:
            rows.append((i, e.label_, float(e._.crf_prob), (e.start, e.end, e.label_) in truth))
    return rows, gold


def pick(probs: numpy.ndarray, correct: numpy.ndarray, target: float) -> float:
    """The lowest threshold whose entities at or above it reach `target` precision; 1.0 if none does."""
    order = numpy.argsort(-probs, kind="stable")
    p, c = probs[order], correct[order]
    precision = numpy.cumsum(c) / numpy.arange(1, len(c) + 1)
    ok = [k for k in range(len(p)) if precision[k] >= target and (k + 1 == len(p) or p[k + 1] < p[k])]
    return float(p[max(ok)]) if ok else 1.0


def fit(rows: List[Row], labels, target: float) -> Dict[str, float]:
    out = {}
    for label in labels:
        sel = [r for r in rows if r[1] == label]
        probs = numpy.array([r[2] for r in sel])
        out[label] = pick(probs, numpy.array([r[3] for r in sel], dtype=bool), target) if sel else 1.0
    return out


def scores(rows: List[Row], n_gold: int) -> Dict[str, float]:
    tp = sum(r[3] for r in rows)
    return {
        "precision": round(tp / len(rows), 4) if rows else None,
        "recall": round(tp / n_gold, 4) if n_gold else None,
        "kept": len(rows),
        "gold": n_gold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dev", type=Path)
    parser.add_argument("--precision", type=float, required=True, help="target precision per label, e.g. 0.95")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--name", default="crf_ner")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0.0 < args.precision <= 1.0:
        parser.error("--precision must be in (0, 1]")
    nlp = spacy.load(args.model, config={"components": {args.name: {"threshold": 0.0, "thresholds": {}}}})
    labels = list(nlp.get_pipe(args.name).labels)
    refs = list(DocBin().from_disk(args.dev).get_docs(nlp.vocab))
    rows, gold = predicted_rows(nlp, refs)
    order = list(range(len(refs)))
    random.Random(args.seed).shuffle(order)
    halves = [set(order[: len(order) // 2]), set(order[len(order) // 2 :])]
    held: List[Row] = []
    fitted = []
    for a, b in ((0, 1), (1, 0)):
        cut = fit([r for r in rows if r[0] in halves[a]], labels, args.precision)
        fitted.append(cut)
        held += [r for r in rows if r[0] in halves[b] and r[2] >= cut[r[1]]]
    n_gold = {label: sum(n for (_, lab), n in gold.items() if lab == label) for label in labels}
    untouched = {label: scores([r for r in rows if r[1] == label], n_gold[label]) for label in labels}
    report = {
        "model": args.model,
        "dev": str(args.dev),
        "target_precision": args.precision,
        "input": "gold tokens with the gold sentence starts, whole articles",
        "split": f"articles shuffled with seed {args.seed} into halves; thresholds fitted on one, scored on the other",
        "cross_fitted_thresholds": fitted,
        "held_out": {
            **{label: scores([r for r in held if r[1] == label], n_gold[label]) for label in labels},
            "all": scores(held, sum(n_gold.values())),
        },
        "without_thresholds": {**untouched, "all": scores(rows, sum(n_gold.values()))},
        "thresholds": fit(rows, labels, args.precision),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    for label in labels + ["all"]:
        h, u = report["held_out"][label], report["without_thresholds"][label]
        cut = report["thresholds"].get(label)
        print(
            f"{label:6s} held out: P {h['precision']}  R {h['recall']}  (without thresholds: P {u['precision']} "
            f"R {u['recall']})" + (f"  threshold on all of dev {cut:.3f}" if cut is not None else "")
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "thresholds.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(report, labels, args.out / "thresholds.png")
    if args.write:
        nlp = spacy.load(args.model, config={"components": {args.name: {"thresholds": report["thresholds"]}}})
        nlp.to_disk(args.write)
        print(f"wrote {args.write} with per-label thresholds {report['thresholds']}")


def plot(report: Dict, labels: List[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = labels + ["all"]
    x = numpy.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, (key, style) in enumerate((("without_thresholds", 0.35), ("held_out", 1.0))):
        for j, metric in enumerate(("precision", "recall")):
            values = [report[key][n][metric] or 0 for n in names]
            label = f"{metric}, {'no thresholds' if key == 'without_thresholds' else 'held-out thresholds'}"
            ax.bar(x + (2 * k + j - 1.5) * 0.2, values, 0.2, alpha=style, label=label, color=f"C{j}")
    ax.axhline(report["target_precision"], color="k", lw=1, ls="--", label="target precision")
    ax.set_xticks(x, names)
    ax.set_ylim(0.5, 1.0)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"Per-label thresholds for precision {report['target_precision']} (cross-fitted on dev halves)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
