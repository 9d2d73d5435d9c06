"""`Span._.crf_prob`: an entity's probability, read from the scored span group crf_ner writes
(`doc.spans[spans_key]`, spancat's convention: `attrs["scores"]`, and `attrs["source"] = "crf_ner"`)."""

from typing import Optional

from spacy.tokens import Span


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
