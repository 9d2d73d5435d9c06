"""crf_ner's settings take effect from the config, nlp.config shows them, and a write that would
do nothing is an error: the config is their one source."""

import json

import pytest
import spacy

from tests.pipeline.test_component import saved_crf_pipeline

TEXT = "Peter Blackburn works for the European Commission in Brussels ."
SETTINGS = {"threshold": 0.6, "candidate_threshold": 0.3, "temperature": 1.3, "spans_key": "scored"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return saved_crf_pipeline(tmp_path_factory.mktemp("settings") / "model", n_iter=60)


def scored(doc, key="crf_ner"):
    group = doc.spans[key]
    return [(s.start, s.end, s.label_) for s in group], list(group.attrs["scores"])


def test_settings_given_at_load_time_take_effect_and_nlp_config_shows_them(saved):
    plain = spacy.load(saved)
    loaded = spacy.load(saved, config={"components": {"crf_ner": SETTINGS}})
    pipe = loaded.get_pipe("crf_ner")
    for key, value in SETTINGS.items():
        assert loaded.config["components"]["crf_ner"][key] == value
        assert getattr(pipe, key) == value
    hot = loaded(TEXT)
    # the temperature reaches the probabilities, the spans key and candidate threshold the spans
    spans, scores = scored(hot, "scored")
    assert "crf_ner" not in hot.spans and min(scores) >= 0.3
    reference = spacy.load(saved, config={"components": {"crf_ner": {"temperature": 1.3}}})(TEXT)
    assert scores == [p for p in scored(reference)[1] if p >= 0.3]
    assert scored(reference)[1] != scored(plain(TEXT))[1]
    # the threshold leaves the reference's entities below it out of doc.ents, and only those
    ref_prob = dict(zip(scored(reference)[0], scored(reference)[1]))
    kept = [(e.start, e.end, e.label_) for e in reference.ents if ref_prob[(e.start, e.end, e.label_)] >= 0.6]
    assert [(e.start, e.end, e.label_) for e in hot.ents] == kept
    assert all(e._.crf_prob >= 0.6 for e in hot.ents)
    # saved again, the settings stay in the config
    again_path = saved.parent / "again"
    loaded.to_disk(again_path)
    cfg = spacy.util.load_config(again_path / "config.cfg")
    assert {k: cfg["components"]["crf_ner"][k] for k in SETTINGS} == SETTINGS
    assert scored(spacy.load(again_path)(TEXT), "scored") == (spans, scores)


@pytest.mark.parametrize(
    "key", ["threshold", "candidate_threshold", "temperature", "confidence", "spans_key", "sentence_dropout", "scheme"]
)
def test_a_setting_written_on_the_component_is_an_error_that_names_the_config(saved, key):
    pipe = spacy.load(saved).get_pipe("crf_ner")
    with pytest.raises(AttributeError, match=f"{key} is a setting of the pipeline's config.*spacy.load"):
        setattr(pipe, key, getattr(pipe, key))
    with pytest.raises(KeyError, match=f"{key} is a setting of the pipeline's config"):
        pipe.cfg[key] = "BILUO" if key == "scheme" else getattr(pipe, key)
    with pytest.raises(KeyError, match="cfg holds only labels, scheme"):
        pipe.cfg["colour"] = "blue"


def test_a_pipeline_saved_with_the_temperature_in_its_cfg_warns_and_uses_its_config(saved, tmp_path):
    """spacy-conll-crf 0.3 kept the fitted temperature in crf_ner's cfg, where it overrode the config."""
    old = tmp_path / "old"
    spacy.load(saved).to_disk(old)
    cfg_path = old / "crf_ner" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    cfg["temperature"] = 1.7527
    cfg_path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match=r"fitted temperature \(1.7527\).*config's temperature \(1.0\).*temperature"):
        nlp = spacy.load(old)
    assert nlp.get_pipe("crf_ner").temperature == 1.0 == nlp.config["components"]["crf_ner"]["temperature"]
    assert scored(nlp(TEXT)) == scored(spacy.load(saved)(TEXT))
    kept = spacy.load(old, config={"components": {"crf_ner": {"temperature": 1.7527}}})  # as the warning says
    assert kept.get_pipe("crf_ner").temperature == 1.7527


def test_the_scheme_is_fixed_by_training(saved):
    with pytest.raises(ValueError, match="trained with scheme 'BIO', but its config says 'BILUO'"):
        spacy.load(saved, config={"components": {"crf_ner": {"scheme": "BILUO"}}})


def test_names_never_seen_in_training_get_their_own_temperature(saved):
    """temperature_unseen: an entity whose text was never a training entity gets the probability the
    CRF gives at that temperature; the others, at `temperature`; candidates likewise."""
    text = "Peter Blackburn met Zorblax Quentin for the European Commission in Brussels ."
    plain = spacy.load(saved)
    names = plain.get_pipe("crf_ner").training_names
    assert names == {
        "Peter Blackburn",
        "European Commission",
        "Brussels",
        "EU",
        "German",
        "British",
        "U.N.",
        "Ekeus",
        "Baghdad",
        "Germany",
        "European Union",
    }
    both = spacy.load(saved, config={"components": {"crf_ner": {"temperature": 1.3, "temperature_unseen": 2.0}}})
    assert both.config["components"]["crf_ner"]["temperature_unseen"] == 2.0
    at = {t: spacy.load(saved, config={"components": {"crf_ner": {"temperature": t}}})(text) for t in (1.3, 2.0)}
    doc = both(text)
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(e.start, e.end, e.label_) for e in at[1.3].ents]
    by_t = {t: dict(zip(*scored(d))) for t, d in at.items()}
    kinds = set()
    for span, p in zip(*scored(doc)):
        seen = doc[span[0] : span[1]].text in names
        kinds.add(seen)
        expected = by_t[1.3 if seen else 2.0].get(span)
        if expected is None:  # below the candidate threshold at the other temperature only: computed there
            expected = spacy.load(
                saved,
                config={"components": {"crf_ner": {"temperature": 1.3 if seen else 2.0, "candidate_threshold": 1e-9}}},
            )
            expected = dict(zip(*scored(expected(text))))[span]
        assert p == pytest.approx(expected, abs=1e-9)
    assert kinds == {True, False}  # both kinds were there to check


def test_temperature_unseen_needs_the_training_names(saved, tmp_path):
    old = tmp_path / "old"
    spacy.load(saved).to_disk(old)
    cfg_path = old / "crf_ner" / "cfg"
    cfg = json.loads(cfg_path.read_text())
    del cfg["names"]  # as saved before 0.4
    cfg_path.write_text(json.dumps(cfg))
    nlp = spacy.load(old, config={"components": {"crf_ner": {"temperature_unseen": 2.0}}})
    with pytest.raises(ValueError, match="temperature_unseen needs the training data's entity names"):
        nlp("Peter Blackburn works in Brussels .")


def test_per_label_thresholds_take_effect_and_are_read_only(saved):
    plain = spacy.load(saved)
    doc = plain(TEXT)
    probs = {(e.start, e.end, e.label_): e._.crf_prob for e in doc.ents}
    label = doc.ents[0].label_
    cut = probs[(doc.ents[0].start, doc.ents[0].end, label)] + 1e-9  # just above the first entity's
    nlp = spacy.load(saved, config={"components": {"crf_ner": {"thresholds": {label: cut}}}})
    assert nlp.config["components"]["crf_ner"]["thresholds"] == {label: cut}
    kept = [(e.start, e.end, e.label_) for e in nlp(TEXT).ents]
    assert kept == [k for k, p in probs.items() if k[2] != label or p >= cut]
    assert len(kept) < len(probs)
    with pytest.raises(TypeError):
        nlp.get_pipe("crf_ner").thresholds[label] = 0.0  # read-only: the config is its source
    with pytest.raises(ValueError, match=r"thresholds for unknown labels \['DRUG'\]"):
        spacy.load(saved, config={"components": {"crf_ner": {"thresholds": {"DRUG": 0.5}}}})(TEXT)
