"""Calibrate crf_ner's entity probabilities with one temperature, and measure it.

    python scripts/calibrate.py MODEL CORPUS OUT_DIR [--write MODEL_OUT] [--name NAME] [--seed 0]
    python scripts/calibrate.py --beam MODEL CORPUS OUT_DIR [--name NAME]   (spaCy's beam_ner, for comparison)

CORPUS: the dev DocBin (eng.testa); the pipeline runs on its gold tokens with
the gold sentence starts, whole articles. The temperature T divides the CRF's
emission, transition, start and end scores before the entity marginals (the
constraints stay hard, Viterbi decoding does not change); it is fitted by
minimising the log loss of "this predicted entity is correct" (exact
boundaries and type) over the predicted entities, by golden-section search on
log T in [1/8, 8].

Reported on held-out halves by cross-fitting: the articles are split in two
halves at random (--seed), T is fitted on one and scored on the other, both
ways, and the held-out predictions are pooled. Metrics over predicted
entities: expected calibration error (15 equal-width bins), Brier score, the
average precision and AUROC of the confidence for correct vs incorrect, for:
the CRF probability at T = 1, after the temperature, and two heuristics a user
could compute instead from the same CRF (the mean and the minimum over the
entity's tokens of the marginal of its predicted tag, as HF pipelines average
softmaxes). With --beam, the same metrics for spaCy's beam_ner entity scores
(the beam's probability mass of each entity, from `scored_ents`-style beam
parses), no temperature. Also, in-sample on the whole corpus, the ECE over a
grid of temperatures (`temperature_scan`, fine around the fitted one): the
lowest ECE any single temperature reaches there, which no fitted temperature
can beat held out.
And, for analysis only (nothing shipped uses it): a monotone map of the
calibrated probability (isotonic regression, pool-adjacent-violators, fitted on
one half after that half's temperature, scored on the other; ranking and so AP
and AUROC barely move), to show what a map richer than one temperature reaches.

Writes OUT_DIR/calibration.json, OUT_DIR/reliability.png (reliability
diagram) and OUT_DIR/threshold.png (precision and recall of doc.ents as
`threshold` moves, after the temperature). --write MODEL_OUT saves the model
with the temperature fitted on the whole corpus as the component's
`temperature` in its config (so the packaged pipeline is calibrated, and
`nlp.config` says so).
"""

import argparse
import json
import math
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
import spacy
import torch
from spacy.tokens import DocBin

from conll_crf.conll import gold_token_docs

N_BINS = 15


# -- metrics ------------------------------------------------------------------------------


def ece(conf: numpy.ndarray, correct: numpy.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of |accuracy - mean confidence|
    weighted by the bin's share."""
    if len(conf) == 0:
        return float("nan")
    return float(
        sum(n / len(conf) * abs(acc - mean_conf) for _, mean_conf, acc, n in reliability(conf, correct, n_bins))
    )


def average_precision(conf: numpy.ndarray, correct: numpy.ndarray) -> float:
    """Area under the precision-recall curve of `correct` ranked by `conf` (ties broken pessimistically)."""
    order = numpy.lexsort((correct, -conf))  # by confidence, incorrect first among ties
    hits = correct[order].astype(float)
    if hits.sum() == 0:
        return float("nan")
    precision = numpy.cumsum(hits) / numpy.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def auroc(conf: numpy.ndarray, correct: numpy.ndarray) -> float:
    """P(conf of a random correct > conf of a random incorrect), ties counting 1/2 (Mann-Whitney)."""
    pos, neg = conf[correct], conf[~correct]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    values = numpy.concatenate([pos, neg])
    order = values.argsort(kind="mergesort")
    ranks = numpy.empty(len(values))
    sorted_vals = values[order]
    i = 0
    while i < len(values):  # average ranks of ties
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ece_draws(conf: numpy.ndarray, draws: int = 200, seed: int = 0) -> numpy.ndarray:
    """The ECEs [draws] of a perfectly calibrated model with these confidences on this many entities: each
    draw simulates the outcomes, every entity correct with probability = its confidence."""
    rng = numpy.random.default_rng(seed)
    conf = numpy.clip(conf, 0.0, 1.0)
    return numpy.array([ece(conf, (rng.random(len(conf)) < conf).astype(float)) for _ in range(draws)])


def ece_floor(conf: numpy.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE that a perfectly calibrated model with these confidences would
    show on this many entities (mean over `draws` simulated outcomes, each
    entity correct with probability = its confidence): the estimator's noise
    floor, since ECE over finite bins is biased upwards."""
    if len(conf) == 0:
        return float("nan")
    return float(ece_draws(conf, draws, seed).mean())


def metrics(conf: numpy.ndarray, correct: numpy.ndarray) -> Dict[str, float]:
    conf = numpy.clip(conf, 0.0, 1.0)
    return {
        "ece": ece(conf, correct),
        "ece_of_a_calibrated_model": ece_floor(conf),
        "brier": float(((conf - correct) ** 2).mean()) if len(conf) else float("nan"),
        "average_precision": average_precision(conf, correct),
        "auroc": auroc(conf, correct),
        "mean_confidence": float(conf.mean()) if len(conf) else float("nan"),
        "accuracy": float(correct.mean()) if len(conf) else float("nan"),
        "entities": int(len(conf)),
        "reliability": [
            dict(zip(("bin_center", "mean_confidence", "accuracy", "entities"), row))
            for row in reliability(conf, correct)
        ],
    }


def isotonic_fit(conf: numpy.ndarray, correct: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Isotonic regression of `correct` on `conf` (pool adjacent violators):
    knots (the mean confidence of each pooled block, increasing) and the
    block's accuracy (non-decreasing), for `isotonic_apply`."""
    order = numpy.argsort(conf, kind="mergesort")
    xs, ys = conf[order].astype(float), correct[order].astype(float)
    sums_x, sums_y, counts = [], [], []
    for x, y in zip(xs, ys):
        sums_x.append(x)
        sums_y.append(y)
        counts.append(1)
        while len(counts) > 1 and sums_y[-2] / counts[-2] >= sums_y[-1] / counts[-1]:
            y_last, x_last, n_last = sums_y.pop(), sums_x.pop(), counts.pop()
            sums_y[-1] += y_last
            sums_x[-1] += x_last
            counts[-1] += n_last
    counts_a = numpy.array(counts, dtype=float)
    return numpy.array(sums_x) / counts_a, numpy.array(sums_y) / counts_a


def isotonic_apply(knots: Tuple[numpy.ndarray, numpy.ndarray], conf: numpy.ndarray) -> numpy.ndarray:
    """The fitted map at `conf`: linear between the blocks' mean confidences, constant beyond them."""
    xs, ys = knots
    if len(xs) == 0:
        return conf.astype(float)
    return numpy.interp(conf, xs, ys)


def reliability(conf: numpy.ndarray, correct: numpy.ndarray, n_bins: int = N_BINS):
    bins = numpy.minimum((conf * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            out.append(((b + 0.5) / n_bins, float(conf[sel].mean()), float(correct[sel].mean()), int(sel.sum())))
    return out


# -- the CRF's entities -------------------------------------------------------------------


class DocEntities:
    """A doc's predicted entities with what every confidence is computed from."""

    def __init__(self, pipe, doc, gold, em: numpy.ndarray):
        self.em = torch.as_tensor(em, dtype=torch.float64).unsqueeze(0)
        labels = list(pipe.labels)
        crf = pipe.crf()
        mask = torch.ones(self.em.shape[:2], dtype=torch.bool)
        if em.shape[0]:
            paths = crf.viterbi(self.em, mask)[1]
            self.spans = crf.path_entities(paths)  # [N, 4]
            marg = crf.marginals(self.em, mask)[0]  # [T, K]
            tags = paths[0]
            token_p = marg.gather(1, tags.clamp(min=0).unsqueeze(1)).squeeze(1).numpy()
        else:
            self.spans = torch.zeros(0, 4, dtype=torch.long)
            token_p = numpy.zeros(0)
        self.mask = mask
        gold_set = {(e.start, e.end, e.label_) for e in gold.ents}
        rows = self.spans.tolist()
        self.keys = [(s, e, labels[x]) for _, s, e, x in rows]
        self.correct = numpy.array([k in gold_set for k in self.keys], dtype=bool)
        self.n_gold = len(gold_set)
        self.mean_tag = numpy.array([token_p[s:e].mean() for s, e, _ in self.keys]) if rows else numpy.zeros(0)
        self.min_tag = numpy.array([token_p[s:e].min() for s, e, _ in self.keys]) if rows else numpy.zeros(0)
        self.crf = crf

    def probs(self, temperature: float) -> numpy.ndarray:
        if not len(self.spans):
            return numpy.zeros(0)
        with torch.no_grad():
            return self.crf.entity_probabilities(self.em, self.spans, self.mask, temperature=temperature).numpy()


def confidences(items: Sequence[DocEntities], temperature: float) -> numpy.ndarray:
    """The predicted entities' probabilities at `temperature`, all items in order."""
    return numpy.concatenate([d.probs(temperature) for d in items]) if items else numpy.zeros(0)


def correctness(items: Sequence[DocEntities]) -> numpy.ndarray:
    """Whether each predicted entity is correct, all items in order (bool)."""
    return numpy.concatenate([d.correct for d in items]).astype(bool) if items else numpy.zeros(0, dtype=bool)


def log_loss(items: Sequence[DocEntities], temperature: float) -> float:
    conf = numpy.clip(confidences(items, temperature), 1e-12, 1 - 1e-12)
    correct = correctness(items)
    return float(-(correct * numpy.log(conf) + (~correct) * numpy.log(1 - conf)).mean())


def fit_temperature(items: Sequence[DocEntities]) -> float:
    """argmin over log T in [log 1/8, log 8] of the log loss (golden-section search, 40 steps);
    1.0 when there is no predicted entity, or only correct (or only wrong) ones, to fit on."""
    correct = correctness(items)
    if correct.all() or not correct.any():
        return 1.0
    lo, hi = math.log(1 / 8), math.log(8)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = log_loss(items, math.exp(a)), log_loss(items, math.exp(b))
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = log_loss(items, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = log_loss(items, math.exp(b))
    return math.exp((lo + hi) / 2)


# coarse at the ends, every 0.02 from 1.5 to 2.1 where the fitted temperatures fall
SCAN_TEMPERATURES = (1.0, 1.2, 1.4) + tuple(round(1.5 + 0.02 * i, 2) for i in range(31)) + (2.2, 2.4, 2.6, 3.0)


def scan_grid(around: Optional[float] = None) -> List[float]:
    """SCAN_TEMPERATURES, plus `around` (the fitted temperature) and every 0.01
    within 0.15 of it, so the scan is fine wherever the fit lands (the
    transformer's temperatures, 1.1-1.2, fall on the coarse part of the fixed
    grid) and never misses the fitted temperature itself."""
    grid = set(SCAN_TEMPERATURES)
    if around is not None and math.isfinite(around) and around > 0:
        grid.add(float(around))
        grid.update(t for t in (round(around + 0.01 * k, 2) for k in range(-15, 16)) if t > 0)
    return sorted(grid)


def temperature_scan(items: Sequence[DocEntities], around: Optional[float] = None) -> List[Dict[str, float]]:
    """ECE, Brier score and mean confidence over all the items (in-sample, no
    held-out half) for a grid of temperatures (`scan_grid`): how low any single
    temperature can bring the ECE on this corpus, a bound the fitted one cannot
    beat."""
    correct = correctness(items)
    rows = []
    for t in scan_grid(around):
        conf = confidences(items, t)
        rows.append(
            {
                "temperature": t,
                "ece": ece(conf, correct),
                "brier": float(((conf - correct) ** 2).mean()) if len(conf) else float("nan"),
                "mean_confidence": float(conf.mean()) if len(conf) else float("nan"),
            }
        )
    return rows


# -- spaCy's beam_ner ---------------------------------------------------------------------


def beam_entities(nlp, name: str, inputs, refs) -> Tuple[numpy.ndarray, numpy.ndarray, List]:
    """beam_ner's entity scores: for each doc, the summed probability of the
    beam parses that contain each entity (what `scored_ents` gives); the
    predicted entities (doc.ents of the best parse) with their scores."""
    pipe = nlp.get_pipe(name)
    conf, correct, per_doc = [], [], []
    for doc, gold in zip(inputs, refs):
        for other_name, other in nlp.pipeline:
            if other_name == name:
                break
            doc = other(doc)
        beams = pipe.predict([doc])
        raw = pipe.scored_ents(beams)[0]  # {(start, end, label): summed probability of the parses with it}
        scores = {
            (s, e, label if isinstance(label, str) else nlp.vocab.strings[label]): p for (s, e, label), p in raw.items()
        }
        pipe.set_annotations([doc], beams)
        gold_set = {(e.start, e.end, e.label_) for e in gold.ents}
        doc_conf = []
        for ent in doc.ents:
            key = (ent.start, ent.end, ent.label_)
            p = float(scores.get(key, 0.0))
            conf.append(p)
            correct.append(key in gold_set)
            doc_conf.append(p)
        per_doc.append(doc_conf)
    return numpy.array(conf), numpy.array(correct, dtype=bool), per_doc


# -- figures ------------------------------------------------------------------------------


def plot_reliability(curves: Dict[str, Tuple[numpy.ndarray, numpy.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for label, (conf, correct) in curves.items():
        pts = reliability(conf, correct)
        ax.plot(
            [p[1] for p in pts],
            [p[2] for p in pts],
            marker="o",
            markersize=4,
            label=f"{label} (ECE {ece(conf, correct):.3f})",
        )
    ax.set_xlabel("confidence (mean per bin, 15 equal-width bins)")
    ax.set_ylabel("fraction of predicted entities that are correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_threshold(conf: numpy.ndarray, correct: numpy.ndarray, n_gold: int, path: Path, title: str) -> List[Dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for t in numpy.linspace(0, 0.95, 20):
        keep = conf >= t
        tp = int(correct[keep].sum())
        p = tp / keep.sum() if keep.sum() else float("nan")
        r = tp / n_gold if n_gold else float("nan")
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"threshold": float(t), "precision": p, "recall": r, "f": f, "entities": int(keep.sum())})
    fig, ax = plt.subplots(figsize=(5.2, 4))
    ts = [r["threshold"] for r in rows]
    for key in ("precision", "recall", "f"):
        ax.plot(ts, [r[key] for r in rows], marker=".", label=key)
    ax.set_xlabel("threshold (entities below it leave doc.ents)")
    ax.set_ylim(min(0.5, min(r["recall"] for r in rows) - 0.05), 1.0)
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return rows


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--write", type=Path, default=None, help="save the model with the fitted temperature here")
    parser.add_argument(
        "--name", default=None, help="the component (default: crf_ner, or beam_ner's 'ner' with --beam)"
    )
    parser.add_argument("--beam", action="store_true", help="score spaCy's beam_ner instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train", type=Path, default=None, help="training corpus: also fit temperature_unseen (calibration_shift.py)"
    )
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    refs = list(DocBin().from_disk(args.corpus).get_docs(nlp.vocab))
    inputs = gold_token_docs(nlp.vocab, refs)
    args.out.mkdir(parents=True, exist_ok=True)
    order = list(range(len(refs)))
    random.Random(args.seed).shuffle(order)
    halves = [sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])]
    report: Dict = {
        "model": args.model,
        "corpus": str(args.corpus),
        "docs": len(refs),
        "bins": N_BINS,
        "split": f"articles shuffled with seed {args.seed}, two halves of {len(halves[0])} and {len(halves[1])}",
    }
    if args.beam:
        name = args.name or "ner"
        conf, correct, _ = beam_entities(nlp, name, inputs, refs)
        report["beam_ner"] = metrics(conf, correct)
        plot_reliability(
            {"beam_ner scores": (conf, correct)},
            args.out / "reliability.png",
            f"{args.model}: beam_ner on {args.corpus.name}",
        )
        (args.out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["beam_ner"], indent=2))
        return
    name = args.name or "crf_ner"
    pipe = nlp.get_pipe(name)
    before = [n for n, _ in nlp.pipeline[: nlp.pipe_names.index(name)]]
    docs = list(nlp.pipe(inputs, disable=[n for n in nlp.pipe_names if n not in before])) if before else inputs
    ems = pipe.emissions(docs)
    items = [DocEntities(pipe, d, g, em) for d, g, em in zip(docs, refs, ems)]
    pooled: Dict[str, List] = {k: [] for k in ("t1", "calibrated", "isotonic", "mean_tag", "min_tag", "correct")}
    fitted = []
    for fit_half, test_half in ((0, 1), (1, 0)):
        fit = [items[i] for i in halves[fit_half]]
        t = fit_temperature(fit)
        fitted.append(t)
        test = [items[i] for i in halves[test_half]]
        pooled["t1"].append(confidences(test, 1.0))
        pooled["calibrated"].append(confidences(test, t))
        knots = isotonic_fit(confidences(fit, t), correctness(fit))
        pooled["isotonic"].append(isotonic_apply(knots, pooled["calibrated"][-1]))
        pooled["mean_tag"].append(numpy.concatenate([d.mean_tag for d in test]))
        pooled["min_tag"].append(numpy.concatenate([d.min_tag for d in test]))
        pooled["correct"].append(correctness(test))
    cat = {k: numpy.concatenate(v) for k, v in pooled.items()}
    correct = cat["correct"].astype(bool)
    report["cross_fitted_temperatures"] = fitted
    report["held_out"] = {
        "crf_probability_T1": metrics(cat["t1"], correct),
        "crf_probability_calibrated": metrics(cat["calibrated"], correct),
        "mean_token_marginal": metrics(cat["mean_tag"], correct),
        "min_token_marginal": metrics(cat["min_tag"], correct),
        "analysis_only_isotonic_map_after_temperature": metrics(cat["isotonic"], correct),
    }
    t_all = fit_temperature(items)
    report["temperature"] = t_all
    temps = {"temperature": float(t_all)}
    if args.train is not None:  # names never seen in training get a temperature of their own
        from calibration_shift import shift_report
        from unseen_entities import training_names

        names = training_names(args.train, nlp.vocab)
        report["seen_unseen"] = shift_report(items, docs, names, args.seed)
        temps = report["seen_unseen"]["seen_unseen_T_on_all"]
    all_conf = confidences(items, t_all)
    all_correct = correctness(items)
    n_gold = sum(d.n_gold for d in items)
    plot_reliability(
        {
            "CRF probability, T = 1": (cat["t1"], correct),
            f"CRF probability, T fitted ({fitted[0]:.2f}, {fitted[1]:.2f})": (cat["calibrated"], correct),
            "mean token marginal": (cat["mean_tag"], correct),
            "min token marginal": (cat["min_tag"], correct),
        },
        args.out / "reliability.png",
        f"{Path(args.model).parent.name}/{Path(args.model).name}: predicted entities,\n"
        f"held-out halves of {args.corpus.name} (cross-fitted)",
    )
    report["temperature_scan"] = temperature_scan(items, around=t_all)
    report["threshold_curve"] = plot_threshold(
        all_conf,
        all_correct,
        n_gold,
        args.out / "threshold.png",
        f"{Path(args.model).parent.name}/{Path(args.model).name}: {args.corpus.name}, T = {t_all:.2f}",
    )
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, m in report["held_out"].items():
        print(
            f"{key:28s} ECE {m['ece']:.4f} (a calibrated model's: {m['ece_of_a_calibrated_model']:.4f})  "
            f"Brier {m['brier']:.4f}  AP {m['average_precision']:.4f}  AUROC {m['auroc']:.4f}  "
            f"({m['entities']} entities)"
        )
    print(
        f"temperatures fitted on the halves: {fitted[0]:.3f}, {fitted[1]:.3f}; "
        f"on all of {args.corpus.name}: {t_all:.3f}"
    )
    best = min(report["temperature_scan"], key=lambda r: r["ece"])
    print(
        f"in-sample, on all of {args.corpus.name}: the lowest ECE one temperature reaches on the scan is "
        f"{best['ece']:.4f} (T = {best['temperature']:.2f}); at the fitted T: {ece(all_conf, all_correct):.4f}"
    )
    if args.write:
        calibrated = spacy.load(args.model, config={"components": {name: temps}})
        calibrated.to_disk(args.write)
        print(f"wrote {args.write} with crf_ner {', '.join(f'{k} {v:.3f}' for k, v in temps.items())}")


if __name__ == "__main__":
    main()
