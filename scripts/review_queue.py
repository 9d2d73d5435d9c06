"""Which order finds a reviewer the most errors per document? Measured on dev, cross-fitted.

    python scripts/review_queue.py MODEL DEV.spacy [--out DIR] [--seed 0] [--name crf_ner]

Runs the pipeline on DEV's gold tokens with the gold sentence starts (whole
articles) and counts each document's real entity errors (false positives plus
false negatives against the gold). Then orders the documents four ways and
reports the share of all errors found after reviewing the first 5, 10, 20, 30
and 50% of them:
- `calibrated`: conll_crf.review.expected_errors (each predicted entity wrong
  with 1 - p, each candidate left out an entity with p) with the temperature
  fitted on the other half of the articles (cross-fitting, seed --seed);
- `uncalibrated`: the same at temperature 1;
- `min_token_marginal`: the sum over predicted entities of 1 - the smallest
  token marginal of the entity (a common heuristic without entity probabilities);
- `random`: the mean over 200 shuffles;
- `oracle`: by the real errors (the best any order can do).
Candidates are read at candidate_threshold 0.01. Writes DIR/review_queue.json
and DIR/review_queue.png (errors found against documents reviewed).
"""

import argparse
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List

import numpy
import spacy
from spacy.tokens import DocBin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import DocEntities, fit_temperature  # noqa: E402  (a sibling script)

from conll_crf.conll import gold_token_docs  # noqa: E402
from conll_crf.review import expected_errors  # noqa: E402

BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.5)


def found_curve(order: List[int], errors: numpy.ndarray) -> numpy.ndarray:
    """Share of all errors found after reviewing 0, 1, ..., n documents in `order`."""
    return numpy.concatenate([[0.0], numpy.cumsum(errors[order])]) / max(errors.sum(), 1)


def at_budgets(curve: numpy.ndarray) -> Dict[str, float]:
    n = len(curve) - 1
    return {f"{int(b * 100)}%": round(float(curve[int(round(b * n))]), 4) for b in BUDGETS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dev", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="crf_ner")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = spacy.load(args.model)
    pipe = base.get_pipe(args.name)
    refs = list(DocBin().from_disk(args.dev).get_docs(base.vocab))
    inputs = gold_token_docs(base.vocab, refs)
    items = [DocEntities(pipe, d, g, em) for d, g, em in zip(inputs, refs, pipe.emissions(inputs))]
    order = list(range(len(refs)))
    random.Random(args.seed).shuffle(order)
    halves = [sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])]
    temps = {}
    for fit_half, apply_half in ((0, 1), (1, 0)):
        t = fit_temperature([items[i] for i in halves[fit_half]])
        for i in halves[apply_half]:
            temps[i] = t

    def scores_at(temperature_of) -> numpy.ndarray:
        out = numpy.zeros(len(refs))
        for t in sorted(set(temperature_of.values())):
            cfg = {
                "components": {args.name: {"temperature": t, "candidate_threshold": 0.01, "temperature_unseen": None}}
            }
            nlp = spacy.load(args.model, config=cfg)
            idx = [i for i in range(len(refs)) if temperature_of[i] == t]
            for i, doc in zip(idx, nlp.pipe([gold_token_docs(nlp.vocab, [refs[i]])[0] for i in idx], batch_size=32)):
                out[i] = expected_errors(doc, pipe.spans_key)
        return out

    calibrated = scores_at(temps)
    uncalibrated = scores_at({i: 1.0 for i in range(len(refs))})
    min_marginal = numpy.array([float((1 - it.min_tag).sum()) for it in items])
    errors = numpy.array([float(it.n_gold - it.correct.sum() + (~it.correct).sum()) for it in items])
    curves = {
        "calibrated": found_curve(list(numpy.argsort(-calibrated, kind="stable")), errors),
        "uncalibrated": found_curve(list(numpy.argsort(-uncalibrated, kind="stable")), errors),
        "min_token_marginal": found_curve(list(numpy.argsort(-min_marginal, kind="stable")), errors),
        "oracle": found_curve(list(numpy.argsort(-errors, kind="stable")), errors),
    }
    rng = random.Random(args.seed)
    shuffles = []
    for _ in range(200):
        perm = list(range(len(refs)))
        rng.shuffle(perm)
        shuffles.append(found_curve(perm, errors))
    curves["random"] = numpy.mean(shuffles, axis=0)
    report = {
        "model": args.model,
        "dev": str(args.dev),
        "documents": len(refs),
        "errors": int(errors.sum()),
        "expected_errors_calibrated_total": round(float(calibrated.sum()), 1),
        "cross_fitted_temperatures": sorted(set(round(t, 3) for t in temps.values())),
        "share_of_errors_found": {k: at_budgets(c) for k, c in curves.items()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    print(f"{len(refs)} documents, {int(errors.sum())} entity errors (calibrated expectation {calibrated.sum():.0f})")
    for k, v in report["share_of_errors_found"].items():
        print(f"{k:20s} " + "  ".join(f"{b}: {x:.3f}" for b, x in v.items()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "review_queue.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(curves, args.out / "review_queue.png", len(refs))


def plot(curves: Dict[str, numpy.ndarray], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = numpy.arange(n + 1) / n
    for name, curve in curves.items():
        ax.plot(x, curve, label=name, ls="--" if name in ("oracle", "random") else "-")
    ax.set_xlabel("share of documents reviewed")
    ax.set_ylabel("share of entity errors found")
    ax.set_title("Review order on dev (cross-fitted)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
