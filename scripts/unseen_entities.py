"""Entity P/R/F on names seen in training and on names never seen (Augenstein et al. 2017's split).

    python scripts/unseen_entities.py MODEL TRAIN.spacy DEV.spacy [--json PATH] [--batch-size 32]

A gold entity is *seen* when its surface form (its text, exact case) occurs as
an entity, of any type, anywhere in TRAIN; else *unseen*. Predicted entities
are split by the same rule, so precision on unseen names counts the
predictions whose text never was a training entity. Scores the pipeline on
DEV's gold tokens with the gold sentence starts (the CoNLL convention), whole
articles. Prints and writes (--json) P/R/F overall, seen and unseen, and the
gold counts of each part.
"""

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import spacy
from spacy.tokens import DocBin

from conll_crf.conll import gold_token_docs

Ent = Tuple[int, int, int, str]  # doc, start, end, label


def training_names(train: Path, vocab) -> Set[str]:
    """The surface forms of all entities in a training DocBin."""
    return {ent.text for doc in DocBin().from_disk(train).get_docs(vocab) for ent in doc.ents}


def prf(gold: Set[Ent], pred: Set[Ent]) -> Dict[str, float]:
    tp = len(gold & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "p": round(100 * p, 2),
        "r": round(100 * r, 2),
        "f": round(100 * f, 2),
        "gold": len(gold),
        "pred": len(pred),
    }


def split_scores(golds: Iterable, preds: Iterable, names: Set[str]) -> Dict[str, Dict[str, float]]:
    """P/R/F of all, seen and unseen entities; golds and preds: per doc lists of (start, end, label, text)."""
    parts: Dict[str, Tuple[Set[Ent], Set[Ent]]] = {k: (set(), set()) for k in ("all", "seen", "unseen")}
    for i, (gold, pred) in enumerate(zip(golds, preds)):
        for which, ents in ((0, gold), (1, pred)):
            for start, end, label, text in ents:
                key = (i, start, end, label)
                parts["all"][which].add(key)
                parts["seen" if text in names else "unseen"][which].add(key)
    return {k: prf(g, p) for k, (g, p) in parts.items()}


def ents_of(docs) -> List[List[Tuple[int, int, str, str]]]:
    return [[(e.start, e.end, e.label_, e.text) for e in doc.ents] for doc in docs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("train", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    names = training_names(args.train, nlp.vocab)
    refs = list(DocBin().from_disk(args.dev).get_docs(nlp.vocab))
    preds = list(nlp.pipe(gold_token_docs(nlp.vocab, refs), batch_size=args.batch_size))
    scores = split_scores(ents_of(refs), ents_of(preds), names)
    for part, s in scores.items():
        print(f"{part:7s} P {s['p']:6.2f}  R {s['r']:6.2f}  F {s['f']:6.2f}  ({s['gold']} gold, {s['pred']} predicted)")
    if args.json:
        report = {
            "model": args.model,
            "train": str(args.train),
            "dev": str(args.dev),
            "input": "gold tokens with the gold sentence starts, whole articles",
            "training_names": len(names),
            "scores": scores,
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
