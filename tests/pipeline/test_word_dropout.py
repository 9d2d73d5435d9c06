"""conll_crf.HashCharEmbed.v3: word dropout in training, nothing in prediction."""

import numpy
import pytest
import spacy
import srsly
from spacy.util import registry
from thinc.api import fix_random_seed

from conll_crf.pipeline.word_dropout import (
    UNKNOWN_WORD_ID,
    concatenate_with_word_dropout,
    unknown_words,
)

SMALL = dict(width=16, rows=[50, 10, 20, 20], char_width=8, char_rows=50, nM=8, nC=4)
WORDS = "Peter Blackburn went to Brussels on Monday to meet the EU 's farm commissioner Franz Fischler .".split()


def _docs(n_docs=3):
    nlp = spacy.blank("en")
    return [spacy.tokens.Doc(nlp.vocab, words=WORDS[: len(WORDS) - i]) for i in range(n_docs)]


def _embed(version, **kwargs):
    fix_random_seed(0)
    model = registry.architectures.get(f"conll_crf.HashCharEmbed.{version}")(**SMALL, **kwargs)
    model.initialize(X=_docs())
    return model


def test_registered_as_entry_point():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="spacy_architectures")}
    assert "conll_crf.HashCharEmbed.v3" in names


def test_rate_zero_is_v2_layer_for_layer():
    v2, v3 = _embed("v2"), _embed("v3", word_dropout=0.0)
    assert [n.name for n in v3.walk()] == [n.name for n in v2.walk()]
    docs = _docs()
    for a, b in zip(v2(docs, is_train=True)[0], v3(docs, is_train=True)[0]):
        numpy.testing.assert_array_equal(a, b)


def _changed_rows(before, after, width=16):
    """Per doc, the rows whose word half (the MultiHashEmbed's output) and whose character half changed."""
    words = [numpy.abs(b[:, :width] - a[:, :width]).sum(axis=1) > 0 for b, a in zip(before, after)]
    chars = [numpy.abs(b[:, width:] - a[:, width:]).sum(axis=1) > 0 for b, a in zip(before, after)]
    return words, chars


def _assert_whole_words_dropped(model, docs):
    """In training, the dropped tokens change in both halves of the output (one mask for the MultiHashEmbed's
    NORM and the CharacterEmbed's), the others in neither; some tokens are dropped, not all."""
    predicted = model.predict(docs)
    trained, _ = model(docs, is_train=True)
    words, chars = _changed_rows(predicted, trained)
    for w, c in zip(words, chars):
        numpy.testing.assert_array_equal(w, c)
    n_dropped = sum(int(w.sum()) for w in words)
    assert 0 < n_dropped < sum(len(d) for d in docs)
    assert all(n.attrs["mask"] is None for n in model.walk() if n.name == "unknown_words")  # none outlives the call


def test_prediction_unchanged_and_training_drops_whole_words():
    v2, v3 = _embed("v2"), _embed("v3", word_dropout=0.5)
    docs = _docs()
    for a, b in zip(v2.predict(docs), v3.predict(docs)):
        numpy.testing.assert_array_equal(a, b)
    fix_random_seed(1)
    _assert_whole_words_dropped(v3, docs)


def test_with_static_vectors_too():
    nlp = spacy.blank("en")
    nlp.vocab.vectors.resize((len(WORDS), 8))
    for i, w in enumerate(WORDS):
        nlp.vocab.set_vector(w, numpy.full(8, i, dtype="float32"))
    docs = [spacy.tokens.Doc(nlp.vocab, words=WORDS), spacy.tokens.Doc(nlp.vocab, words=WORDS[:5])]
    fix_random_seed(0)
    model = registry.architectures.get("conll_crf.HashCharEmbed.v3")(
        **SMALL, include_static_vectors=True, word_dropout=0.5
    )
    model.initialize(X=docs)
    fix_random_seed(2)
    _assert_whole_words_dropped(model, docs)


def test_a_copy_drops_words_on_its_own():
    """spaCy's replace_listeners copies a tok2vec: the copy must draw and apply its own masks."""
    model = _embed("v3", word_dropout=0.5)
    copied = model.copy()
    docs = _docs()
    fix_random_seed(3)
    _assert_whole_words_dropped(copied, docs)
    fix_random_seed(3)
    _assert_whole_words_dropped(model, docs)


def test_only_the_word_identity_columns_and_the_rate():
    layer = unknown_words([0])
    X = [numpy.arange(4 * 5000, dtype="uint64").reshape(5000, 4)]
    assert layer(X, is_train=True)[0] is X  # no mask: nothing to do
    fix_random_seed(0)
    mask = numpy.random.random_sample(5000) < 0.25
    layer.attrs["mask"] = [mask]
    Y, _ = layer(X, is_train=True)
    dropped = Y[0][:, 0] == UNKNOWN_WORD_ID
    numpy.testing.assert_array_equal(dropped, mask)
    assert abs(dropped.mean() - 0.25) < 0.03
    numpy.testing.assert_array_equal(Y[0][~dropped], X[0][~dropped])
    numpy.testing.assert_array_equal(Y[0][:, 1:], X[0][:, 1:])
    assert (X[0][:, 0] != UNKNOWN_WORD_ID).all()  # the input is not modified
    layer.attrs["mask"] = [numpy.zeros(0, dtype=bool)]  # an empty doc
    assert layer([numpy.zeros((0, 4), dtype="uint64")], is_train=True)[0][0].shape == (0, 4)
    with pytest.raises(ValueError, match="does not fit the batch"):
        layer([numpy.ones((3, 4), dtype="uint64")], is_train=True)


def test_the_rate_over_many_tokens():
    model = _embed("v3", word_dropout=0.2)
    nlp = spacy.blank("en")
    docs = [spacy.tokens.Doc(nlp.vocab, words=[f"w{i % 50}" for i in range(3000)])]
    model.initialize(X=docs)
    fix_random_seed(4)
    words, chars = _changed_rows(model.predict(docs), model(docs, is_train=True)[0])
    assert abs(words[0].mean() - 0.2) < 0.03
    numpy.testing.assert_array_equal(words[0], chars[0])


def test_bad_rate_and_attrs_without_norm():
    with pytest.raises(ValueError, match="rate"):
        registry.architectures.get("conll_crf.HashCharEmbed.v3")(**SMALL, word_dropout=1.0)
    with pytest.raises(ValueError, match="no unknown_words node"):
        concatenate_with_word_dropout(registry.architectures.get("conll_crf.HashCharEmbed.v2")(**SMALL), 0.1)
    # without NORM among attrs only the CharacterEmbed's NORM is dropped
    fix_random_seed(0)
    model = registry.architectures.get("conll_crf.HashCharEmbed.v3")(
        **{**SMALL, "attrs": ["PREFIX", "SUFFIX", "SHAPE"], "rows": [10, 20, 20]}, word_dropout=0.5
    )
    assert [n.attrs["columns"] for n in model.walk() if n.name == "unknown_words"] == [[0]]
    docs = _docs()
    model.initialize(X=docs)
    fix_random_seed(1)
    predicted = model.predict(docs)
    trained, _ = model(docs, is_train=True)
    words, chars = _changed_rows(predicted, trained)
    assert not any(w.any() for w in words)  # the MultiHashEmbed reads no word identity here
    assert any(c.any() for c in chars)


def test_bytes_round_trip_keeps_predictions_and_settings():
    model = _embed("v3", word_dropout=0.3)
    docs = _docs()
    model(docs, is_train=True)
    data = model.to_bytes()
    saved_attrs = [{k: srsly.msgpack_loads(v) for k, v in a.items()} for a in srsly.msgpack_loads(data)["attrs"] if a]
    assert {"word_dropout": 0.3} in saved_attrs
    assert sum(1 for a in saved_attrs if a.get("columns") == [0] and a.get("mask") is None) == 2
    loaded = registry.architectures.get("conll_crf.HashCharEmbed.v3")(**SMALL, word_dropout=0.3).from_bytes(data)
    for a, b in zip(model.predict(docs), loaded.predict(docs)):
        numpy.testing.assert_array_equal(a, b)
    fix_random_seed(5)
    _assert_whole_words_dropped(loaded, docs)  # trains after loading
