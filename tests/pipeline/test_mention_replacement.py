"""conll_crf.mention_replacement_augmenter.v1: mentions swapped for others of the same label, all else kept."""

import random

import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from conll_crf.pipeline.mention_replacement import MentionPool, create_mention_replacement_augmenter, replace_mentions


def gold(nlp, words, ents, starts=None):
    doc = Doc(nlp.vocab, words=words, sent_starts=starts)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    return Example(Doc(nlp.vocab, words=words), doc)


def test_each_mention_is_replaced_by_one_of_its_label_and_the_rest_is_kept():
    nlp = spacy.blank("en")
    pool = MentionPool()
    pool.add(gold(nlp, ["New", "York", "Stock", "Exchange", "hired", "Ann"], [(0, 4, "ORG"), (5, 6, "PER")]).reference)
    words = ["Bob", "joined", "Acme", ".", "He", "left", "."]
    starts = [True, False, False, False, True, False, False]
    eg = gold(nlp, words, [(0, 1, "PER"), (2, 3, "ORG")], starts)
    random.seed(0)
    out = replace_mentions(nlp, eg, pool, level=1.0)
    ref = out.reference
    assert [(e.text, e.label_) for e in ref.ents] == [("Ann", "PER"), ("New York Stock Exchange", "ORG")]
    assert [t.text for t in ref] == ["Ann", "joined", "New", "York", "Stock", "Exchange", ".", "He", "left", "."]
    assert [t.is_sent_start for t in ref] == [True] + [False] * 6 + [True, False, False]
    assert [t.text for t in out.predicted] == [t.text for t in ref]
    assert replace_mentions(nlp, eg, pool, level=0.0) is eg


def test_the_augmenter_learns_its_pool_from_the_stream_and_chains():
    nlp = spacy.blank("en")
    seen = []

    def then(nlp, example):
        seen.append(example)
        yield example

    augment = create_mention_replacement_augmenter(1.0, then=then)
    first = gold(nlp, ["Ann", "sang"], [(0, 1, "PER")])
    second = gold(nlp, ["Bob", "Smith", "danced"], [(0, 2, "PER")])
    random.seed(1)
    assert [e.text for e in next(augment(nlp, first)).reference.ents] == ["Ann"]  # the pool has only Ann yet
    outs = [next(augment(nlp, second)).reference.ents[0] for _ in range(20)]
    assert {(e.text, e.label_) for e in outs} == {("Ann", "PER"), ("Bob Smith", "PER")}  # drawn from both
    assert len(seen) == 21
    with pytest.raises(ValueError, match="level must be in"):
        create_mention_replacement_augmenter(1.5)
