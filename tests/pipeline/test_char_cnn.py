"""conll_crf.HashCharCNNEmbed.v1 and its character CNN (char_cnn.py): each token's vector depends on its
spelling alone, whatever batch it is in; the gradients are those of the plain per-token computation."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Ragged, fix_random_seed

from conll_crf.pipeline.char_cnn import char_cnn, word_characters

WORDS = "Peter Blackburn went to Brussels on Monday to meet the EU 's farm commissioner Franz Fischler .".split()
SMALL = dict(width=16, rows=[50, 10, 20, 20], char_width=8, char_dim=6, char_rows=50, max_chars=8)


def _docs(words_per_doc):
    nlp = spacy.blank("en")
    return [Doc(nlp.vocab, words=words) for words in words_per_doc]


def _cnn(**kwargs):
    fix_random_seed(0)
    model = char_cnn(8, char_dim=6, char_rows=50, **kwargs)
    model.initialize()
    return model


def test_long_words_keep_both_ends():
    codes, lengths = word_characters(["abc", "Schwarzenegger", ""], max_chars=8)
    assert lengths.tolist() == [3, 8, 1]
    assert "".join(map(chr, codes)) == "abc" + "Schw" + "gger" + " "  # first and last 4 of 14
    with pytest.raises(ValueError, match="max_chars"):
        char_cnn(8, max_chars=1)


def test_a_token_vector_depends_on_its_spelling_only():
    model = _cnn()
    alone = model.predict(_docs([["Fischler"]]))[0][0]
    batch = model.predict(_docs([WORDS, ["Fischler", "Fischler"], []]))
    assert [len(y) for y in batch] == [len(WORDS), 2, 0]
    for y in (batch[0][WORDS.index("Fischler")], batch[1][0], batch[1][1]):
        numpy.testing.assert_allclose(y, alone, rtol=1e-6, atol=1e-7)
    # the case is kept: "EU" and "eu" read differently
    upper, lower = model.predict(_docs([["EU", "eu"]]))[0]
    assert numpy.abs(upper - lower).max() > 1e-4


def test_gradients_match_the_per_token_computation():
    """Deduplicated forward and summed backward equal running the reader on every token's characters."""
    model = _cnn()
    docs = _docs([["to", "Brussels", "to"], ["Brussels", "on", "Monday"]])
    dYs = [numpy.random.default_rng(i).normal(size=(len(d), 8)).astype("float32") for i, d in enumerate(docs)]
    Ys, backprop = model(docs, is_train=True)
    backprop(dYs)
    reader = model.layers[0]
    grads = {
        (node.id, name): node.get_grad(name).copy()
        for node in reader.walk()
        for name in node.param_names
        if node.has_grad(name)
    }
    for node in reader.walk():
        for name in node.param_names:
            if node.has_grad(name):
                node.set_grad(name, numpy.zeros_like(node.get_grad(name)))
    tokens = [t.text for d in docs for t in d]
    codes, lengths = word_characters(tokens, 20)
    Y, bp = reader(Ragged(codes, lengths.astype("int32")), is_train=True)
    numpy.testing.assert_allclose(numpy.concatenate(Ys), Y, rtol=1e-6, atol=1e-7)
    bp(numpy.concatenate(dYs))
    for node in reader.walk():
        for name in node.param_names:
            if node.has_grad(name):
                numpy.testing.assert_allclose(grads[(node.id, name)], node.get_grad(name), rtol=1e-5, atol=1e-6)
    assert grads, "no parameter received a gradient"


def test_registered_embed_round_trips_and_drops_only_hashed_words():
    from importlib.metadata import entry_points

    assert "conll_crf.HashCharCNNEmbed.v1" in {ep.name for ep in entry_points(group="spacy_architectures")}
    build = registry.architectures.get("conll_crf.HashCharCNNEmbed.v1")
    fix_random_seed(0)
    model = build(**SMALL, word_dropout=0.5)
    docs = _docs([WORDS, WORDS[:5]])
    model.initialize(X=docs)
    predicted = model.predict(docs)
    assert [y.shape for y in predicted] == [(len(WORDS), 24), (5, 24)]
    trained, _ = model(docs, is_train=True)
    words_changed = numpy.concatenate(
        [numpy.abs(t[:, :16] - p[:, :16]).sum(axis=1) > 0 for t, p in zip(trained, predicted)]
    )
    chars_changed = numpy.concatenate(
        [numpy.abs(t[:, 16:] - p[:, 16:]).sum(axis=1) > 0 for t, p in zip(trained, predicted)]
    )
    assert 0 < words_changed.sum() < len(words_changed)  # some tokens lost their word identity, not all
    assert not chars_changed.any()  # the character CNN reads spelling, which word dropout keeps
    again = build(**SMALL, word_dropout=0.5).from_bytes(model.to_bytes())
    for a, b in zip(predicted, again.predict(docs)):
        numpy.testing.assert_array_equal(a, b)
