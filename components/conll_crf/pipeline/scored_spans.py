"""crf_ner's scored spans: writing the group (`doc.spans[spans_key]`, spancat's convention:
`attrs["scores"]`, and `attrs["source"] = "crf_ner"`), choosing each span's probability when
there are two temperatures, and `Span._.crf_prob`, an entity's probability read from the group."""

from typing import Optional

import numpy
from spacy.tokens import Doc, Span


def write_scored_spans(doc: Doc, spans_key: str, labels, presets, new, prob, cands, cand_p) -> None:
    """doc.spans[spans_key]: every candidate (rows (start, end, label index) `cands`, probabilities
    `cand_p`), the entities in doc.ents (`new`, probabilities in `prob` by (start, end, label);
    `presets` at 1.0) and the predicted ones below the threshold included."""
    scores = {(s, e, labels[x]): p for (s, e, x), p in zip(cands.tolist(), cand_p.tolist())}
    for ent in new:
        scores[(ent.start, ent.end, ent.label_)] = float(prob[(ent.start, ent.end, ent.label_)])
    for ent in presets:
        scores[(ent.start, ent.end, ent.label_)] = 1.0
    keys = sorted(scores)
    doc.spans[spans_key] = [Span(doc, s, e, label=label) for s, e, label in keys]
    group = doc.spans[spans_key]
    group.attrs["scores"] = [scores[k] for k in keys]
    group.attrs["source"] = "crf_ner"


def probs_by_name(doc: Doc, rows, probs, names) -> numpy.ndarray:
    """Each row's probability: `probs` [n] as they are, or for two temperatures [n, 2] the first
    for a span whose text is in `names` (the training data's entities), else the second."""
    if probs.ndim == 1:
        return probs
    if not len(probs):
        return probs[:, 0]
    # each span's own text, built from its few tokens (doc.text rebuilds the whole article's string)
    unseen = [doc[s:e].text not in names for s, e, _ in rows.tolist()]
    return probs[numpy.arange(len(probs)), numpy.asarray(unseen, dtype=int)]


def entity_probability(span: Span) -> Optional[float]:
    """`span._.crf_prob`: the probability a crf_ner component gave this exact
    entity (label and boundaries), from its scored span group; None if none did.

    crf_ner writes its group sorted by (start, end, label), so the entity is
    found by bisection: reading every entity's probability costs O(n log n), not
    O(n^2), on a long document. A group edited since (and so maybe unsorted) is
    scanned when bisection misses."""
    key = (span.start, span.end, span.label_)
    for group in span.doc.spans.values():
        scores = group.attrs.get("scores")
        if scores is None or group.attrs.get("source") != "crf_ner":
            continue
        lo, hi = 0, len(group)
        while lo < hi:
            mid = (lo + hi) // 2
            cand = group[mid]
            if _key(cand) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(group) and _key(group[lo]) == key:
            return float(scores[lo])
        for cand, score in zip(group, scores):
            if _key(cand) == key:
                return float(score)
    return None


def _key(span: Span):
    return span.start, span.end, span.label_


if not Span.has_extension("crf_prob"):
    Span.set_extension("crf_prob", getter=entity_probability)
