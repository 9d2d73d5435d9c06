"""conll_crf.review: expected errors from the scored spans, and the queues built on them."""

import pytest
import spacy
from spacy.tokens import Span

from conll_crf.review import entity_error_probabilities, expected_errors, review_order


def scored_doc(nlp, text, ents, scored):
    doc = nlp(text)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    doc.spans["crf_ner"] = [Span(doc, s, e, label=label) for s, e, label, _ in scored]
    doc.spans["crf_ner"].attrs["scores"] = [p for *_, p in scored]
    return doc


def test_expected_errors_count_doubtful_entities_and_likely_misses():
    nlp = spacy.blank("en")
    doc = scored_doc(
        nlp,
        "Ann met Bob in Paris",
        [(0, 1, "PER"), (4, 5, "LOC")],
        [(0, 1, "PER", 0.9), (2, 3, "PER", 0.3), (4, 5, "LOC", 0.6), (4, 5, "ORG", 0.35)],
    )
    assert expected_errors(doc) == pytest.approx(0.1 + 0.3 + 0.4 + 0.35)
    queue = entity_error_probabilities(doc)
    assert [(r[0], r[2], r[3]) for r in queue] == [
        (4, "LOC", "predicted"),
        (4, "ORG", "missed"),
        (2, "PER", "missed"),
        (0, "PER", "predicted"),
    ]
    sure = scored_doc(nlp, "Ann sang", [(0, 1, "PER")], [(0, 1, "PER", 1.0)])
    assert review_order([sure, doc]) == [(1, pytest.approx(1.15)), (0, 0.0)]
    assert review_order([sure, doc], budget=1) == [(1, pytest.approx(1.15))]
    with pytest.raises(ValueError, match="no scored spans"):
        expected_errors(nlp("no spans here"))
