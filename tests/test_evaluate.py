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
