"""crf_ner inside real pipelines: sentence boundaries, preset entities, parameter
averaging, and entity probabilities in doc.spans; spaCy's ner side by side where it
defines the expected behaviour."""

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from conll_crf.pipeline.doc_constraints import TagIndex
from conll_crf.pipeline.thinc_head import torch_module
from conll_crf.pipeline.training_targets import training_constraints
from tests.pipeline.test_component import SMALL_TOK2VEC, TRAIN_DATA, crf_config, examples, train

TEXT = "Peter Blackburn works for the European Commission in Brussels ."


def trained(scheme="BIO", factory="crf_ner", extra=None, n_iter=60):
    nlp = spacy.blank("en")
    if extra:
        for name, cfg in extra:
            nlp.add_pipe(name, config=cfg)
    if factory == "crf_ner":
        nlp.add_pipe("crf_ner", config=crf_config(scheme, "conll_crf.BiLSTMCRF.v2"))
    else:
        nlp.add_pipe(
            "ner",
            config={
                "model": {
                    "@architectures": "spacy.TransitionBasedParser.v2",
                    "state_type": "ner",
                    "extra_state_tokens": False,
                    "hidden_width": 32,
                    "maxout_pieces": 2,
                    "use_upper": True,
                    "tok2vec": SMALL_TOK2VEC,
                }
            },
        )
        fix_random_seed(0)
        egs = examples(nlp)
        opt = nlp.initialize(lambda: egs)
        for _ in range(n_iter):
            nlp.update(egs, sgd=opt)
        return nlp
    train(nlp, n_iter)
    return nlp


@pytest.fixture(scope="module", params=["BIO", "BILUO"])
def nlp(request):
    return trained(request.param)


def spans(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def crosses(doc):
    """Entities that cross a sentence boundary."""
    starts = {s.start for s in doc.sents}
    return [e for e in doc.ents if any(e.start < t < e.end for t in starts)]


# -- sentence boundaries ----------------------------------------------------------------


def test_sentence_starts_constrain_decoding(nlp):
    doc = nlp(TEXT)
    assert ("Peter Blackburn", "PER") in [(e.text, e.label_) for e in doc.ents]
    # a boundary inside every multi-token entity: none may cross it
    words = [t.text for t in doc]
    sent_starts = [True] + [False] * (len(words) - 1)
    for ent in doc.ents:
        if len(ent) > 1:
            sent_starts[ent.start + 1] = True
    split = nlp(Doc(nlp.vocab, words=words, sent_starts=sent_starts))
    assert not crosses(split)
    assert all(len(e) == 1 or e.start + 1 not in [s.start for s in split.sents] for e in split.ents)
    # a doc without sentence annotation is unchanged
    assert spans(nlp(Doc(nlp.vocab, words=words))) == spans(doc)
    # the probabilities respect the boundaries too: no candidate crosses one
    starts = {s.start for s in split.sents}
    assert not [c for c in split.spans["crf_ner"] if any(c.start < t < c.end for t in starts)]


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_sentencizer_before_crf_ner(scheme):
    nlp = trained(scheme)
    nlp.add_pipe("sentencizer", first=True, config={"punct_chars": ["Peter", "European"]})  # a sentence ends after each
    doc = nlp(TEXT)
    assert len(list(doc.sents)) >= 2
    assert not crosses(doc)
    assert "Peter Blackburn" not in [e.text for e in doc.ents]
    # identical to the same sentence starts given by hand
    words = [t.text for t in doc]
    by_hand = nlp.get_pipe("crf_ner")(Doc(nlp.vocab, words=words, sent_starts=[t.is_sent_start for t in doc]))
    assert spans(by_hand) == spans(doc)


def test_training_with_sentence_starts_keeps_gold_entities():
    """Gold sentence starts constrain training; gold entities never become impossible."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config("BILUO", "conll_crf.BiLSTMCRF.v2"))
    egs = []
    for text, ents in TRAIN_DATA:
        ref = nlp.make_doc(text)
        eg = Example.from_dict(nlp.make_doc(text), {"entities": ents, "sent_starts": [1] + [0] * (len(ref) - 1)})
        egs.append(eg)
    # a reference whose sentence boundary splits a gold entity: the gold wins at that token
    words = ["Peter", "Blackburn", "works"]
    egs.append(
        Example.from_dict(
            Doc(nlp.vocab, words=words), {"words": words, "entities": ["B-PER", "L-PER", "O"], "sent_starts": [1, 1, 0]}
        )
    )
    opt = nlp.initialize(lambda: egs)
    losses = nlp.update(egs, sgd=opt)
    assert numpy.isfinite(losses["crf_ner"])


@pytest.mark.parametrize("dropout,expect_constrained", [(0.0, True), (1.0, False)])
def test_sentence_dropout_decides_whether_gold_sentences_constrain_training(dropout, expect_constrained):
    """sentence_dropout = 1 trains as unsplit text (the gold's sentence starts add no constraint);
    0 keeps them; a boundary in the predicted doc itself always constrains."""
    nlp = spacy.blank("en")
    crf = nlp.add_pipe("crf_ner", config={**crf_config("BIO", "conll_crf.BiLSTMCRF.v2"), "sentence_dropout": dropout})
    words = ["Peter", "Blackburn", "works", "in", "Brussels"]
    eg = Example.from_dict(
        Doc(nlp.vocab, words=words),
        {"words": words, "entities": ["B-PER", "L-PER", "O", "O", "U-LOC"], "sent_starts": [1, 0, 0, 1, 0]},
    )
    nlp.initialize(lambda: [eg])
    i_tags = [k for k, tag in enumerate(crf.tags) if tag.startswith("I-")]
    (allowed,) = training_constraints([eg], TagIndex(crf.tags, crf.cfg["scheme"]), crf.sentence_dropout)
    assert bool((allowed[3, i_tags] == 0).all()) is expect_constrained  # no I- at the gold sentence start
    assert (allowed[[0, 1, 2, 4]] == 1).all()
    split = Doc(nlp.vocab, words=words, sent_starts=[True, False, False, True, False])
    (allowed,) = training_constraints(
        [Example(split, eg.reference)], TagIndex(crf.tags, crf.cfg["scheme"]), crf.sentence_dropout
    )
    assert (allowed[3, i_tags] == 0).all()
    with pytest.raises(ValueError, match="sentence_dropout"):
        nlp.add_pipe("crf_ner", name="bad", config={"sentence_dropout": 1.5})


# -- preset entities --------------------------------------------------------------------


PATTERNS = [{"label": "MISC", "pattern": "European Commission"}, {"label": "EVENT", "pattern": "works"}]


@pytest.mark.parametrize("factory", ["crf_ner", "ner"])
@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_preset_entities_are_kept(factory, scheme):
    """An entity_ruler before the recognizer: its entities (a known label and an
    unknown one) stay exactly, the rest is predicted around them, as spaCy's ner does."""
    nlp = trained(scheme, factory)
    plain = nlp(TEXT)
    ruler = nlp.add_pipe("entity_ruler", first=True)
    ruler.add_patterns(PATTERNS)
    doc = nlp(TEXT)
    got = [(e.text, e.label_) for e in doc.ents]
    assert ("European Commission", "MISC") in got and ("works", "EVENT") in got
    preset_tokens = {i for e in doc.ents if e.label_ in ("MISC", "EVENT") for i in range(e.start, e.end)}
    others = [e for e in doc.ents if e.label_ not in ("MISC", "EVENT")]
    assert all(not preset_tokens & set(range(e.start, e.end)) for e in others)
    # entities away from the presets are still predicted as before
    assert ("Brussels", "LOC") in got and ("Brussels", "LOC") in [(e.text, e.label_) for e in plain.ents]
    if factory == "crf_ner":
        group = doc.spans["crf_ner"]
        scores = dict(zip([(s.start, s.end, s.label_) for s in group], group.attrs["scores"]))
        for ent in doc.ents:
            if ent.label_ in ("MISC", "EVENT"):
                assert scores[(ent.start, ent.end, ent.label_)] == pytest.approx(1.0)
                assert ent._.crf_prob == pytest.approx(1.0)
        # no candidate overlaps a preset unless it is the preset itself
        for s in group:
            if s.label_ not in ("MISC", "EVENT"):
                assert not preset_tokens & set(range(s.start, s.end))


def test_preset_entity_of_a_known_label_shapes_the_rest(nlp):
    """A preset PER over 'Peter' alone: the CRF may not extend it over 'Blackburn'."""
    doc = nlp.make_doc(TEXT)
    doc.ents = [doc.char_span(0, 5, label="PER")]
    doc = nlp.get_pipe("crf_ner")(doc)
    assert (0, 1, "PER") in spans(doc)
    assert not [e for e in doc.ents if e.start == 0 and e.end > 1]


# -- parameter averaging ----------------------------------------------------------------


def test_use_params_swaps_the_torch_weights():
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config("BIO", "conll_crf.BiLSTMCRF.v2"))
    fix_random_seed(0)
    egs = examples(nlp)
    opt = Adam(0.002, use_averages=True)  # as configs/cpu_crf.cfg
    nlp.initialize(lambda: egs, sgd=opt)
    for _ in range(5):
        nlp.update(egs, sgd=opt)
    module = torch_module(nlp.get_pipe("crf_ner").model.get_ref("output_layer"))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with nlp.use_params(opt.averages):
        inside = {k: v.clone() for k, v in module.state_dict().items()}
    after = module.state_dict()
    changed = [k for k in before if not torch.equal(before[k], inside[k])]
    assert "crf.transitions" in changed and "output.weight" in changed and any(k.startswith("lstm.") for k in changed)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored afterwards
    # the buffers (constraints) are untouched
    assert torch.equal(before["crf.allowed"], inside["crf.allowed"])


# -- entity probabilities ---------------------------------------------------------------


def test_scores_in_doc_spans(nlp):
    doc = nlp(TEXT)
    group = doc.spans["crf_ner"]
    scores = group.attrs["scores"]
    assert len(scores) == len(group) and all(0.1 <= s <= 1.0 + 1e-9 for s in scores)
    keyed = dict(zip([(s.start, s.end, s.label_) for s in group], scores))
    for ent in doc.ents:  # every predicted entity is a candidate, with its probability
        assert keyed[(ent.start, ent.end, ent.label_)] == pytest.approx(ent._.crf_prob)
    # the best alternatives are there too: some candidate is not in doc.ents
    assert len(group) >= len(doc.ents)


def with_settings(nlp, **settings):
    """A copy of `nlp` whose crf_ner has these settings, as a load-time config override gives them."""
    config = nlp.config.copy()
    config["components"]["crf_ner"].update(settings)
    return spacy.util.load_model_from_config(config).from_bytes(nlp.to_bytes())


def test_threshold_and_off_switch(nlp):
    doc = nlp(TEXT)
    low = min(e._.crf_prob for e in doc.ents)
    strict = with_settings(nlp, threshold=low + 1e-9)(TEXT)
    assert len(strict.ents) == len(doc.ents) - sum(e._.crf_prob <= low for e in doc.ents)
    assert len(strict.spans["crf_ner"]) == len(doc.spans["crf_ner"])  # still listed as candidates
    off = with_settings(nlp, confidence=False)(TEXT)
    assert spans(off) == spans(doc) and "crf_ner" not in off.spans


def test_scores_do_not_depend_on_batch_and_survive_serialization(nlp):
    texts = [t for t, _ in TRAIN_DATA] + ["", "Brussels", TEXT * 30]
    one = [nlp(t) for t in texts]
    batched = list(nlp.pipe(texts, batch_size=64))
    for a, b in zip(one, batched):
        assert spans(a) == spans(b)
        assert [(s.start, s.end, s.label_) for s in a.spans["crf_ner"]] == [
            (s.start, s.end, s.label_) for s in b.spans["crf_ner"]
        ]
        # the emissions are float32 (the BLAS blocking depends on the batch): equal to float32 precision
        assert a.spans["crf_ner"].attrs["scores"] == pytest.approx(b.spans["crf_ner"].attrs["scores"], abs=1e-6)
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("crf_ner", config=crf_config(nlp.get_pipe("crf_ner").cfg["scheme"], "conll_crf.BiLSTMCRF.v2"))
    nlp2.from_bytes(nlp.to_bytes())
    again = list(nlp2.pipe(texts))
    for a, b in zip(batched, again):
        assert spans(a) == spans(b)
        assert a.spans["crf_ner"].attrs["scores"] == b.spans["crf_ner"].attrs["scores"]  # same batch: bit-identical
    # DocBin keeps the spans and their scores
    restored = list(DocBin(docs=one, store_user_data=True).get_docs(nlp.vocab))
    for a, b in zip(one, restored):
        assert [(s.start, s.end, s.label_) for s in b.spans["crf_ner"]] == [
            (s.start, s.end, s.label_) for s in a.spans["crf_ner"]
        ]
        assert b.spans["crf_ner"].attrs["scores"] == a.spans["crf_ner"].attrs["scores"]
        assert [e._.crf_prob for e in b.ents] == [e._.crf_prob for e in a.ents]


def test_temperature_changes_probabilities_not_decoding(nlp):
    doc = nlp(TEXT)
    hot = with_settings(nlp, temperature=3.0)(TEXT)
    assert spans(hot) == spans(doc)
    assert [e._.crf_prob for e in hot.ents] != pytest.approx([e._.crf_prob for e in doc.ents])


# -- labels -----------------------------------------------------------------------------


def test_new_labels_are_refused_clearly_and_reinitializing_works():
    nlp = trained("BIO", n_iter=5)
    pipe = nlp.get_pipe("crf_ner")
    with pytest.raises(ValueError, match="cannot add the label 'DRUG' to a trained model.*nlp.initialize"):
        pipe.add_label("DRUG")
    # an update whose gold carries an unknown label is an error, never silently "missing"
    eg = Example.from_dict(nlp.make_doc("Take aspirin daily ."), {"entities": [(5, 12, "DRUG")]})
    with pytest.raises(ValueError, match="label 'DRUG', which this component does not know"):
        nlp.update([eg])
    # the way the message names works: re-initialize with examples that carry it
    egs = examples(nlp) + [eg]
    nlp.initialize(lambda: egs)
    assert "DRUG" in pipe.labels
    losses = nlp.update(egs)
    assert numpy.isfinite(losses["crf_ner"])


# -- long docs among short ones ---------------------------------------------------------


def test_a_long_doc_among_short_ones_gives_the_same_annotations(nlp, monkeypatch):
    import conll_crf.pipeline.length_groups as buckets

    texts = [t for t, _ in TRAIN_DATA] * 4 + [TEXT * 40] + ["Brussels ."] * 3
    monkeypatch.setattr(buckets, "MIN_PADDED_POSITIONS", 64)  # force grouping on this small batch
    assert len(buckets.length_groups([len(nlp.make_doc(t)) for t in texts])) > 1
    grouped = list(nlp.pipe(texts, batch_size=64))
    alone = [nlp(t) for t in texts]
    for a, b in zip(grouped, alone):
        assert spans(a) == spans(b)
        assert [(s.start, s.end, s.label_) for s in a.spans["crf_ner"]] == [
            (s.start, s.end, s.label_) for s in b.spans["crf_ner"]
        ]
        assert a.spans["crf_ner"].attrs["scores"] == pytest.approx(b.spans["crf_ner"].attrs["scores"], abs=1e-6)


def test_v1_models_keep_their_behaviour():
    """conll_crf.BiLSTMCRF.v1 (old configs and pipelines): sentence starts and presets
    do not constrain it, as before; whitespace still can only be O."""
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config("BIO", "conll_crf.BiLSTMCRF.v1"))
    train(nlp)
    doc = nlp(TEXT)
    words = [t.text for t in doc]
    split = nlp(Doc(nlp.vocab, words=words, sent_starts=[True, True] + [False] * (len(words) - 2)))
    assert spans(split) == spans(doc)
    assert ("Peter Blackburn", "PER") in [(e.text, e.label_) for e in split.ents]


def test_empty_one_token_and_20000_token_docs(nlp):
    docs = list(nlp.pipe(["", "Brussels", " ".join(["Peter Blackburn works in Brussels ."] * 3400)]))
    assert len(docs[0].ents) == 0 and len(docs[0].spans["crf_ner"]) == 0
    assert len(docs[2]) >= 20000
    for doc in docs[1:]:
        group = doc.spans["crf_ner"]
        assert all(0 < s <= 1 + 1e-9 for s in group.attrs["scores"])
        assert all(e._.crf_prob is not None for e in doc.ents)
    assert len(docs[2].ents) >= 3400


def test_crf_prob_reads_a_long_document_in_n_log_n():
    """ent._.crf_prob finds the entity in crf_ner's sorted span group by bisection (the same values as a scan,
    an unsorted group included): every probability of a document with 20,000 candidates in well under a second."""
    import time

    from conll_crf.pipeline.scored_spans import entity_probability as _entity_probability

    nlp = spacy.blank("en")
    doc = nlp.make_doc(" ".join(["Word"] * 40000))
    keys = sorted({(s, s + 1 + (s % 3), label) for s in range(0, 39990, 2) for label in ("LOC", "ORG")})
    keys = keys[:20000]
    doc.spans["crf_ner"] = [Span(doc, s, e, label=label) for s, e, label in keys]
    doc.spans["crf_ner"].attrs["scores"] = [(i % 97) / 97 for i in range(len(keys))]
    doc.spans["crf_ner"].attrs["source"] = "crf_ner"
    picked = [Span(doc, s, e, label=label) for s, e, label in keys[::10]]
    start = time.perf_counter()
    got = [_entity_probability(span) for span in picked]
    assert time.perf_counter() - start < 1.0
    assert got == [(i % 97) / 97 for i in range(0, len(keys), 10)]
    assert _entity_probability(Span(doc, 1, 2, label="PER")) is None
    # an edited, unsorted group is still read right
    shuffled = keys[::-1]
    doc.spans["crf_ner"] = [Span(doc, s, e, label=label) for s, e, label in shuffled]
    doc.spans["crf_ner"].attrs["scores"] = [float(i) for i in range(len(shuffled))]
    doc.spans["crf_ner"].attrs["source"] = "crf_ner"
    assert _entity_probability(Span(doc, *shuffled[5][:2], label=shuffled[5][2])) == 5.0
