"""conll_crf.HashCharEmbed.v3: word dropout in training, nothing in prediction."""
import numpy
import pytest
import spacy
from spacy.util import registry
from thinc.api import fix_random_seed

from conll_crf.word_dropout import UNKNOWN_WORD_ID, SharedMask, word_dropout

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


def test_prediction_unchanged_and_training_drops_whole_words():
    """With the same weights, v3 predicts what v2 does; in training the dropped tokens change in both halves of
    the output (the MultiHashEmbed's and the CharacterEmbed's: one mask shared), the others in neither."""
    v2, v3 = _embed("v2"), _embed("v3", word_dropout=0.5)
    docs = _docs()
    predicted = v3.predict(docs)
    for a, b in zip(v2.predict(docs), predicted):
        numpy.testing.assert_array_equal(a, b)
    fix_random_seed(1)
    trained, _ = v3(docs, is_train=True)
    shared = [n for n in v3.walk() if n.name == "word_dropout"][0].attrs["shared"]
    n_dropped = 0
    for p, t, mask in zip(predicted, trained, shared.masks):
        words_changed = numpy.abs(p[:, :16] - t[:, :16]).sum(axis=1) > 0
        chars_changed = numpy.abs(p[:, 16:] - t[:, 16:]).sum(axis=1) > 0
        numpy.testing.assert_array_equal(words_changed, mask)
        numpy.testing.assert_array_equal(chars_changed, mask)
        n_dropped += int(mask.sum())
    assert 0 < n_dropped < sum(len(d) for d in docs)


def test_only_the_word_identity_columns_and_the_rate():
    shared = SharedMask()
    layer = word_dropout(0.25, [0], shared, draws=True)
    X = [numpy.arange(4 * 5000, dtype="uint64").reshape(5000, 4)]
    fix_random_seed(0)
    Y, backprop = layer(X, is_train=True)
    dropped = Y[0][:, 0] == UNKNOWN_WORD_ID
    assert abs(dropped.mean() - 0.25) < 0.03
    numpy.testing.assert_array_equal(dropped, shared.masks[0])
    numpy.testing.assert_array_equal(Y[0][~dropped], X[0][~dropped])
    numpy.testing.assert_array_equal(Y[0][:, 1:], X[0][:, 1:])
    assert (X[0][:, 0] != UNKNOWN_WORD_ID).all()  # the input is not modified
    assert layer(X, is_train=False)[0] is X


def test_follower_reuses_the_mask_and_checks_the_batch():
    shared = SharedMask()
    first = word_dropout(0.5, [0], shared, draws=True)
    second = word_dropout(0.5, [0, 1], shared, draws=False)
    X = [numpy.ones((40, 2), dtype="uint64"), numpy.ones((7, 2), dtype="uint64")]
    fix_random_seed(0)
    Y1, _ = first(X, is_train=True)
    Y2, _ = second(X, is_train=True)
    for y1, y2 in zip(Y1, Y2):
        numpy.testing.assert_array_equal(y1[:, 0], y2[:, 0])
        numpy.testing.assert_array_equal(y2[:, 0], y2[:, 1])
    with pytest.raises(RuntimeError, match="tokens per doc"):
        second([numpy.ones((3, 2), dtype="uint64")], is_train=True)


def test_bad_rate_and_attrs_without_norm():
    with pytest.raises(ValueError, match="rate"):
        word_dropout(1.0, [0], SharedMask(), draws=True)
    # without NORM among attrs only the CharacterEmbed's NORM is dropped, and that layer draws the mask
    fix_random_seed(0)
    model = registry.architectures.get("conll_crf.HashCharEmbed.v3")(
        **{**SMALL, "attrs": ["PREFIX", "SUFFIX", "SHAPE"], "rows": [10, 20, 20]}, word_dropout=0.5)
    layers = [n for n in model.walk() if n.name == "word_dropout"]
    assert [(n.attrs["columns"], n.attrs["draws"]) for n in layers] == [([0], True)]
    docs = _docs()
    model.initialize(X=docs)
    model(docs, is_train=True)


def test_bytes_round_trip_keeps_predictions_and_settings():
    """The shared mask is not serialised (thinc skips attrs msgpack cannot take); rate, columns and who draws are."""
    model = _embed("v3", word_dropout=0.3)
    docs = _docs()
    model(docs, is_train=True)
    loaded = registry.architectures.get("conll_crf.HashCharEmbed.v3")(**SMALL, word_dropout=0.3).from_bytes(model.to_bytes())
    for a, b in zip(model.predict(docs), loaded.predict(docs)):
        numpy.testing.assert_array_equal(a, b)
    settings = [(n.attrs["rate"], n.attrs["columns"], n.attrs["draws"]) for n in loaded.walk() if n.name == "word_dropout"]
    assert settings == [(0.3, [0], True), (0.3, [0], False)]
    loaded(docs, is_train=True)  # trains after loading
