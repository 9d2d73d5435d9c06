"""Corrections from Label Studio, Prodigy and doccano exports back into training, and training on them."""

import json

import pytest
import spacy
from spacy.cli.train import train as spacy_train
from spacy.tokens import DocBin

from conll_crf import cli
from conll_crf.tool_corrections import CorrectionsError, read_corrections
from tests.pipeline.test_component import saved_crf_pipeline

TEXT = "Ekeus heads for Baghdad with Ann Smith ."


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def test_label_studio_export_reviewed_tasks_only(tmp_path):
    tasks = [
        {
            "data": {"text": TEXT},
            "annotations": [
                {
                    "result": [
                        {"type": "labels", "value": {"start": 0, "end": 5, "labels": ["PER"]}},
                        {"type": "labels", "value": {"start": 16, "end": 23, "labels": ["LOC"]}},
                    ]
                }
            ],
        },
        {"data": {"text": "Not reviewed ."}, "annotations": [{"was_cancelled": True, "result": []}]},
        {"data": {"text": "No annotation ."}, "predictions": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    docs, counts = read_corrections(path, "label-studio", spacy.blank("en"))
    assert [ents(d) for d in docs] == [[("Ekeus", "PER"), ("Baghdad", "LOC")]]
    assert counts == {"records": 3, "docs": 1, "skipped": 2, "partial": 0, "entities": 2}
    assert [t.ent_iob_ for t in docs[0]][-3:] == ["O", "O", "O"]  # reviewed: no entity there is known


def test_prodigy_binary_accepts_leave_the_rest_missing(tmp_path):
    nlp = spacy.blank("en")
    tokens = [{"text": t.text, "start": t.idx, "end": t.idx + len(t), "id": t.i} for t in nlp(TEXT)]
    lines = [
        {"text": TEXT, "_view_id": "ner", "spans": [{"start": 29, "end": 38, "label": "PER"}], "answer": "accept"},
        {"text": TEXT, "tokens": tokens, "spans": [{"start": 0, "end": 5, "label": "PER"}], "answer": "accept"},
        {"text": TEXT, "_view_id": "ner", "spans": [{"start": 0, "end": 5, "label": "ORG"}], "answer": "reject"},
    ]
    path = tmp_path / "prodigy.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    docs, counts = read_corrections(path, "prodigy", nlp)
    assert counts["docs"] == 2 and counts["partial"] == 1 and counts["skipped"] == 1
    binary, manual = docs
    assert ents(binary) == [("Ann Smith", "PER")] and binary[0].ent_iob_ == ""  # nobody looked: missing
    assert ents(manual) == [("Ekeus", "PER")] and manual[3].ent_iob_ == "O"


def test_doccano_both_forms_and_bad_records_name_where(tmp_path):
    nlp = spacy.blank("en")
    path = tmp_path / "doccano.jsonl"
    path.write_text(
        json.dumps({"text": TEXT, "label": [[0, 5, "PER"]]})
        + "\n"
        + json.dumps({"text": TEXT, "entities": [{"start_offset": 16, "end_offset": 23, "label": "LOC"}]})
        + "\n"
    )
    docs, _ = read_corrections(path, "doccano", nlp)
    assert [ents(d) for d in docs] == [[("Ekeus", "PER")], [("Baghdad", "LOC")]]
    path.write_text(json.dumps({"text": TEXT, "label": [[0, 3, "PER"]]}) + "\n")
    with pytest.raises(CorrectionsError, match=r"doccano.jsonl:1: the entity 'Eke' \(PER, characters 0-3\) does not"):
        read_corrections(path, "doccano", nlp)
    path.write_text(json.dumps({"text": TEXT, "label": [[0, 5, "PER"], [0, 11, "ORG"]]}) + "\n")
    with pytest.raises(CorrectionsError, match="doccano.jsonl:1: entities 'Ekeus' and 'Ekeus heads' overlap"):
        read_corrections(path, "doccano", nlp)
    path.write_text('{"label": []}\n')
    with pytest.raises(CorrectionsError, match="doccano.jsonl:1: no 'text' field"):
        read_corrections(path, "doccano", nlp)


def test_a_pipeline_goes_on_training_on_corrections_and_keeps_its_labels(tmp_path, capsys):
    nlp = spacy.load(saved_crf_pipeline(tmp_path / "model", n_iter=20))
    export = tmp_path / "doccano.jsonl"
    export.write_text(
        "\n".join(json.dumps({"text": TEXT, "label": [[0, 5, "PER"], [16, 23, "LOC"]]}) for _ in range(4))
    )
    args = [
        str(export),
        "--format",
        "doccano",
        "--output",
        str(tmp_path / "corr.spacy"),
        "--model",
        str(tmp_path / "model"),
    ]
    assert cli.main(["corrections", *args]) == 0
    assert "4 docs (0 partly reviewed), 8 entities" in capsys.readouterr().out
    assert len(list(DocBin().from_disk(tmp_path / "corr.spacy").get_docs(nlp.vocab))) == 4
    assert cli.main(["init-config", str(tmp_path / "tune.cfg"), "--source", str(tmp_path / "model")]) == 0
    overrides = {
        "paths.train": str(tmp_path / "corr.spacy"),
        "paths.dev": str(tmp_path / "corr.spacy"),
        "paths.vectors": None,
        "training.max_steps": 10,
        "training.eval_frequency": 5,
    }
    spacy_train(tmp_path / "tune.cfg", tmp_path / "tuned", overrides=overrides)
    tuned = spacy.load(tmp_path / "tuned" / "model-last")
    assert tuned.get_pipe("crf_ner").labels == nlp.get_pipe("crf_ner").labels == ("LOC", "MISC", "ORG", "PER")
