"""Calibration under shift: does a temperature fitted on names seen in training hold on names never seen?

    python scripts/calibration_shift.py MODEL TRAIN.spacy DEV.spacy [--json PATH] [--seed 0 [1 ...]] [--folds 2]

Later news has more names the model never saw in training (about half its
entities, against a third of dev's), and a temperature fitted on dev does not
travel there. This builds that shift inside dev: a predicted entity is *seen*
when its text occurs as an entity in TRAIN, else *unseen*
(scripts/unseen_entities.py's split), and measures the ECE (calibrate.py's,
15 bins) of several procedures, each fitted on one part and scored on another:

- `t1`: no temperature;
- `one_T_fit_on_seen`: one temperature fitted on the seen entities, scored on
  the unseen (the shift: calibrated where the model is at home, used where it is not);
- `one_T_fit_on_unseen`: the reverse;
- `one_T_cross_fitted`: one temperature fitted on all but one fold of dev's
  articles (all entities), scored on that fold, each fold in turn (with
  `--folds 2`, the default, the halves: what `calibrate` reports), split by
  seen/unseen;
- `seen_unseen_T_cross_fitted`: a temperature for seen and one for unseen
  entities (an entity's part is known at prediction time from the training
  names: crf_ner's `temperature` and `temperature_unseen`), cross-fitted the
  same way;
- `seen_unseen_T_on_all`: those two temperatures fitted on all of dev (what
  `calibrate --train` writes into the model).

With several `--seed`s, the articles are shuffled into folds once per seed
and `over_split_seeds` gives each cross-fitted ECE's mean, sd and values over
them (the split alone moves the unseen names' ECE by a few thousandths); the
other keys are the first seed's report.

Every part's ECE comes with `ece_if_calibrated`, the ECE a perfectly
calibrated model with the same confidences would show on as many entities
(ECE over finite bins is biased upwards, by about 0.02 on dev's 1,900 unseen
names), and `p_calibrated`, how often it would show at least the observed
ECE: a small p says the part is miscalibrated beyond the noise.

Temperatures are chosen on a grid (0.5 to 4, 57 values, log-spaced) by the log
loss of the fitting part. Input: gold tokens with the gold sentence starts,
whole articles, as `calibrate`.
"""

import argparse
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict

import numpy
import spacy
from spacy.tokens import DocBin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import DocEntities, correctness, ece, ece_draws  # noqa: E402  (a sibling script)
from unseen_entities import training_names  # noqa: E402  (a sibling script)

from conll_crf.conll import gold_token_docs  # noqa: E402

GRID = numpy.exp(numpy.linspace(numpy.log(0.5), numpy.log(4.0), 57))
FLOOR_DRAWS = 200


def log_loss(conf: numpy.ndarray, correct: numpy.ndarray) -> float:
    conf = numpy.clip(conf, 1e-12, 1 - 1e-12)
    return float(-(correct * numpy.log(conf) + (~correct) * numpy.log(1 - conf)).mean())


def fit(probs: numpy.ndarray, correct: numpy.ndarray, mask: numpy.ndarray) -> int:
    """The grid index with the lowest log loss over the entities in `mask`."""
    return int(numpy.argmin([log_loss(p[mask], correct[mask]) for p in probs]))


def summary(conf: numpy.ndarray, correct: numpy.ndarray) -> Dict[str, float]:
    """ECE, mean probability and accuracy of a part; beside its ECE, what a perfectly calibrated model with the
    same confidences would show on as many entities (`ece_if_calibrated`, the mean over FLOOR_DRAWS simulated
    outcomes: the estimator's noise floor) and how often it would show at least the observed ECE
    (`p_calibrated`: near 0 when the miscalibration is more than the noise of this many entities)."""
    if not len(conf):
        nan = float("nan")  # the same keys as a non-empty part's, so over_seeds reads any part
        return {
            "ece": nan,
            "ece_if_calibrated": nan,
            "p_calibrated": nan,
            "mean_probability": None,
            "accuracy": None,
            "entities": 0,
        }
    observed = ece(conf, correct)
    draws = ece_draws(conf, FLOOR_DRAWS)
    return {
        "ece": round(observed, 4),
        "ece_if_calibrated": round(float(draws.mean()), 4),
        "p_calibrated": round(float((draws >= observed).mean()), 3),
        "mean_probability": round(float(conf.mean()), 4),
        "accuracy": round(float(correct.mean()), 4),
        "entities": int(len(conf)),
    }


def shift_report(items, docs, names, seed: int = 0, folds: int = 2) -> Dict:
    """The report (see the module's doc) for `items` (calibrate.DocEntities of `docs`) and the
    training names, cross-fitted over `folds` folds of articles; also `seen_unseen_T_on_all`: the two
    temperatures fitted on all of them."""
    return report_for_split(entity_arrays(items, docs, names), seed, folds)


def entity_arrays(items, docs, names) -> Dict[str, numpy.ndarray]:
    """Per predicted entity: whether it is correct and seen, its article, and its probability at every grid
    temperature ([grid, N]: the costly part, a forward-backward per temperature, computed once for all splits)."""
    return {
        "correct": correctness(items),
        "seen": numpy.array([d[s:e].text in names for d, it in zip(docs, items) for s, e, _ in it.keys], dtype=bool),
        "article": numpy.array([i for i, it in enumerate(items) for _ in it.keys], dtype=int),
        "probs": numpy.stack([numpy.concatenate([it.probs(float(t)) for it in items]) for t in GRID]),
        "n_articles": len(items),
    }


def report_for_split(arrays: Dict, seed: int = 0, folds: int = 2) -> Dict:
    """shift_report's report from `entity_arrays`, the articles shuffled with `seed` into `folds` folds."""
    correct, seen, article, probs = (arrays[k] for k in ("correct", "seen", "article", "probs"))
    order = list(range(arrays["n_articles"]))
    random.Random(seed).shuffle(order)
    if not 2 <= folds <= len(order):
        raise ValueError(f"calibration shift: --folds must be between 2 and the number of articles, not {folds}")
    fold_of = numpy.empty(len(order), dtype=int)
    # contiguous runs of the shuffled articles, fold k from floor(k n / K): with K = 2 fold 0 is order[: n // 2]
    fold_of[order] = (numpy.arange(1, len(order) + 1) * folds - 1) // len(order)
    fold = fold_of[article]
    unseen = ~seen
    report: Dict = {
        "split": f"articles shuffled with seed {seed} into {folds} folds for cross-fitting"
        + (" (halves)" if folds == 2 else ""),
        "folds": folds,
        "seed": seed,
        "counts": {"predicted": int(len(correct)), "seen": int(seen.sum()), "unseen": int(unseen.sum())},
    }
    t1 = int(numpy.argmin(abs(GRID - 1.0)))
    report["t1"] = {k: summary(probs[t1][m], correct[m]) for k, m in (("seen", seen), ("unseen", unseen))}
    i = fit(probs, correct, seen)
    report["one_T_fit_on_seen"] = {"T": round(float(GRID[i]), 3), "unseen": summary(probs[i][unseen], correct[unseen])}
    i = fit(probs, correct, unseen)
    report["one_T_fit_on_unseen"] = {"T": round(float(GRID[i]), 3), "seen": summary(probs[i][seen], correct[seen])}
    for name, parts in (("one_T_cross_fitted", [None]), ("seen_unseen_T_cross_fitted", [seen, unseen])):
        conf = numpy.zeros(len(correct))
        temps = []
        for k in reversed(range(folds)):  # with K = 2: fitted on the first half first, as before
            fit_part = fold != k
            for part in parts:
                fit_mask = fit_part if part is None else fit_part & part
                apply_mask = ~fit_part if part is None else ~fit_part & part
                i = fit(probs, correct, fit_mask)
                temps.append(round(float(GRID[i]), 3))
                conf[apply_mask] = probs[i][apply_mask]
        parts_of = (("all", seen | unseen), ("seen", seen), ("unseen", unseen))
        report[name] = {"temperatures": temps, **{k: summary(conf[m], correct[m]) for k, m in parts_of}}
    report["seen_unseen_T_on_all"] = {
        "temperature": round(float(GRID[fit(probs, correct, seen)]), 3),
        "temperature_unseen": round(float(GRID[fit(probs, correct, unseen)]), 3),
    }
    return report


def over_seeds(reports, seeds) -> Dict:
    """Mean, sd and values of each cross-fitted procedure's ECE over the reports of several split seeds, with
    the mean noise floor (`ece_if_calibrated`) and each split's `p_calibrated`."""
    out: Dict = {"seeds": list(seeds)}
    for name in ("one_T_cross_fitted", "seen_unseen_T_cross_fitted"):
        out[name] = {}
        for part in ("all", "seen", "unseen"):
            values = [r[name][part]["ece"] for r in reports]
            out[name][part] = {
                "ece_mean": round(float(numpy.mean(values)), 4),
                "ece_sd": round(float(numpy.std(values, ddof=1)), 4),
                "values": values,
                "ece_if_calibrated_mean": round(
                    float(numpy.mean([r[name][part]["ece_if_calibrated"] for r in reports])), 4
                ),
                "p_calibrated": [r[name][part]["p_calibrated"] for r in reports],
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("train", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("--name", default="crf_ner")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="shuffle(s) of the articles before they are split into folds"
    )
    parser.add_argument("--folds", type=int, default=2, help="folds of articles for cross-fitting (default 2: halves)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    pipe = nlp.get_pipe(args.name)
    names = training_names(args.train, nlp.vocab)
    refs = list(DocBin().from_disk(args.dev).get_docs(nlp.vocab))
    docs = gold_token_docs(nlp.vocab, refs)
    items = [DocEntities(pipe, d, g, em) for d, g, em in zip(docs, refs, pipe.emissions(docs))]
    arrays = entity_arrays(items, docs, names)
    reports = [report_for_split(arrays, seed, args.folds) for seed in args.seed]
    report = {"model": args.model, "dev": str(args.dev), **reports[0]}
    if len(reports) > 1:
        report["over_split_seeds"] = over_seeds(reports, args.seed)
    report["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{key}: {json.dumps(value)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
