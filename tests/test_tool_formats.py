"""Pre-annotations for Label Studio, Prodigy and doccano, and `conll-crf review`."""

import json

import pytest
import spacy
from spacy.tokens import DocBin

from conll_crf import cli
from conll_crf.tool_formats import label_studio_config, to_doccano, to_label_studio, to_prodigy
from tests.pipeline.test_component import saved_crf_pipeline

TEXTS = [
    "Peter Blackburn works for the European Commission in Brussels .",
    "Nothing here .",
    "U.N. official Ekeus heads for Baghdad .",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved_crf_pipeline(tmp_path_factory.mktemp("tools") / "model", n_iter=40)


def test_each_tool_gets_its_own_format_with_the_probabilities(model):
    nlp = spacy.load(model)
    doc = nlp(TEXTS[0])
    probs = [e._.crf_prob for e in doc.ents]
    ls = to_label_studio(doc, "d1", "en_pipeline-0.0.0")
    results = ls["predictions"][0]["result"]
    assert ls["data"]["text"] == doc.text and len(results) == len(doc.ents) > 0
    for r, e, p in zip(results, doc.ents, probs):
        assert r["value"] == {"start": e.start_char, "end": e.end_char, "text": e.text, "labels": [e.label_]}
        assert (r["from_name"], r["to_name"], r["type"], r["score"]) == ("label", "text", "labels", p)
        assert doc.text[r["value"]["start"] : r["value"]["end"]] == e.text
    assert 0 <= ls["predictions"][0]["score"] <= min(probs)
    pg = to_prodigy(doc, "d1")
    assert [t["text"] for t in pg["tokens"]] == [t.text for t in doc]
    for span, e, p in zip(pg["spans"], doc.ents, probs):
        assert (span["token_start"], span["token_end"], span["label"], span["score"]) == (
            e.start,
            e.end - 1,
            e.label_,
            p,
        )
        assert pg["tokens"][span["token_end"]]["end"] == span["end"]
    assert pg["meta"]["id"] == "d1" and pg["meta"]["expected_errors"] >= 0
    dc = to_doccano(doc, "d1")
    assert dc["label"] == [[e.start_char, e.end_char, e.label_] for e in doc.ents] and dc["scores"] == probs
    assert '<Label value="PER"/>' in label_studio_config(["LOC", "PER"])


def test_label_studio_tasks_validate_with_label_studio_sdk(model):
    """Label Studio's own validator (label-studio-sdk's LabelInterface, the labelling config we write) accepts every
    task's prediction, and rejects one whose label the config lacks: the check is not vacuous."""
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    nlp = spacy.load(model)
    interface = sdk.LabelInterface(label_studio_config(nlp.get_pipe("crf_ner").labels))
    tasks = [to_label_studio(doc, i, "en_pipeline-0.0.0") for i, doc in enumerate(nlp.pipe(TEXTS))]
    assert sum(len(t["predictions"][0]["result"]) for t in tasks) > 0
    for task in tasks:
        assert all(task["data"].get(obj.value_name) is not None for obj in interface.objects)
        assert interface.validate_prediction(task["predictions"][0], return_errors=True) == []
    wrong = json.loads(json.dumps(tasks[0]["predictions"][0]))
    wrong["result"][0]["value"]["labels"] = ["NOT-A-LABEL"]
    assert interface.validate_prediction(wrong, return_errors=True)


def test_review_command_writes_the_queue_most_expected_errors_first(model, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(TEXTS)) + "\n\n")
    out = tmp_path / "tasks.jsonl"
    assert (
        cli.main(
            ["review", str(src), "--model", str(model), "--format", "prodigy", "--output", str(out), "--budget", "2"]
        )
        == 0
    )
    tasks = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(tasks) == 2 and "wrote 2 of 3 documents" in capsys.readouterr().out
    assert tasks[0]["meta"]["expected_errors"] >= tasks[1]["meta"]["expected_errors"]
    ls = tmp_path / "tasks.json"
    assert cli.main(["review", str(src), "--model", str(model), "--format", "label-studio", "--output", str(ls)]) == 0
    assert len(json.loads(ls.read_text())) == 3 and (tmp_path / "tasks.json.config.xml").exists()
    src.write_text('{"id": 1, "text": "fine"}\n{"id": 2}\n')
    assert cli.main(["review", str(src), "--model", str(model), "--format", "doccano", "--output", str(out)]) == 2
    assert f"{src}:2: not a JSON object with a string 'text'" in capsys.readouterr().err


def read_rounded(path):
    """A tasks file (JSON or JSONL) with its floats rounded to 5 places."""
    text = path.read_text()
    if text.startswith("["):
        return json.loads(text, parse_float=lambda x: round(float(x), 5))
    return [json.loads(line, parse_float=lambda x: round(float(x), 5)) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_review_from_annotate_output_gives_the_tasks_of_annotating_here(model, tmp_path, fmt):
    """`conll-crf annotate --review` (one machine here; Ray writes the same rows) then `conll-crf review` on its
    folder: the same tasks, order and probabilities as reviewing the texts directly, with nothing annotated again."""
    texts = TEXTS + [
        "Ekeus met Peter Blackburn in Baghdad .",
        "the EU and the U.N. .",
        "Peter works in Brussels .",
        "The European Commission met Ekeus .",
        "Blackburn flew to Baghdad for the U.N. .",
        "Nothing in Brussels either .",
    ]  # distinct texts: no ties in the order for float32 noise to break
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)) + "\n")
    job = tmp_path / "job"
    args = ["annotate", str(src), "--model", str(model), "--output", str(job), "--format", fmt, "--review"]
    assert cli.main(args + ["--shard-size", "4", "--no-progress"]) == 0
    for tool in ("label-studio", "prodigy", "doccano"):
        direct, via_job = tmp_path / f"direct.{tool}", tmp_path / f"job.{tool}"
        for source, out in ((src, direct), (job, via_job)):
            argv = ["review", str(source), "--model", str(model), "--format", tool, "--output", str(out)]
            assert cli.main(argv + ["--budget", "4"]) == 0
        # the same tasks in the same order; the probabilities equal to float32 precision (the batches differ)
        assert read_rounded(via_job) == read_rounded(direct)
    corpus = tmp_path / "corpus.spacy"
    nlp = spacy.load(model)
    DocBin(docs=[nlp.make_doc(t) for t in texts]).to_disk(corpus)
    out = tmp_path / "corpus.prodigy"
    assert cli.main(["review", str(corpus), "--model", str(model), "--format", "prodigy", "--output", str(out)]) == 0
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()][:4] == [
        json.loads(line)["text"] for line in (tmp_path / "direct.prodigy").read_text().splitlines()
    ]


def test_review_refuses_an_annotate_output_without_review_rows(model, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "text": TEXTS[0]}) + "\n")
    job = tmp_path / "job"
    assert cli.main(["annotate", str(src), "--model", str(model), "--output", str(job), "--no-progress"]) == 0
    out = tmp_path / "t.jsonl"
    assert cli.main(["review", str(job), "--model", str(model), "--format", "prodigy", "--output", str(out)]) == 2
    assert "annotated without --review" in capsys.readouterr().err and not out.exists()
    assert cli.main(["review", str(tmp_path), "--model", str(model), "--format", "prodigy", "--output", str(out)]) == 2
    assert "without manifest.json" in capsys.readouterr().err
