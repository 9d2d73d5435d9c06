"""`conll-crf annotate`: inputs, shard plans, bad records, output schema, resume, both engines."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy

from conll_crf.annotate.annotator import Annotator, split_text
from conll_crf.annotate.job import Job, JobConfig, JobError, exit_code, run_job
from conll_crf.annotate.records import (
    InputError,
    Record,
    RecordError,
    expand_inputs,
    plan_shards,
    read_shard,
)

CODE = str(Path(__file__).with_name("annotate_components.py"))
PATTERNS = [
    {"label": "PER", "pattern": "Ekeus"},
    {"label": "LOC", "pattern": "Baghdad"},
    {"label": "ORG", "pattern": [{"LOWER": "european"}, {"LOWER": "union"}]},
]


def text_of(i: int) -> str:
    return f"Ekeus heads for Baghdad on day {i} ." if i % 3 else f"The European Union met {i} times ."


def ruler_pipeline(path: Path, extra=()) -> str:
    spacy.util.import_file("annotate_components", CODE)
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    for name, config in extra:
        nlp.add_pipe(name, config=config)
    nlp.to_disk(path)
    return str(path)


@pytest.fixture(scope="module")
def ruler_model(tmp_path_factory):
    return ruler_pipeline(tmp_path_factory.mktemp("ruler") / "model")


def write_jsonl(path: Path, n: int, start: int = 0, lines=()) -> Path:
    with path.open("wb") as f:
        for i in range(start, start + n):
            f.write((json.dumps({"id": f"doc-{i}", "text": text_of(i)}) + "\n").encode())
        for line in lines:
            f.write(line if isinstance(line, bytes) else line.encode())
    return path


def read_rows(folder: Path, kind: str = "entities"):
    rows = []
    for path in sorted((folder / kind).glob("part-*")):
        if path.suffix == ".parquet":
            rows.extend(pq.read_table(path).to_pylist())
        else:
            rows.extend(json.loads(line) for line in path.read_text(encoding="utf8").splitlines())
    return rows


def job(inputs, model, output, **kwargs) -> JobConfig:
    kwargs.setdefault("progress", False)
    return JobConfig(inputs=[str(i) for i in inputs], model=model, output=Path(output), **kwargs)


# -- inputs and shard plans -----------------------------------------------------------------------


def test_expand_inputs_files_folders_globs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    a = write_jsonl(tmp_path / "d" / "b.jsonl", 2)
    b = tmp_path / "d" / "sub" / "a.txt"
    b.write_text("x")
    (tmp_path / "d" / "notes.md").write_text("ignored: not an input suffix")
    (tmp_path / "d" / ".hidden").mkdir()
    (tmp_path / "d" / ".hidden" / "c.txt").write_text("hidden")
    assert expand_inputs([str(tmp_path / "d")]) == [a, b]
    assert expand_inputs([str(tmp_path / "d" / "**" / "*.txt"), str(a), str(tmp_path / "d")]) == [b, a]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.parquet")])


def test_plan_cuts_the_record_stream_across_files_and_reads_back_exactly(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", 7, lines=["\n", "   \n"])  # blank lines are not records
    second = tmp_path / "b.jsonl"
    second.write_bytes(b"\n" + (tmp_path / "a.jsonl").read_bytes().replace(b'"doc-', b'"b-'))
    table = pa.table({"text": [text_of(i) for i in range(11)], "id": [f"p{i}" for i in range(11)]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=3)
    (tmp_path / "d.txt").write_text("\ufeffA text file.")
    paths = [first, second, tmp_path / "c.parquet", tmp_path / "d.txt"]
    plan = plan_shards(paths, shard_size=4, text_field="text")
    assert [f.n_records for f in plan.files] == [7, 7, 11, 1]
    assert [plan.shard_records(i) for i in range(len(plan.shards))] == [4, 4, 4, 4, 4, 4, 2]
    items = [it for i in range(len(plan.shards)) for it in read_shard(plan.shard_spec(i), "text", "id")]
    assert all(isinstance(it, Record) for it in items)
    assert [it.id for it in items] == (
        [f"doc-{i}" for i in range(7)] + [f"b-{i}" for i in range(7)] + [f"p{i}" for i in range(11)] + [str(paths[3])]
    )
    assert [it.position for it in items[7:14]] == list(range(2, 9))  # 1-based lines, after b.jsonl's blank first line
    assert [it.position for it in items[14:25]] == list(range(11))  # Parquet rows, 0-based
    assert items[-1].text == "A text file."  # BOM removed
    assert plan.fingerprint() == plan_shards(paths, 4, "text").fingerprint()


def test_every_bad_record_gets_an_error_and_nothing_is_skipped(tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        2,
        lines=[
            "{not json\n",
            "[1, 2]\n",
            json.dumps({"id": "x"}) + "\n",
            json.dumps({"id": "y", "text": 3}) + "\n",
            json.dumps({"id": [1], "text": "t"}) + "\n",
            b'{"text": "caf\xe9"}\n',
            json.dumps({"id": 7, "text": ""}) + "\n",
            json.dumps({"text": "no id"}),  # no final newline
        ],
    )
    bad_text = tmp_path / "latin1.txt"
    bad_text.write_bytes(b"caf\xe9")
    plan = plan_shards([path, bad_text], shard_size=100, text_field="text")
    items = list(read_shard(plan.shard_spec(0), "text", "id"))
    assert len(items) == 11
    errors = [(it.id, it.position, it.reason) for it in items if isinstance(it, RecordError)]
    assert errors == [
        (None, 3, "not valid JSON at column 2: Expecting property name enclosed in double quotes"),
        (None, 4, "a JSON list, not an object"),
        ("x", 5, "no 'text' field"),
        ("y", 6, "'text' is int, not a string"),
        (None, 7, "id is list, not a string or an integer"),
        (None, 8, "not valid UTF-8 (byte 13 of the line)"),
        (str(bad_text), 0, "not valid UTF-8 (byte 3)"),
    ]
    good = [(it.id, it.text) for it in items if isinstance(it, Record)]
    assert good == [
        ("doc-0", text_of(0)),
        ("doc-1", text_of(1)),
        (7, ""),
        (f"{path}:10", "no id"),
    ]  # an integer id stays one


def test_parquet_without_the_text_column_is_refused_before_anything_runs(tmp_path, ruler_model):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(JobError, match=r"a\.parquet: no column 'text' \(columns: body\)"):
        run_job(job([tmp_path / "a.parquet"], ruler_model, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    manifest = run_job(job([tmp_path / "a.parquet"], ruler_model, tmp_path / "out", text_field="body"))
    assert manifest["counts"]["documents"] == 1


# -- the annotator ---------------------------------------------------------------------------------


def test_split_text_covers_the_text_and_prefers_paragraph_line_sentence_space():
    text = "First para. Second sentence here.\n\nNext para line one.\nline two words words"
    for limit in (1, 5, 12, 20, 40, len(text)):
        pieces = split_text(text, limit)
        assert "".join(p for _, p in pieces) == text
        assert all(len(p) <= limit for _, p in pieces)
        assert [off for off, _ in pieces] == [sum(len(p) for _, p in pieces[:k]) for k in range(len(pieces))]
    assert [p for _, p in split_text(text, 40)][0] == "First para. Second sentence here.\n\n"
    assert [p for _, p in split_text("aaaa. bbbb cc", 9)] == ["aaaa. ", "bbbb cc"]


def test_long_documents_are_annotated_in_pieces_with_whole_text_offsets(ruler_model):
    text = " ".join(text_of(i) for i in range(40))
    whole = Annotator(ruler_model).annotate([Record("a", text, "s", 0)])[0][0]["entities"]
    pieced = Annotator(ruler_model, max_chars=100).annotate([Record("a", text, "s", 0)])[0][0]["entities"]
    assert len(text) > 1000 and pieced == whole
    assert all(text[e["start_char"] : e["end_char"]] == e["text"] for e in pieced)


def test_scores_come_from_the_spans_group_and_the_string_store_stays_flat(tmp_path):
    model = ruler_pipeline(tmp_path / "m", [("test_span_scores", {"key": "crf_ner"})])
    annotator = Annotator(model, code=[CODE], batch_size=4)
    rows, errors, words = annotator.annotate([Record("a", "Ekeus heads for Baghdad .", "s", 0)])
    assert errors == []
    assert [(e["text"], e["score"]) for e in rows[0]["entities"]] == [("Ekeus", 0.5), ("Baghdad", 0.6)]
    assert words == 5
    assert (
        Annotator(model, code=[CODE], scores_key="other").annotate([Record("a", "Ekeus", "s", 0)])[0][0]["entities"][0][
            "score"
        ]
        is None
    )
    import torch

    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # threads=1, the default
    n_strings = len(annotator.nlp.vocab.strings)
    annotator.annotate([Record(str(i), f"Word{i}x{i} zq{i * 7} Baghdad", "s", 0) for i in range(200)])
    assert len(annotator.nlp.vocab.strings) == n_strings  # memory_zone: no new strings kept


def test_crf_ner_pipeline_runs_under_the_annotator(tmp_path):
    from tests.pipeline.test_component import crf_config, train

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    train(nlp, n_iter=30)
    nlp.to_disk(tmp_path / "crf")
    texts = ["U.N. official Ekeus heads for Baghdad .", "", "Peter Blackburn works in Brussels ."] * 3
    annotator = Annotator(str(tmp_path / "crf"), batch_size=2)
    rows, _, _ = annotator.annotate([Record(str(i), t, "s", i) for i, t in enumerate(texts)])
    expected = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    assert [[(e["start_char"], e["end_char"], e["label"]) for e in r["entities"]] for r in rows] == expected
    assert rows[1]["entities"] == []
    # crf_ner's entity probabilities (doc.spans["crf_ner"]) become the rows' scores
    probs = [[e._.crf_prob for e in doc.ents] for doc in nlp.pipe(texts)]
    assert [[e["score"] for e in r["entities"]] for r in rows] == [pytest.approx(p, abs=1e-6) for p in probs]
    assert all(0 < e["score"] <= 1 for r in rows for e in r["entities"])


def test_workers_keep_freed_memory_unless_told_not_to(tmp_path, monkeypatch):
    """The annotator owns its process: it keeps the head's large freed buffers (conll_crf.process) unless
    --no-retain-freed-memory, which also switches it off in every crf_ner whose config turns it on; the
    manifest records which."""
    import conll_crf.annotate.annotator
    import conll_crf.process
    from conll_crf.cli import build_parser

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", name="ner_a", config={"retain_freed_memory": True})
    nlp.add_pipe("crf_ner", name="ner_b", config={"spans_key": "b"})
    from spacy.training import Example

    nlp.initialize(lambda: [Example.from_dict(nlp.make_doc("Peter works ."), {"entities": ["U-PER", "O", "O"]})])
    nlp.to_disk(tmp_path / "crf")
    calls, component_calls = [], []
    monkeypatch.setattr(conll_crf.annotate.annotator, "retain_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(conll_crf.process, "retain_freed_memory", lambda: component_calls.append(1) or True)
    Annotator(str(tmp_path / "crf"))
    assert calls == [1] and component_calls == [1]  # the annotator, and ner_a at creation
    Annotator(str(tmp_path / "crf"), retain_freed_memory=False)
    assert calls == [1] and component_calls == [1]  # neither: ner_a is overridden
    args = build_parser().parse_args(["annotate", "x.jsonl", "--model", "m", "--output", "o"])
    assert args.retain_freed_memory is True
    args = build_parser().parse_args(
        ["annotate", "x.jsonl", "--model", "m", "--output", "o", "--no-retain-freed-memory"]
    )
    assert args.retain_freed_memory is False
    src = write_jsonl(tmp_path / "in.jsonl", 3)
    manifest = run_job(job([src], str(tmp_path / "crf"), tmp_path / "out", retain_freed_memory=False))
    assert manifest["runs"][0]["arguments"]["retain_freed_memory"] is False
    assert calls == [1] and component_calls == [1]


def test_pipeline_factories_from_a_folder_a_package_layout_or_unknown(tmp_path, ruler_model):
    from conll_crf.annotate.annotator import pipeline_factories

    assert pipeline_factories(ruler_model) == {"entity_ruler"}
    # an installed package keeps its pipeline in <lang>_<name>-<version>/ next to meta.json
    package = tmp_path / "en_pkg"
    package.mkdir()
    spacy.load(ruler_model).to_disk(package / "en_pkg-1.2.3")
    (package / "meta.json").write_text(json.dumps({"lang": "en", "name": "pkg", "version": "1.2.3"}))
    assert pipeline_factories(str(package)) == {"entity_ruler"}
    assert pipeline_factories(str(tmp_path / "missing")) is None
    # a component without a factory: unknown, so the full entry-point scan runs
    config = (Path(ruler_model) / "config.cfg").read_text().replace('factory = "entity_ruler"', 'source = "x"')
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.cfg").write_text(config)
    assert pipeline_factories(str(tmp_path / "odd")) is None


def test_loading_imports_only_the_entry_point_factories_the_pipeline_names(tmp_path):
    """spaCy's Language() imports every package with a `spacy_factories` entry point;
    the Annotator imports spacy-transformers only for a pipeline that uses it."""
    pytest.importorskip("spacy_transformers")
    from tests.pipeline.test_component import crf_config

    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", config=crf_config())
    nlp.initialize(lambda: [spacy.training.Example.from_dict(nlp.make_doc("Ekeus met"), {"entities": ["U-PER", "O"]})])
    nlp.to_disk(tmp_path / "crf")
    script = f"""
import sys
import spacy
from conll_crf.annotate.annotator import Annotator, entry_point_factories_limited_to
annotator = Annotator({str(tmp_path / "crf")!r})
assert annotator.nlp.pipe_names == ["crf_ner"]
assert "spacy_transformers" not in sys.modules, "a CPU pipeline imported spacy-transformers"
assert "get_all" not in vars(spacy.util.registry._entry_point_factories)  # the method is back
with entry_point_factories_limited_to({{"transformer"}}):
    spacy.blank("en")
assert "spacy_transformers" in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]


# -- jobs ----------------------------------------------------------------------------------------


def test_local_job_output_schema_manifest_and_exit_status(tmp_path, ruler_model):
    src = write_jsonl(tmp_path / "in.jsonl", 23, lines=["{bad\n", json.dumps({"id": "e", "text": ""}) + "\n"])
    manifest = run_job(job([src], ruler_model, tmp_path / "out", shard_size=10, output_format="parquet"))
    assert exit_code(manifest) == 3 and manifest["state"] == "complete"
    n_org = len(range(0, 23, 3))  # text_of(i): 1 entity in 7 tokens when i % 3 == 0, else 2 in 8
    assert manifest["counts"] == {
        "records": 25,
        "documents": 24,
        "entities": n_org + 2 * (23 - n_org),
        "errors": 1,
        "words": 7 * n_org + 8 * (23 - n_org),
        "records_planned": 25,
        "blank_lines": 0,
        "inputs_not_read": 0,
        "duplicate_ids": 0,
    }
    assert [s["status"] for s in manifest["shards"]] == ["complete"] * 3
    assert manifest["model"]["name"] == "pipeline" and "spacy" in manifest["runs"][0]["versions"]
    schema = pq.read_schema(tmp_path / "out/entities/part-00000.parquet")
    assert str(schema.field("entities").type) == (
        "list<element: struct<start_char: int64, end_char: int64, label: string, text: string, score: double>>"
    )
    rows = read_rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [f"doc-{i}" for i in range(23)] + ["e"]
    assert rows[1]["entities"] == [
        {"start_char": 0, "end_char": 5, "label": "PER", "text": "Ekeus", "score": None},
        {"start_char": 16, "end_char": 23, "label": "LOC", "text": "Baghdad", "score": None},
    ]
    assert rows[-1]["entities"] == []
    assert read_rows(tmp_path / "out", "errors") == [
        {
            "id": None,
            "source": str(src),
            "position": 24,
            "reason": "not valid JSON at column 2: Expecting property name enclosed in double quotes",
        }
    ]
    # the same job again: nothing to do, same manifest counts; other arguments: refused
    pq_job = dict(output_format="parquet")
    again = run_job(job([src], ruler_model, tmp_path / "out", shard_size=10, engine="local", **pq_job))
    assert again["counts"] == manifest["counts"] and again["runs"][-1]["shards_pending_at_start"] == 0
    with pytest.raises(JobError, match="holds another job: --shard-size is 5, the job's was 10. Give a new"):
        run_job(job([src], ruler_model, tmp_path / "out", shard_size=5, **pq_job))
    with pytest.raises(JobError, match="--text-field is 'body', the job's was 'text'"):
        run_job(job([src], ruler_model, tmp_path / "out", shard_size=10, text_field="body", **pq_job))
    with pytest.raises(JobError, match="--format is 'jsonl', the job's was 'parquet'"):
        run_job(job([src], ruler_model, tmp_path / "out", shard_size=10))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("a user's file")
    with pytest.raises(JobError, match="not empty"):
        run_job(job([src], ruler_model, tmp_path / "other"), overwrite=True)
    assert (tmp_path / "other" / "keep.txt").exists()


def test_resume_redoes_exactly_the_unfinished_shards(tmp_path, ruler_model):
    src = write_jsonl(tmp_path / "in.jsonl", 30)
    cfg = dict(shard_size=7, output_format="jsonl")
    run_job(job([src], ruler_model, tmp_path / "full", **cfg))
    run_job(job([src], ruler_model, tmp_path / "crashed", **cfg))
    out = tmp_path / "crashed"
    # what a kill leaves: a shard without its status (killed before the status write), a half-written
    # entities file under its temporary name, and a shard whose entities file was never renamed
    (out / "_status/part-00001.json").unlink()
    (out / "entities/part-00001.jsonl").write_text('{"id": "doc-7", "truncated')
    (out / "entities/part-00003.jsonl").rename(out / "entities/part-00003.jsonl.tmp")
    manifest = run_job(job([src], ruler_model, out, **cfg))
    assert manifest["runs"][-1]["shards_pending_at_start"] == 2
    assert not list(out.rglob("*.tmp"))
    assert read_rows(out) == read_rows(tmp_path / "full")
    assert sorted(r["id"] for r in read_rows(out)) == sorted(f"doc-{i}" for i in range(30))


def _cli(*args):
    return [sys.executable, "-m", "conll_crf", "annotate", *map(str, args)]


def test_a_job_killed_with_sigkill_resumes_to_the_uninterrupted_output(tmp_path):
    model = ruler_pipeline(tmp_path / "slow", [("test_slow", {"seconds": 0.03})])
    src = write_jsonl(tmp_path / "in.jsonl", 120, lines=["not json\n"])
    common = ["--model", model, "--code", CODE, "--shard-size", "10", "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cli(src, "--output", tmp_path / "out", *common), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    status = tmp_path / "out" / "_status"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(status.glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(status.glob("*.json")))
    assert 3 <= done_before < 13
    resumed = subprocess.run(_cli(src, "--output", tmp_path / "out", *common), env=env, capture_output=True, text=True)
    assert resumed.returncode == 3, resumed.stderr  # complete, with one bad record
    full = subprocess.run(_cli(src, "--output", tmp_path / "full", *common), env=env, capture_output=True, text=True)
    assert full.returncode == 3, full.stderr
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "full")
    assert read_rows(tmp_path / "out", "errors") == read_rows(tmp_path / "full", "errors")
    assert [r["id"] for r in read_rows(tmp_path / "out")] == [f"doc-{i}" for i in range(120)]
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["state"] == "complete" and len(manifest["runs"]) == 2
    assert manifest["runs"][1]["shards_pending_at_start"] == 13 - done_before


def test_cli_usage_errors_exit_2_and_write_nothing(tmp_path, ruler_model):
    result = subprocess.run(
        _cli(tmp_path / "nothing.jsonl", "--model", ruler_model, "--output", tmp_path / "o"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "nothing.jsonl: no such file or folder" in result.stderr
    assert not (tmp_path / "o").exists()
    src = write_jsonl(tmp_path / "in.jsonl", 1)
    result = subprocess.run(
        _cli(src, "--model", "no_such_pipeline", "--output", tmp_path / "o"), capture_output=True, text=True
    )
    assert result.returncode == 2 and "--model no_such_pipeline: no installed pipeline package" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_document_the_pipeline_raises_on_gets_an_error_row_and_the_rest_are_annotated(tmp_path):
    model = ruler_pipeline(tmp_path / "m", [("test_raise_on", {"word": "RAISE"})])
    src = write_jsonl(
        tmp_path / "in.jsonl",
        9,
        lines=[
            json.dumps({"id": "bad", "text": "RAISE in Baghdad"}) + "\n",
            json.dumps({"id": "surrogate", "text": "x \ud800 y"}) + "\n",  # valid JSON, not valid Unicode
        ],
    )
    manifest = run_job(job([src], model, tmp_path / "out", code=[CODE], batch_size=4, shard_size=6))
    assert exit_code(manifest) == 3 and manifest["counts"]["errors"] == 2
    assert [r["id"] for r in read_rows(tmp_path / "out")] == [f"doc-{i}" for i in range(9)]
    errors = read_rows(tmp_path / "out", "errors")
    assert [(e["id"], e["position"]) for e in errors] == [("bad", 10), ("surrogate", 11)]
    assert errors[0]["reason"] == "pipeline error: ValueError: test_raise_on: RAISE"
    assert errors[1]["reason"] == "'text' holds a lone surrogate at character 2 (not valid Unicode)"
    assert read_rows(tmp_path / "out")[2]["entities"][0]["text"] == "Ekeus"  # the failing batch's others


def test_inputs_bom_unknown_types_and_the_output_folder_inside_an_input_folder(tmp_path, ruler_model):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "text": "Ekeus"}).encode() + b"\n")
    manifest = run_job(job([corpus], ruler_model, corpus / "annotated", output_format="jsonl"))
    assert manifest["counts"]["documents"] == 1 and manifest["counts"]["errors"] == 0
    again = run_job(job([corpus], ruler_model, corpus / "annotated", output_format="jsonl"))  # outputs are not inputs
    assert again["runs"][-1]["shards_pending_at_start"] == 0
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(JobError, match=r"data\.json: not an input type annotate reads"):
        run_job(job([tmp_path / "data.json"], ruler_model, tmp_path / "o2"))


def test_overwrite_checks_the_new_job_first_and_a_folder_in_use_is_refused(tmp_path, ruler_model):
    src = write_jsonl(tmp_path / "in.jsonl", 3)
    run_job(job([src], ruler_model, tmp_path / "out"))
    with pytest.raises(JobError, match="no such file"):
        run_job(job([tmp_path / "typo.jsonl"], ruler_model, tmp_path / "out"), overwrite=True)
    assert len(read_rows(tmp_path / "out")) == 3  # the earlier job's output is still there
    holder = Job(job([src], ruler_model, tmp_path / "out"))
    try:
        with pytest.raises(JobError, match="in use by another annotate job"):
            run_job(job([src], ruler_model, tmp_path / "out"))
    finally:
        holder.close()
    manifest = run_job(job([src], ruler_model, tmp_path / "out", shard_size=2), overwrite=True)
    assert manifest["shards_total"] == 2 and len(read_rows(tmp_path / "out")) == 3


def test_a_job_killed_right_after_it_planned_resumes(tmp_path, ruler_model):
    src = write_jsonl(tmp_path / "in.jsonl", 5)
    Job(job([src], ruler_model, tmp_path / "out")).close()  # what a kill before the first shard leaves
    assert json.loads((tmp_path / "out/manifest.json").read_text())["state"] == "planned"
    manifest = run_job(job([src], ruler_model, tmp_path / "out"))
    assert manifest["state"] == "complete" and len(read_rows(tmp_path / "out")) == 5


# -- Ray -----------------------------------------------------------------------------------------


def test_ray_engine_gives_the_local_rows_even_when_a_worker_dies(tmp_path):
    pytest.importorskip("ray")
    marker = tmp_path / "crashed.pid"
    model = ruler_pipeline(tmp_path / "crashy", [("test_crash_once", {"marker": str(marker)})])
    src = write_jsonl(tmp_path / "a.jsonl", 35, lines=['{"id": "boom", "text": "CRASH in Baghdad"}\n', "{bad\n"])
    (tmp_path / "t").mkdir()
    for i in range(3):
        (tmp_path / "t" / f"{i}.txt").write_text(text_of(i))
    pq.write_table(pa.table({"text": [text_of(i) for i in range(9)]}), tmp_path / "p.parquet", row_group_size=4)
    inputs = [src, tmp_path / "t", tmp_path / "p.parquet"]
    cfg = dict(code=[CODE], shard_size=8, review=True)  # review rows (text, candidates) for `conll-crf review`
    marker.write_text("local run: do not crash")
    local = run_job(job(inputs, model, tmp_path / "local", **cfg))
    marker.unlink()
    ray_manifest = run_job(job(inputs, model, tmp_path / "ray", engine="ray", workers=2, **cfg))
    assert marker.exists(), "the crash was not injected"
    pid, omp, tokenizers = marker.read_text().split()
    assert int(pid) != os.getpid()
    if os.path.exists("/proc/self/environ"):  # the worker started with the thread environment, not only set it
        assert (omp, tokenizers) == ("1", "false")
    assert ray_manifest["state"] == "complete"
    assert ray_manifest["counts"] == local["counts"]
    assert ray_manifest["counts"]["records"] == 37 + 3 + 9
    assert read_rows(tmp_path / "ray") == read_rows(tmp_path / "local")
    assert all(isinstance(r["text"], str) and r["candidates"] == [] for r in read_rows(tmp_path / "ray"))
    assert read_rows(tmp_path / "ray", "errors") == read_rows(tmp_path / "local", "errors")
    assert "ray" in ray_manifest["runs"][0]["versions"]


def test_ray_a_document_that_kills_every_worker_leaves_its_shard_pending_not_a_loop(tmp_path):
    pytest.importorskip("ray")
    from conll_crf.annotate.ray_engine import MAX_SHARD_RETRIES

    marker = tmp_path / "deaths"
    model = ruler_pipeline(tmp_path / "poison", [("test_crash_once", {"marker": str(marker), "always": True})])
    src = write_jsonl(tmp_path / "a.jsonl", 12, lines=['{"id": "poison", "text": "CRASH"}\n'])
    manifest = run_job(job([src], model, tmp_path / "out", engine="ray", workers=2, code=[CODE], shard_size=5))
    assert len(marker.read_text().splitlines()) == 1 + MAX_SHARD_RETRIES
    assert manifest["state"] == "incomplete" and exit_code(manifest) == 1
    assert [s["status"] for s in manifest["shards"]] == ["complete", "complete", "pending"]
    assert [r["id"] for r in read_rows(tmp_path / "out")] == [f"doc-{i}" for i in range(10)]


def test_progress_bar_counts_documents_and_words_only_when_enabled(capsys):
    from conll_crf.annotate.progress import Progress

    with Progress(10, True) as bar:
        bar.update(4, 400)
        bar.update(6, 600)
    err = capsys.readouterr().err
    assert "10/10" in err and "words/s" in err and "doc/s" in err
    with Progress(10, False) as bar:
        bar.update(10, 1000)
    assert capsys.readouterr().err == ""
