"""conll_crf.HashCharEmbed.v5's known words: a word the training data has fewer than `known_words_min_count` times
reads the "unknown" identity that word dropout trains, in prediction too (Lample et al.'s UNK)."""

import numpy
import pytest
import spacy
from spacy.attrs import NORM
from spacy.training import Example
from spacy.util import registry
from thinc.api import fix_random_seed

from conll_crf.pipeline.word_dropout import UNKNOWN_WORD_ID, count_known_words, unknown_words

SMALL = dict(width=16, rows=[50, 10, 20, 20], char_width=8, char_rows=50, nM=8, nC=4)
TRAIN = ["Peter Blackburn went to Brussels on Monday .", "Peter met the EU commissioner on Monday ."]


def _docs(texts):
    nlp = spacy.blank("en")
    return [nlp.make_doc(t) for t in texts]


def _embed(version="v5", **kwargs):
    fix_random_seed(0)
    return registry.architectures.get(f"conll_crf.HashCharEmbed.{version}")(**SMALL, **kwargs)


def test_counts_the_training_words_per_node():
    model = _embed(word_dropout=0.2, known_words_min_count=2)
    docs = _docs(TRAIN)
    assert count_known_words(model, docs) == 2  # the MultiHashEmbed's NORM and the CharacterEmbed's
    strings = docs[0].vocab.strings
    expected = sorted(strings[w] for w in ("peter", "on", "monday", "."))  # NORM is lower case; twice or more
    for node in [n for n in model.walk() if n.name == "unknown_words"]:
        assert node.get_param("known").dtype == numpy.uint64
        assert node.get_param("known").tolist() == expected
    # v4, or v5 without known words: nothing to count, and the docs are not read
    assert count_known_words(_embed("v4", word_dropout=0.2), iter(lambda: 1 / 0, None)) == 0
    assert count_known_words(_embed(word_dropout=0.2), iter(lambda: 1 / 0, None)) == 0


def test_unknown_words_lose_identity_in_prediction_too():
    layer = unknown_words([0], [NORM], min_count=1)
    layer.set_param("known", numpy.array([3, 7, 11], dtype="uint64"))
    X = [numpy.array([[3, 100], [5, 101], [11, 102], [12, 103]], dtype="uint64"), numpy.zeros((0, 2), "uint64")]
    Y, _ = layer(X, is_train=False)
    assert Y[0][:, 0].tolist() == [3, UNKNOWN_WORD_ID, 11, UNKNOWN_WORD_ID]
    numpy.testing.assert_array_equal(Y[0][:, 1], X[0][:, 1])  # other columns kept
    assert X[0][1, 0] == 5 and Y[1].shape == (0, 2)  # the input untouched; an empty doc passes
    # in training, word dropout's mask adds to the unknown words
    layer.attrs["mask"] = [numpy.array([True, False, False, False]), numpy.zeros(0, dtype=bool)]
    Y, _ = layer(X, is_train=True)
    assert Y[0][:, 0].tolist() == [UNKNOWN_WORD_ID, UNKNOWN_WORD_ID, 11, UNKNOWN_WORD_ID]
    # no known words at all (min_count above every count): every word is unknown
    layer.attrs["mask"] = None
    layer.set_param("known", numpy.zeros(0, dtype="uint64"))
    assert (layer(X, is_train=False)[0][0][:, 0] == UNKNOWN_WORD_ID).all()


def test_an_unseen_word_reads_the_unknown_identity():
    """The output for a word never seen in training does not depend on its NORM (v5 reads the unknown identity),
    where v4 reads whatever rows the NORM hashes to; a seen word keeps its own."""

    def with_norm(word, norm):
        doc = _docs([word])[0]
        doc[0].norm_ = norm  # only NORM changes: prefix, suffix, shape and characters read the text
        return doc

    v5 = _embed(word_dropout=0.2, known_words_min_count=1)
    count_known_words(v5, _docs(TRAIN))
    v5.initialize(X=_docs(TRAIN))
    v4 = _embed("v4", word_dropout=0.2)
    v4.initialize(X=_docs(TRAIN))
    unseen = [with_norm("Zorblax", "zorblax"), with_norm("Zorblax", "quintrell")]
    a, b = v5.predict(unseen)
    numpy.testing.assert_array_equal(a, b)
    a, b = v4.predict(unseen)
    assert not numpy.allclose(a, b)
    seen = [with_norm("Peter", "peter"), with_norm("Peter", "monday")]
    a, b = v5.predict(seen)
    assert not numpy.allclose(a, b)


def test_forward_before_counting_says_what_to_do():
    model = _embed(word_dropout=0.2, known_words_min_count=1)
    with pytest.raises(ValueError, match="known words were never counted"):
        model.initialize(X=_docs(TRAIN))
    with pytest.raises(ValueError, match="known_words_min_count must be >= 0"):
        _embed(known_words_min_count=-1)


def test_v5_at_zero_is_v4_and_without_word_dropout_still_drops_unknown_words():
    docs = _docs(TRAIN)
    v4 = _embed("v4", word_dropout=0.2)  # built and initialized from the same seed, one after the other
    v4.initialize(X=docs)
    v5 = _embed(word_dropout=0.2)
    v5.initialize(X=docs)
    assert [n.name for n in v4.walk()] == [n.name for n in v5.walk()]
    numpy.testing.assert_array_equal(v4.predict(docs)[0], v5.predict(docs)[0])
    only_known = _embed(known_words_min_count=1)
    assert len([n for n in only_known.walk() if n.name == "unknown_words"]) == 2
    count_known_words(only_known, docs)
    only_known.initialize(X=docs)
    assert only_known.predict(_docs(["Zorblax"]))[0].shape == (1, 24)


def test_a_pipeline_counts_at_initialize_and_keeps_them_through_save_and_load(tmp_path):
    nlp = spacy.blank("en")
    embed = {"@architectures": "conll_crf.HashCharEmbed.v5", **SMALL, "word_dropout": 0.2, "known_words_min_count": 1}
    tok2vec = {
        "@architectures": "spacy.Tok2Vec.v2",
        "embed": embed,
        "encode": {
            "@architectures": "spacy.MaxoutWindowEncoder.v2",
            "width": 24,
            "depth": 1,
            "window_size": 1,
            "maxout_pieces": 2,
        },
    }
    model = {"@architectures": "conll_crf.BiLSTMCRF.v3", "hidden_width": 8, "dropout": 0.0, "tok2vec": tok2vec}
    nlp.add_pipe("crf_ner", config={"model": model})
    examples = [
        Example.from_dict(nlp.make_doc(TRAIN[0]), {"entities": [(0, 15, "PER"), (24, 32, "LOC")]}),
        Example.from_dict(nlp.make_doc(TRAIN[1]), {"entities": [(0, 5, "PER"), (14, 16, "ORG")]}),
    ]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    nlp.update(examples, sgd=optimizer)
    nodes = [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "unknown_words"]
    words = {t.norm for eg in examples for t in eg.predicted}
    assert all(set(n.get_param("known").tolist()) == words for n in nodes)
    text = "Zorblax Quintrell went to Brussels ."
    before = nlp(text)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    after = loaded(text)
    assert [(e.text, e.label_) for e in after.ents] == [(e.text, e.label_) for e in before.ents]
    numpy.testing.assert_array_equal(
        [s._.crf_prob for s in after.spans["crf_ner"]], [s._.crf_prob for s in before.spans["crf_ner"]]
    )
    loaded_nodes = [n for n in loaded.get_pipe("crf_ner").model.walk() if n.name == "unknown_words"]
    assert all(set(n.get_param("known").tolist()) == words for n in loaded_nodes)
