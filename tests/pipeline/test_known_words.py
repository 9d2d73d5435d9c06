"""conll_crf.HashCharEmbed.v5's known words: a word the training data has fewer than `known_words_min_count` times
reads the "unknown" identity that word dropout trains, in prediction too (Lample et al.'s UNK)."""

import numpy
import pytest
import spacy
from spacy.attrs import NORM
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from thinc.api import fix_random_seed

from conll_crf.pipeline.word_dropout import UNKNOWN_WORD_ID, count_known_words, unknown_words

SMALL = dict(width=16, rows=[50, 10, 20, 20], char_width=8, char_rows=50, nM=8, nC=4)
TRAIN = ["Peter Blackburn went to Brussels on Monday .", "Peter met the EU commissioner on Monday ."]


def _docs(texts):
    nlp = spacy.blank("en")
    return [nlp.make_doc(t) for t in texts]


def _examples(texts):
    return [Example(doc, doc.copy()) for doc in _docs(texts)]


def _embed(version="v5", **kwargs):
    fix_random_seed(0)
    return registry.architectures.get(f"conll_crf.HashCharEmbed.{version}")(**SMALL, **kwargs)


def test_counts_the_training_words_per_node():
    model = _embed(word_dropout=0.2, known_words_min_count=2)
    with pytest.warns(UserWarning, match="counted from 2 training examples only"):
        assert count_known_words(model, _examples(TRAIN)) == 2
    strings = _docs(TRAIN)[0].vocab.strings
    expected = sorted(strings[w] for w in ("peter", "on", "monday", "."))  # NORM is lower case; twice or more
    nodes = [n for n in model.walk() if n.name == "unknown_words"]
    assert len(nodes) == 2  # the MultiHashEmbed's NORM and the CharacterEmbed's
    for node in nodes:
        assert node.get_param("known").dtype == numpy.uint64
        assert node.get_param("known").tolist() == expected
    # a copy (spaCy's replace_listeners copies a tok2vec) keeps them
    assert [n.get_param("known").tolist() for n in model.copy().walk() if n.name == "unknown_words"] == [expected] * 2
    # v4, or v5 without known words: nothing to count, and the examples are not read
    assert count_known_words(_embed("v4", word_dropout=0.2), iter(lambda: 1 / 0, None)) == 0
    assert count_known_words(_embed(word_dropout=0.2), iter(lambda: 1 / 0, None)) == 0


def test_both_tokenizations_count_whatever_an_augmenter_drew():
    """A word is known if it is in the gold tokens or in the tokenizer's split of the text (the model trains on
    both), counted in each separately: the predicted docs of one pass (an augmenter's draw) do not matter."""
    nlp = spacy.blank("en")
    gold = Doc(nlp.vocab, words=["Chester-le-Street", "won", "Chester-le-Street", "lost"])
    examples = [Example(gold.copy(), gold)]  # predicted = gold tokens, as in an un-augmented article
    model = _embed(word_dropout=0.2, known_words_min_count=2)
    with pytest.warns(UserWarning):
        count_known_words(model, examples, nlp.make_doc)
    node = next(n for n in model.walk() if n.name == "unknown_words")
    known = {nlp.vocab.strings[int(k)] for k in node.get_param("known").tolist()}
    # the tokenizer splits the hyphens: "chester", "-", "le", "street" twice each; "won", "lost" once
    assert known == {"chester-le-street", "chester", "-", "le", "street"}


def test_unknown_words_lose_identity_in_prediction_too():
    layer = unknown_words([0], [NORM], min_count=1)
    # real hashes use all 64 bits: keys above 2**63 and keys a float64 could not tell apart must stay exact
    big = 2**64 - 2048
    layer.set_param("known", numpy.array([3, 11, big], dtype="uint64"))
    X = [numpy.array([[3, 100], [big + 1, 101], [11, 102], [big, 103]], dtype="uint64"), numpy.zeros((0, 2), "uint64")]
    Y, _ = layer(X, is_train=False)
    assert Y[0][:, 0].tolist() == [3, UNKNOWN_WORD_ID, 11, big]
    numpy.testing.assert_array_equal(Y[0][:, 1], X[0][:, 1])  # other columns kept
    assert X[0][1, 0] == big + 1 and Y[1].shape == (0, 2)  # the input untouched; an empty doc passes
    # in training, word dropout's mask adds to the unknown words
    layer.attrs["mask"] = [numpy.array([True, False, False, False]), numpy.zeros(0, dtype=bool)]
    Y, _ = layer(X, is_train=True)
    assert Y[0][:, 0].tolist() == [UNKNOWN_WORD_ID, UNKNOWN_WORD_ID, 11, big]
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
    with pytest.warns(UserWarning):
        count_known_words(v5, _examples(TRAIN))
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
    with pytest.warns(UserWarning):
        count_known_words(only_known, _examples(TRAIN))
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
    # 11 examples, the words of the last one in no other: all are counted, not the 10 that size the model
    examples = [Example.from_dict(nlp.make_doc(TRAIN[0]), {"entities": [(0, 15, "PER"), (24, 32, "LOC")]})] * 10
    examples.append(Example.from_dict(nlp.make_doc(TRAIN[1]), {"entities": [(0, 5, "PER"), (14, 16, "ORG")]}))
    fix_random_seed(0)
    with pytest.warns(UserWarning, match="counted from 11 training examples only"):
        optimizer = nlp.initialize(lambda: examples)
    nlp.update(examples, sgd=optimizer)
    nodes = [n for n in nlp.get_pipe("crf_ner").model.walk() if n.name == "unknown_words"]
    words = {t.norm for eg in examples for t in eg.predicted}
    assert nlp.vocab.strings["commissioner"] in words
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


def test_in_a_shared_tok2vec_it_fails_and_says_where_it_belongs():
    nlp = spacy.blank("en")
    embed = {"@architectures": "conll_crf.HashCharEmbed.v5", **SMALL, "known_words_min_count": 1}
    encode = {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": 24, "depth": 1, "window_size": 1}
    encode["maxout_pieces"] = 2
    nlp.add_pipe("tok2vec", config={"model": {"@architectures": "spacy.Tok2Vec.v2", "embed": embed, "encode": encode}})
    listener = {"@architectures": "spacy.Tok2VecListener.v1", "width": 24, "upstream": "tok2vec"}
    nlp.add_pipe("crf_ner", config={"model": {"@architectures": "conll_crf.BiLSTMCRF.v3", "tok2vec": listener}})
    example = Example.from_dict(nlp.make_doc(TRAIN[0]), {"entities": [(0, 15, "PER")]})
    with pytest.raises(ValueError, match="must sit in crf_ner's own model, not in a shared tok2vec"):
        nlp.initialize(lambda: [example])
