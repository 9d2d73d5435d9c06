"""The CoNLL export of predictions, conlleval's rules (conll_crf.conll.conlleval) on
cases from conlleval's documented behaviour, and their agreement with spaCy's
ents P/R/F; the evaluate script's other duties."""

import importlib.util

import pytest
import spacy
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example

from conll_crf.conll import conlleval
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)


def make(nlp, words, ents, sent_starts=None):
    doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts)
    doc.ents = [spacy.tokens.Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def test_export_and_conlleval_agree_with_spacy(tmp_path):
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
    independent = evaluate.conlleval_scores(path)
    assert scores["ents_p"] == pytest.approx(4 / 8)
    assert scores["ents_r"] == pytest.approx(4 / 7)
    # the predicted (7, 9) LOC crosses the gold sentence break: conlleval reads it as two
    # chunks, "." (wrong) and "Germany" (right), where spaCy counts one wrong entity
    assert (independent["correct"], independent["guessed"], independent["gold"]) == (5, 9, 7)
    # without an entity across a sentence break the two agree exactly
    pred[0] = make(nlp, words1, [(0, 1, "PER"), (3, 4, "ORG"), (6, 7, "ORG"), (8, 9, "LOC")])
    scores = get_ner_prf([Example(p, g) for p, g in zip(pred, gold)])
    evaluate.write_conll(path, zip(gold, pred))
    independent = evaluate.conlleval_scores(path)
    for key in ("ents_p", "ents_r", "ents_f"):
        assert independent[key] == pytest.approx(scores[key], abs=1e-9)


def conll(lines):
    return conlleval.count([" ".join(line.split()) if line else "" for line in lines])


def test_conlleval_rules():
    # IOB2: B- starts, I- continues; two B- of one type touching are two chunks
    c = conll(["a B-PER B-PER", "b I-PER I-PER", "c B-PER O", "d B-PER B-PER"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks) == (3, 2, 2)
    # IOB1: I- after O starts a chunk; B- only separates touching chunks of one type
    c = conll(["a I-LOC I-LOC", "b I-LOC I-LOC", "c B-LOC B-LOC", "d O O", "e I-LOC I-ORG"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks) == (3, 3, 2)
    # a type change ends a chunk and starts another
    c = conll(["a B-PER B-PER", "b I-PER I-LOC"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks) == (1, 2, 0)
    # a chunk correct at its start but ending elsewhere is wrong
    c = conll(["a B-PER B-PER", "b O I-PER", "c O O"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks) == (1, 1, 0)
    # an empty line (or -X-) is a sentence break read as O O: a guessed entity that
    # runs on across it is two chunks, the first of which can be correct
    c = conll(["a B-PER B-PER", "", "b O I-PER", "-X- O O", "c B-LOC I-PER"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks) == (2, 3, 1)
    assert c.tokens == 3  # breaks are not tokens
    # -DOCSTART- lines are O O tokens; a chunk still open at the end counts
    c = conll(["-DOCSTART- O O", "", "a B-MISC B-MISC", "b I-MISC I-MISC"])
    assert (c.gold_chunks, c.guessed_chunks, c.correct_chunks, c.tokens) == (1, 1, 1, 3)
    # types may contain hyphens (conlleval 2004-01-26 splits at the first one)
    c = conll(["a B-GPE-X B-GPE-X", "b I-GPE-X I-GPE-X"])
    assert c.per_type == {"GPE-X": (1, 1, 1)} and c.prf()["f"] == 1.0
    with pytest.raises(ValueError, match="<input>:2: unexpected number of fields"):
        conll(["a O O", "b c O O"])


def test_is_valid_per_scheme():
    assert evaluate.is_valid(["B-PER", "I-PER", "O"], "BIO")
    assert not evaluate.is_valid(["O", "I-PER"], "BIO")
    assert evaluate.is_valid(["U-PER", "B-LOC", "L-LOC", "O"], "BILUO")
    assert not evaluate.is_valid(["B-LOC", "O"], "BILUO")  # unfinished
    assert not evaluate.is_valid(["I-LOC"], "BILUO")


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_one_pass_predict_counts_invalid_for_the_components_scheme(scheme):
    from tests.pipeline.test_component import crf_config, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(scheme=scheme))
    train(nlp, n_iter=15)
    texts = ["Peter Blackburn works in Brussels .", "", "EU rejects German call ."] * 3
    preds, invalid = evaluate.predict(nlp, [nlp.make_doc(t) for t in texts], batch_size=4)
    assert invalid == {"crf_ner": 0}
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in preds] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)
    ]


def test_evaluate_script_on_a_corpus_with_nothing_to_score(tmp_path):
    import subprocess
    import sys

    from spacy.tokens import DocBin

    from tests.pipeline.test_component import crf_config, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config(scheme="BILUO"))
    train(nlp, n_iter=5)
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "corpus").mkdir()
    DocBin(docs=[make(nlp, ["nothing", "here"], []), make(nlp, ["."], [])]).to_disk(tmp_path / "corpus/dev.spacy")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/evaluate.py"),
            str(tmp_path / "model"),
            str(tmp_path / "corpus"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
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
    out = package.package_meta(
        meta, package.entity_labels(tmp_path / "m", meta), "drugs", "1.0.0", "spacy-conll-crf>=0.1.0,<0.2.0", data
    )
    assert out["description"].startswith("Named entity recognition (DOSE, DRUG) with a BiLSTM-CRF")
    assert out["description"].endswith("trained on Our pharmacy notes (2025)")
    assert "PER" not in out["description"] and "CoNLL" not in out["description"]
    assert out["sources"][0]["name"] == "Our pharmacy notes (2025)" and out["license"] == "CC BY 4.0"
    assert out["requirements"] == ["spacy-conll-crf>=0.1.0,<0.2.0"]
    assert len(out["sources"]) == 1  # no static vectors: no encoder to credit
    with_vectors = {**meta, "vectors": {"width": 384, "vectors": 23695, "name": "encoder_vectors"}}
    out = package.package_meta(
        with_vectors, ["DOSE", "DRUG"], "drugs", "1.0.0", "x", data, "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert out["sources"][1]["url"] == "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"
    assert (
        out["sources"][1]["license"] == "that of the encoder (its model card names none)"
    )  # no vectors meta to read it from
    assert "23695 rows of width 384" in out["sources"][1]["name"]
    # the vectors' own meta (encoder_vectors.py writes it) names the encoder and its model card's licence
    vectors_meta = {
        "sources": [{"name": "some/encoder", "url": "https://huggingface.co/some/encoder", "license": "mit"}]
    }
    out = package.package_meta(with_vectors, ["DOSE", "DRUG"], "drugs", "1.0.0", "x", data, "", vectors_meta)
    assert (
        out["sources"][1]["license"] == "that of the encoder (mit)" and "of some/encoder" in out["sources"][1]["name"]
    )
    # the word table the weights carry (word_table.py's meta) is a source of its own, with its licence
    table_meta = {
        "vectors": {"width": 50, "vectors": 200000},
        "sources": [{"name": "GloVe 6B 50d", "url": "https://nlp.stanford.edu/projects/glove/", "license": "PDDL-1.0"}],
    }
    out = package.package_meta(
        with_vectors, ["DOSE", "DRUG"], "drugs", "1.0.0", "x", data, "", vectors_meta, table_meta
    )
    assert len(out["sources"]) == 3 and out["sources"][2]["license"] == "PDDL-1.0"
    assert (
        out["sources"][2]["name"].startswith("Word table: GloVe 6B 50d")
        and "200,000 rows of width 50" in out["sources"][2]["name"]
    )
