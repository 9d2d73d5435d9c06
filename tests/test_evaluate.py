"""The CoNLL export of predictions and the independent (seqeval, strict IOB2)
entity score agree with spaCy's ents P/R/F on a small sample with errors."""
import importlib.util

import pytest
import spacy
from spacy.tokens import Doc
from spacy.scorer import get_ner_prf
from spacy.training import Example

from .conftest import ROOT

spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)


def make(nlp, words, ents, sent_starts=None):
    doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts)
    doc.ents = [spacy.tokens.Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def test_export_and_seqeval_agree_with_spacy(tmp_path):
    pytest.importorskip("seqeval")
    nlp = spacy.blank("en")
    words1 = "Peter Blackburn met EU officials in Brussels . Germany agreed .".split()
    words2 = "U.N. official Ekeus heads for Baghdad .".split()
    starts1 = [True] + [False] * 7 + [True, False, False]
    gold = [
        make(nlp, words1, [(0, 2, "PER"), (3, 4, "ORG"), (6, 7, "LOC"), (8, 9, "LOC")], starts1),
        make(nlp, words2, [(0, 1, "ORG"), (2, 3, "PER"), (5, 6, "LOC")]),
    ]
    pred = [
        make(nlp, words1, [(0, 1, "PER"), (3, 4, "ORG"), (6, 7, "ORG"), (7, 9, "LOC")]),  # boundary, type, span errors
        make(nlp, words2, [(0, 1, "ORG"), (2, 3, "PER"), (5, 6, "LOC"), (4, 5, "MISC")]),  # one spurious
    ]
    scores = get_ner_prf([Example(p, g) for p, g in zip(pred, gold)])  # what spacy.ner_scorer.v1 computes
    path = tmp_path / "predictions.conll"
    evaluate.write_conll(path, zip(gold, pred))
    lines = path.read_text().splitlines()
    assert lines[:4] == ["-DOCSTART- O O", "", "Peter B-PER B-PER", "Blackburn I-PER O"]
    assert "" in lines[9:11]  # the gold sentence boundary is kept
    golds, preds = evaluate.read_conll_export(path)
    independent = evaluate.seqeval_scores(golds, preds)
    assert scores["ents_p"] == pytest.approx(4 / 8)
    assert scores["ents_r"] == pytest.approx(4 / 7)
    for key in ("ents_p", "ents_r", "ents_f"):
        assert independent[key] == pytest.approx(scores[key], abs=1e-9)


def test_is_valid_per_scheme():
    assert evaluate.is_valid(["B-PER", "I-PER", "O"], "BIO")
    assert not evaluate.is_valid(["O", "I-PER"], "BIO")
    assert evaluate.is_valid(["U-PER", "B-LOC", "L-LOC", "O"], "BILUO")
    assert not evaluate.is_valid(["B-LOC", "O"], "BILUO")  # unfinished
    assert not evaluate.is_valid(["I-LOC"], "BILUO")


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_one_pass_predict_counts_invalid_for_the_components_scheme(scheme):
    from .test_component import crf_config, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(scheme=scheme))
    train(nlp, n_iter=15)
    texts = ["Peter Blackburn works in Brussels .", "", "EU rejects German call ."] * 3
    preds, invalid = evaluate.predict(nlp, [nlp.make_doc(t) for t in texts], batch_size=4)
    assert invalid == {"crf_ner": 0}
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in preds] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)]


def test_evaluate_script_on_a_corpus_with_nothing_to_score(tmp_path):
    import subprocess
    import sys

    from spacy.tokens import DocBin

    from .test_component import crf_config, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(scheme="BILUO"))
    train(nlp, n_iter=5)
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "corpus").mkdir()
    DocBin(docs=[make(nlp, ["nothing", "here"], []), make(nlp, ["."], [])]).to_disk(tmp_path / "corpus/dev.spacy")
    result = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), str(tmp_path / "model"),
                             str(tmp_path / "corpus"), str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    gold = json.loads((tmp_path / "out/gold_tokens.json").read_text())
    assert gold["invalid_tag_sequences"] == {"crf_ner": 0}
    assert gold["ents_f"] is None or gold["ents_f"] == 0.0
    assert "F n/a" in result.stdout or "F 0.0000" in result.stdout


def test_package_meta_describes_the_pipeline_by_its_own_labels_and_data(tmp_path):
    spec = importlib.util.spec_from_file_location("package_script", ROOT / "scripts" / "package.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner").add_label("DRUG")
    nlp.get_pipe("crf_ner").add_label("DOSE")
    nlp.add_pipe("entity_ruler")  # not an entity recognizer with labels of its own
    nlp.to_disk(tmp_path / "m")
    meta = {"lang": "en", "labels": {"crf_ner": ["DOSE", "DRUG"], "entity_ruler": ["X"]}, "requirements": []}
    data = {**package.CONLL, "data_name": "Our pharmacy notes (2025)", "license": "CC BY 4.0"}
    out = package.package_meta(meta, package.entity_labels(tmp_path / "m", meta), "drugs", "1.0.0",
                               "spacy-conll-crf>=0.1.0,<0.2.0", data)
    assert out["description"].startswith("Named entity recognition (DOSE, DRUG) with a BiLSTM-CRF")
    assert out["description"].endswith("trained on Our pharmacy notes (2025)")
    assert "PER" not in out["description"] and "CoNLL" not in out["description"]
    assert out["sources"][0]["name"] == "Our pharmacy notes (2025)" and out["license"] == "CC BY 4.0"
    assert out["requirements"] == ["spacy-conll-crf>=0.1.0,<0.2.0"]
