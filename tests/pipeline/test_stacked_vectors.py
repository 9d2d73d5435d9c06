"""conll_crf.HashCharEmbed.v4's word table (stacked_vectors.py): the pipeline's vectors and a second table side
by side under one projection, the second read once at initialization and saved with the weights, never trained."""

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.util import registry
from spacy.vectors import Vectors
from thinc.api import Adam, fix_random_seed

from conll_crf.pipeline.stacked_vectors import stacked_static_vectors

WORDS = "Peter Blackburn went to Brussels on Monday to meet the EU 's farm commissioner Franz Fischler .".split()
SMALL = dict(width=16, rows=[50, 10, 20, 20], char_width=8, char_rows=50, nM=8, nC=4)


def _vocab_with_vectors():
    """A vocab whose table (width 4) has 'Brussels', 'Monday' and 'EU', as spelled."""
    nlp = spacy.blank("en")
    words = ["Brussels", "Monday", "EU"]
    data = numpy.arange(12, dtype="float32").reshape(3, 4) / 10
    nlp.vocab.vectors = Vectors(strings=nlp.vocab.strings, data=data, keys=[nlp.vocab.strings.add(w) for w in words])
    return nlp.vocab


def _word_table(path, words=("brussels", "fischler", "farm", "eu")):
    """A spaCy vectors folder of lower-case words (width 3), as scripts/word_table.py writes GloVe."""
    nlp = spacy.blank("en")
    data = numpy.random.default_rng(0).normal(size=(len(words), 3)).astype("float32")
    nlp.vocab.vectors = Vectors(strings=nlp.vocab.strings, data=data, keys=[nlp.vocab.strings.add(w) for w in words])
    nlp.to_disk(path)
    return dict(zip(words, data)), float(numpy.linalg.norm(data, axis=1).mean())


def test_output_is_one_projection_of_both_tables(tmp_path):
    vocab = _vocab_with_vectors()
    table, table_norm = _word_table(tmp_path / "words")
    docs = [Doc(vocab, words=WORDS), Doc(vocab, words=["BRUSSELS", "nowhere"]), Doc(vocab, words=[])]
    fix_random_seed(0)
    model = stacked_static_vectors(5, str(tmp_path / "words"))
    model.initialize(X=docs[:1])
    Y = model.predict(docs)
    assert Y.lengths.tolist() == [len(WORDS), 2, 0]
    W = model.get_param("W")
    assert W.shape == (5, 4 + 3)
    scale = numpy.linalg.norm(vocab.vectors.data, axis=1).mean() / table_norm
    rows = 0
    for doc in docs:
        for token in doc:
            v = vocab.vectors[token.orth] if token.orth in vocab.vectors else numpy.zeros(4, "float32")
            u = table.get(token.lower_, numpy.zeros(3, "float32")) * scale
            numpy.testing.assert_allclose(Y.data[rows], W @ numpy.concatenate([v, u]), rtol=1e-5, atol=1e-6)
            rows += 1
    # by LOWER: "BRUSSELS" finds "brussels" in the word table, not in the pipeline's (cased) one
    assert numpy.abs(Y.data[len(WORDS)]).max() > 0 and not numpy.abs(Y.data[len(WORDS) + 1]).max()


def test_only_the_projection_trains_and_the_table_is_saved(tmp_path):
    vocab = _vocab_with_vectors()
    _word_table(tmp_path / "words")
    docs = [Doc(vocab, words=WORDS)]
    model = stacked_static_vectors(5, str(tmp_path / "words"))
    model.initialize(X=docs)
    E, keys, W = (model.get_param(n).copy() for n in ("E", "keys", "W"))
    Y, backprop = model(docs, is_train=True)
    Y.data[:] = 1.0
    backprop(Y)
    model.finish_update(Adam(0.1))
    numpy.testing.assert_array_equal(model.get_param("E"), E)
    numpy.testing.assert_array_equal(model.get_param("keys"), keys)
    assert numpy.abs(model.get_param("W") - W).max() > 0
    # loaded from bytes, the table comes with the weights: the folder is not read again
    loaded = stacked_static_vectors(5, str(tmp_path / "gone")).from_bytes(model.to_bytes())
    assert loaded.get_param("keys").dtype == numpy.uint64
    numpy.testing.assert_array_equal(loaded.predict(docs).data, model.predict(docs).data)


def test_gradient_of_the_projection_is_that_of_the_concatenated_tables(tmp_path):
    """The two tables are projected by two products (no concatenated copy); the gradient of W must still be
    dY^T [V ; U], with the rows of missing words zero in both halves."""
    vocab = _vocab_with_vectors()
    table, table_norm = _word_table(tmp_path / "words")
    docs = [Doc(vocab, words=WORDS), Doc(vocab, words=["BRUSSELS", "nowhere"])]
    model = stacked_static_vectors(5, str(tmp_path / "words"))
    model.initialize(X=docs[:1])
    scale = numpy.linalg.norm(vocab.vectors.data, axis=1).mean() / table_norm
    X = numpy.asarray(
        [
            numpy.concatenate(
                [
                    vocab.vectors[t.orth] if t.orth in vocab.vectors else numpy.zeros(4, "float32"),
                    table.get(t.lower_, numpy.zeros(3, "float32")) * scale,
                ]
            )
            for doc in docs
            for t in doc
        ]
    )
    before = vocab.vectors.data.copy()
    Y, backprop = model(docs, is_train=True)
    numpy.testing.assert_array_equal(vocab.vectors.data, before)  # missing words zeroed in a copy, not the table
    dY = numpy.random.default_rng(1).normal(size=Y.data.shape).astype("float32")
    Y.data[:] = dY
    backprop(Y)
    numpy.testing.assert_allclose(model.get_grad("W"), dY.T @ X, rtol=1e-5, atol=1e-5)


def test_bad_set_ups_say_what_is_missing(tmp_path):
    vocab = _vocab_with_vectors()
    with pytest.raises(ValueError, match="not a spaCy vectors folder"):
        stacked_static_vectors(5, str(tmp_path / "nothing")).initialize(X=[Doc(vocab, words=["a"])])
    _word_table(tmp_path / "words")
    with pytest.raises(ValueError, match=r"set \[initialize\] vectors"):
        stacked_static_vectors(5, str(tmp_path / "words")).initialize(X=[Doc(spacy.blank("en").vocab, words=["a"])])
    build = registry.architectures.get("conll_crf.HashCharEmbed.v4")
    with pytest.raises(ValueError, match="include_static_vectors = true"):
        build(**SMALL, word_table=str(tmp_path / "words"))


def test_v4_without_a_word_table_is_v3_and_with_one_trains_in_a_pipeline(tmp_path):
    from importlib.metadata import entry_points

    assert "conll_crf.HashCharEmbed.v4" in {ep.name for ep in entry_points(group="spacy_architectures")}
    docs = [Doc(_vocab_with_vectors(), words=WORDS)]
    outputs = []
    for version in ("v3", "v4"):
        fix_random_seed(0)
        model = registry.architectures.get(f"conll_crf.HashCharEmbed.{version}")(**SMALL, word_dropout=0.2)
        model.initialize(X=docs)
        outputs.append((model.predict(docs)[0], [n.name for n in model.walk()]))
    numpy.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    assert outputs[0][1] == outputs[1][1]
    _word_table(tmp_path / "words")
    fix_random_seed(0)
    model = registry.architectures.get("conll_crf.HashCharEmbed.v4")(
        **SMALL, include_static_vectors=True, word_dropout=0.2, word_table=str(tmp_path / "words")
    )
    model.initialize(X=docs)
    predicted = model.predict(docs)[0]
    assert predicted.shape == (len(WORDS), 16 + 8)
    trained, _ = model(docs, is_train=True)  # word dropout still reaches the hashed features
    assert numpy.abs(trained - predicted).max() > 0
