"""The raw-text augmenter: training examples re-tokenized as an app's text is."""

import random

import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from conll_crf.pipeline.augment import retokenized

WORDS = ["Cricket", "at", "Chester-le-Street", "on", "1996-08-30", "for", "U.S.-based", "Durham", "."]
ENTS = ["O", "O", "B-LOC", "O", "O", "O", "B-MISC", "B-ORG", "O"]


@pytest.fixture
def nlp():
    return spacy.blank("en")


def gold_token_example(nlp):
    ref = Doc(nlp.vocab, words=WORDS, ents=ENTS)  # spaces unknown, as the CoNLL converter makes them
    pred = Doc(nlp.vocab, words=WORDS)
    return Example(pred, ref)


def test_retokenized_example_aligns_the_gold(nlp):
    eg = retokenized(nlp, gold_token_example(nlp))
    assert [t.text for t in eg.predicted] == [t.text for t in nlp.make_doc(" ".join(WORDS))]
    assert len(eg.predicted) > len(WORDS)  # spaCy splits the hyphenated tokens
    assert eg.reference.text == " ".join(WORDS) + " "
    tags = eg.get_aligned_ner()
    by_text = dict(zip([t.text for t in eg.predicted], tags))
    # the LOC spans five spaCy tokens: Chester - le - Street, tagged B I I I L
    loc = [tag for tok, tag in zip(eg.predicted, tags) if 2 <= tok.i < 2 + 5]
    assert loc == ["B-LOC", "I-LOC", "I-LOC", "I-LOC", "L-LOC"]
    assert by_text["Durham"] == "U-ORG"
    # "U.S.-based" is one gold MISC token; where spaCy's tokens cut it, whatever cannot be aligned is missing (None),
    # never a wrong tag
    misc = [
        tag for tok, tag in zip(eg.predicted, tags) if tok.idx >= eg.reference[6].idx and tok.idx < eg.reference[7].idx
    ]
    assert all(tag is None or tag.endswith("MISC") for tag in misc)
    assert [(e.text, e.label_) for e in eg.reference.ents] == [
        ("Chester-le-Street", "LOC"),
        ("U.S.-based", "MISC"),
        ("Durham", "ORG"),
    ]


@pytest.mark.parametrize("level,expected", [(0.0, 0), (1.0, 200)])
def test_level_zero_and_one(nlp, level, expected):
    augment = registry.augmenters.get("conll_crf.raw_text_augmenter.v1")(level=level)
    eg = gold_token_example(nlp)
    out = [list(augment(nlp, eg)) for _ in range(200)]
    assert all(len(o) == 1 for o in out)  # one example in, one out: nothing dropped, nothing repeated
    assert sum(len(o[0].predicted) != len(WORDS) for o in out) == expected


def test_level_is_a_probability(nlp):
    random.seed(0)
    augment = registry.augmenters.get("conll_crf.raw_text_augmenter.v1")(level=0.5)
    eg = gold_token_example(nlp)
    n = sum(len(next(iter(augment(nlp, eg))).predicted) != len(WORDS) for _ in range(2000))
    assert 900 < n < 1100
    with pytest.raises(ValueError, match="level"):
        registry.augmenters.get("conll_crf.raw_text_augmenter.v1")(level=1.5)


def test_corpus_reader_uses_it_from_config(tmp_path, nlp):
    from spacy.tokens import DocBin
    from spacy.training import Corpus

    db = DocBin(docs=[gold_token_example(nlp).reference] * 3)
    db.to_disk(tmp_path / "train.spacy")
    augment = registry.augmenters.get("conll_crf.raw_text_augmenter.v1")(level=1.0)
    egs = list(Corpus(tmp_path / "train.spacy", augmenter=augment)(nlp))
    assert len(egs) == 3
    assert all(len(eg.predicted) > len(WORDS) and len(eg.reference) == len(WORDS) for eg in egs)
