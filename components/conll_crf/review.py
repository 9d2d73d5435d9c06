"""Review queues: which documents a reviewer should see first, from crf_ner's entity probabilities.

A document's *expected errors* under the model's own (calibrated) probabilities:
each predicted entity is wrong with probability 1 - p, and each candidate the
best path left out (`doc.spans[spans_key]`, every span at or above the
candidate threshold) is a missed entity with probability p. Their sum is the
number of entity errors a reviewer can expect to fix in the document; ranking
documents by it puts the most fixes per document reviewed first
(scripts/review_queue.py measures it on dev against other orders). Reads any
Doc that a crf_ner (or a component writing spancat-style scores) annotated.
"""

from typing import Iterable, List, Tuple

from spacy.tokens import Doc


def expected_errors(doc: Doc, spans_key: str = "crf_ner") -> float:
    """Expected entity errors in `doc`: sum of (1 - p) over its entities, plus p over the scored
    candidates that are not entities. A doc without the scored group raises ValueError."""
    return sum(r[4] for r in entity_error_probabilities(doc, spans_key))


def entity_error_probabilities(doc: Doc, spans_key: str = "crf_ner") -> List[Tuple[int, int, str, str, float]]:
    """Per scored span, (start, end, label, kind, probability that it is an error): kind "predicted"
    (error: the entity is wrong, 1 - p) or "missed" (error: the candidate is a true entity left out, p),
    most likely error first: the entity-level review queue."""
    group = doc.spans.get(spans_key)
    if group is None or "scores" not in group.attrs:
        raise ValueError(f"doc has no scored spans under doc.spans[{spans_key!r}] (run crf_ner with confidence on)")
    ents = {(e.start, e.end, e.label_) for e in doc.ents}
    out = []
    for span, score in zip(group, group.attrs["scores"]):
        key, p = (span.start, span.end, span.label_), float(score)  # float64: the scores may be float32
        out.append((*key, "predicted", 1.0 - p) if key in ents else (*key, "missed", p))
    return sorted(out, key=lambda r: -r[4])


def review_order(docs: Iterable[Doc], spans_key: str = "crf_ner", budget: int = 0) -> List[Tuple[int, float]]:
    """(index, expected errors) of the docs, most expected errors first; the first `budget` (0: all)."""
    scored = sorted(((i, expected_errors(d, spans_key)) for i, d in enumerate(docs)), key=lambda r: (-r[1], r[0]))
    return scored[:budget] if budget else scored
