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


def accepted_unchanged(task, fmt):
    """What the tool exports when a reviewer accepts the pre-annotation as it is."""
    if fmt == "label-studio":
        return {**task, "annotations": [{"result": task["predictions"][0]["result"], "was_cancelled": False}]}
    if fmt == "prodigy":
        return {**task, "answer": "accept", "_view_id": "ner_manual"}
    return task


@pytest.mark.parametrize("fmt", ["label-studio", "prodigy", "doccano"])
def test_round_trip_annotate_export_import_gives_the_same_entities(tmp_path, fmt):
    """annotate -> the tool's tasks -> accepted unchanged -> corrections: exactly the model's entities, any tool."""
    from conll_crf.review_inputs import review_docs
    from conll_crf.tool_formats import write_queue

    model = saved_crf_pipeline(tmp_path / "model", n_iter=40)
    nlp = spacy.load(model)
    texts = [TEXT, "Peter Blackburn works for the European Commission in Brussels .", "Nothing here ."]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)) + "\n")
    tasks_path = tmp_path / "tasks"
    write_queue(nlp, review_docs(nlp, src), fmt, tasks_path)
    if fmt == "label-studio":
        tasks = json.loads(tasks_path.read_text())
        by_text = {t["data"]["text"]: t for t in tasks}
        export = [accepted_unchanged(t, fmt) for t in tasks]
        (tmp_path / "export").write_text(json.dumps(export))
    else:
        tasks = [json.loads(line) for line in tasks_path.read_text().splitlines()]
        by_text = {t["text"]: t for t in tasks}
        (tmp_path / "export").write_text("\n".join(json.dumps(accepted_unchanged(t, fmt)) for t in tasks) + "\n")
    assert set(by_text) == set(texts)
    docs, counts = read_corrections(tmp_path / "export", fmt, nlp, labels=set(nlp.get_pipe("crf_ner").labels))
    predicted = {doc.text: ents(doc) for doc in nlp.pipe(texts)}
    assert sum(len(v) for v in predicted.values()) > 0
    assert {doc.text: ents(doc) for doc in docs} == predicted
    assert counts["partial"] == 0 and all(t.ent_iob_ in ("B", "I", "O") for doc in docs for t in doc)


def test_bad_exports_name_the_record_and_write_nothing(tmp_path, capsys):
    model = saved_crf_pipeline(tmp_path / "model", n_iter=5)
    nlp = spacy.load(model)
    labels = set(nlp.get_pipe("crf_ner").labels)
    cases = {
        "out-of-range": ("doccano", {"text": TEXT, "label": [[16, 99, "LOC"]]}, "out of the text's range 0-40"),
        "inside-a-token": ("doccano", {"text": TEXT, "label": [[17, 23, "LOC"]]}, "does not fall on token boundaries"),
        "overlap": ("doccano", {"text": TEXT, "label": [[16, 23, "LOC"], [20, 23, "ORG"]]}, "overlap"),
        "unknown-label": ("doccano", {"text": TEXT, "label": [[0, 5, "PERSON"]]}, "label 'PERSON' is not one"),
        "missing-field": ("prodigy", {"spans": [], "answer": "accept"}, "no 'text' field"),
        "doccano-as-prodigy": ("prodigy", {"text": TEXT, "label": [[0, 5, "PER"]]}, "has doccano's form"),
        "prodigy-as-doccano": ("doccano", {"text": TEXT, "spans": []}, "has prodigy's form"),
        "label-studio-as-doccano": ("doccano", {"data": {"text": TEXT}, "annotations": []}, "has label-studio's"),
    }
    for name, (fmt, record, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps({"text": "fine .", "label": []} if fmt == "doccano" else {"text": "fine ."}) + "\n")
        path.write_text(path.read_text() + json.dumps(record) + "\n")
        out = tmp_path / f"{name}.spacy"
        argv = ["corrections", str(path), "--format", fmt, "--output", str(out), "--model", str(model)]
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        assert f"{path}:2: " in err and message in err, (name, err)
        assert not out.exists()
    listing = tmp_path / "ls.json"
    listing.write_text(json.dumps([{"data": {"text": TEXT}}]))
    argv = ["corrections", str(listing), "--format", "prodigy", "--output", str(tmp_path / "x.spacy")]
    assert cli.main(argv) == 2 and "a JSON list, as Label Studio exports" in capsys.readouterr().err
    # told to add it, a new label is taken and counted
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"text": TEXT, "label": [[0, 5, "PERSON"]]}) + "\n")
    argv = ["corrections", str(path), "--format", "doccano", "--output", str(tmp_path / "new.spacy")]
    assert cli.main(argv + ["--model", str(model), "--add-labels"]) == 0
    assert "new labels (--add-labels): PERSON 1" in capsys.readouterr().out
    assert labels  # the model's own labels were the reference
