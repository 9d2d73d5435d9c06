"""conll_crf.DocumentContext.v1: the mean vector of a word's occurrences in the doc, and its exact gradient."""

import numpy
import pytest
import spacy
from thinc.api import Model

from conll_crf.pipeline.document_context import build_document_context
from tests.pipeline.test_component import SMALL_TOK2VEC, TRAIN_DATA, crf_config, ents, gold_ents, train


def fixed_vectors(arrays, grads):
    """A stand-in tok2vec: returns `arrays` and records the gradient it gets."""

    def forward(model, docs, is_train):
        def backprop(dXs):
            grads.extend(dXs)
            return []

        return [arrays[i] for i in range(len(docs))], backprop

    return Model("fixed", forward, dims={"nO": arrays[0].shape[1]})


def test_means_by_lowercase_form_and_the_gradient_of_a_mean():
    nlp = spacy.blank("en")
    docs = [nlp("Germany beat GERMANY and germany ."), nlp(""), nlp("one")]
    rng = numpy.random.default_rng(0)
    arrays = [rng.normal(size=(len(d), 3)).astype("float32") for d in docs]
    grads = []
    model = build_document_context(fixed_vectors(arrays, grads), attr="LOWER")
    model.initialize(X=docs[:1])
    assert model.get_dim("nO") == 6
    Ys, backprop = model.begin_update(docs)
    X = arrays[0]
    same = [0, 2, 4]  # Germany, GERMANY, germany
    A = numpy.eye(6, dtype="float32")  # the mean operator: Y[:, 3:] = A @ X
    A[numpy.ix_(same, same)] = 1 / 3
    numpy.testing.assert_allclose(Ys[0], numpy.concatenate([X, A @ X], 1), rtol=1e-6)
    assert Ys[1].shape == (0, 6)
    numpy.testing.assert_allclose(Ys[2], numpy.concatenate([arrays[2], arrays[2]], 1))
    dYs = [rng.normal(size=y.shape).astype("float32") for y in Ys]
    backprop(dYs)
    numpy.testing.assert_allclose(grads[0], dYs[0][:, :3] + A.T @ dYs[0][:, 3:], rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(grads[2], dYs[2][:, :3] + dYs[2][:, 3:], rtol=1e-6)


def test_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="unknown token attribute 'COLOUR'"):
        build_document_context(fixed_vectors([numpy.zeros((1, 2), dtype="float32")], []), attr="COLOUR")


def test_crf_ner_learns_through_document_context():
    nlp = spacy.blank("en")
    config = crf_config()
    config["model"]["tok2vec"] = {"@architectures": "conll_crf.DocumentContext.v1", "tok2vec": SMALL_TOK2VEC}
    nlp.add_pipe("crf_ner", config=config)
    losses = train(nlp, n_iter=60)
    assert losses[-1] < losses[0] / 10
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()


def test_add_mode_keeps_the_width_and_its_gradient():
    nlp = spacy.blank("en")
    docs = [nlp("Germany beat GERMANY and germany .")]
    rng = numpy.random.default_rng(1)
    arrays = [rng.normal(size=(6, 3)).astype("float32")]
    grads = []
    model = build_document_context(fixed_vectors(arrays, grads), mode="add")
    model.initialize(X=docs)
    assert model.get_dim("nO") == 3
    A = numpy.eye(6, dtype="float32")
    A[numpy.ix_([0, 2, 4], [0, 2, 4])] = 1 / 3
    Ys, backprop = model.begin_update(docs)
    numpy.testing.assert_allclose(Ys[0], arrays[0] + A @ arrays[0], rtol=1e-6)
    dY = rng.normal(size=(6, 3)).astype("float32")
    backprop([dY])
    numpy.testing.assert_allclose(grads[0], dY + A.T @ dY, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mode must be one of 'concat', 'add', 'project', not 'max'"):
        build_document_context(fixed_vectors(arrays, []), mode="max")


def test_project_mode_starts_as_add_and_learns_its_matrix_with_the_exact_gradient():
    nlp = spacy.blank("en")
    docs = [nlp("Germany beat GERMANY and germany ."), nlp("")]
    rng = numpy.random.default_rng(2)
    arrays = [rng.normal(size=(6, 3)).astype("float32"), numpy.zeros((0, 3), dtype="float32")]
    grads = []
    model = build_document_context(fixed_vectors(arrays, grads), mode="project")
    model.initialize(X=docs[:1])
    assert model.get_dim("nO") == 3
    assert not model.get_param("D").any()  # D starts at 0: the same output as "add"
    add = build_document_context(fixed_vectors(arrays, []), mode="add")
    add.initialize(X=docs[:1])
    numpy.testing.assert_array_equal(model.predict(docs[:1])[0], add.predict(docs[:1])[0])
    D = rng.normal(size=(3, 3)).astype("float32")
    model.set_param("D", D)
    A = numpy.eye(6, dtype="float32")  # the mean operator
    A[numpy.ix_([0, 2, 4], [0, 2, 4])] = 1 / 3
    X, M = arrays[0], A @ arrays[0]
    Ys, backprop = model.begin_update(docs)
    numpy.testing.assert_allclose(Ys[0], X + M + M @ D.T, rtol=1e-5, atol=1e-6)
    assert Ys[1].shape == (0, 3)
    dY = rng.normal(size=(6, 3)).astype("float32")
    backprop([dY, numpy.zeros((0, 3), dtype="float32")])
    numpy.testing.assert_allclose(grads[0], dY + A.T @ (dY + dY @ D), rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(model.get_grad("D"), dY.T @ M, rtol=1e-5, atol=1e-5)
    # the learned matrix is saved with the weights
    copy = build_document_context(fixed_vectors(arrays, []), mode="project")
    copy.initialize(X=docs[:1])
    copy.from_bytes(model.to_bytes())
    numpy.testing.assert_array_equal(copy.get_param("D"), D)


def test_crf_ner_learns_through_projected_document_context(tmp_path):
    nlp = spacy.blank("en")
    config = crf_config()
    config["model"]["tok2vec"] = {
        "@architectures": "conll_crf.DocumentContext.v1",
        "mode": "project",
        "tok2vec": SMALL_TOK2VEC,
    }
    nlp.add_pipe("crf_ner", config=config)
    losses = train(nlp, n_iter=60)
    assert losses[-1] < losses[0] / 10
    assert [ents(d) for d in nlp.pipe(t for t, _ in TRAIN_DATA)] == gold_ents()
    assert nlp.get_pipe("crf_ner").model.get_ref("tok2vec").get_param("D").any()  # it was trained
    # loaded from disk without initialize, the learned matrix and the predictions come back
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    numpy.testing.assert_array_equal(
        loaded.get_pipe("crf_ner").model.get_ref("tok2vec").get_param("D"),
        nlp.get_pipe("crf_ner").model.get_ref("tok2vec").get_param("D"),
    )
    texts = [t for t, _ in TRAIN_DATA]
    assert [ents(d) for d in loaded.pipe(texts)] == [ents(d) for d in nlp.pipe(texts)]
