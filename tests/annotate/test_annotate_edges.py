"""`conll-crf annotate` at its edges: output folders it cannot write, a disk that fills up, inputs
resumed under other names, and every line, file and id of the input accounted for."""

import errno
import json
import os
from pathlib import Path

import pytest

from conll_crf import cli
from conll_crf.annotate import shards
from conll_crf.annotate.annotator import Annotator, batches
from conll_crf.annotate.job import JobError, run_job
from tests.annotate.test_annotate import job, read_rows, ruler_pipeline, text_of, write_jsonl


@pytest.fixture(scope="module")
def ruler_model(tmp_path_factory):
    return ruler_pipeline(tmp_path_factory.mktemp("ruler") / "model")


def annotate(*args) -> int:
    return cli.main(["annotate", *map(str, args), "--no-progress"])


# -- output folders that cannot be written: exit 2, one line, nothing written ---------------------


@pytest.mark.parametrize(
    "where, cause",
    [
        ("file", "is a file, not a folder"),
        ("under_file", "cannot write there: Not a directory"),
        ("proc", "cannot write there: "),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_with_one_line(tmp_path, ruler_model, capsys, where, cause):
    src = write_jsonl(tmp_path / "in.jsonl", 3)
    (tmp_path / "a_file").write_text("a user's file")
    output = {
        "file": tmp_path / "a_file",
        "under_file": tmp_path / "a_file" / "out",
        "proc": Path("/proc/conll_crf_annotate_test/out"),
    }[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert annotate(src, "--model", ruler_model, "--output", output) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"conll-crf annotate: error: --output {output}: {cause}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "a_file").read_text() == "a user's file"


def test_a_full_disk_stops_the_job_with_one_line_nothing_half_written_and_it_resumes(
    tmp_path, ruler_model, monkeypatch, capsys
):
    src = write_jsonl(tmp_path / "in.jsonl", 30)
    full = run_job(job([src], ruler_model, tmp_path / "full", shard_size=7))
    real_write = shards._write_atomic
    calls = []

    def disk_full_at_the_third_shard(path, rows, fmt, kind):
        calls.append(path)
        if len(calls) == 3:  # half a file under its temporary name, then ENOSPC, as a full disk does
            shards._tmp_name(path).write_text('{"id": "half')
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, rows, fmt, kind)

    monkeypatch.setattr(shards, "_write_atomic", disk_full_at_the_third_shard)
    code = annotate(src, "--model", ruler_model, "--output", tmp_path / "out", "--shard-size", 7)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("conll-crf annotate: stopped: ") and "No space left on device" in err[-1]
    assert "part-00002.jsonl" in err[-1] and "2 of 5 shards are complete" in err[-1]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["state"] == "incomplete" and manifest["shards_complete"] == 2
    monkeypatch.setattr(shards, "_write_atomic", real_write)
    resumed = run_job(job([src], ruler_model, tmp_path / "out", shard_size=7))
    assert resumed["state"] == "complete" and resumed["runs"][-1]["shards_pending_at_start"] == 3
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "full") and resumed["counts"] == full["counts"]


# -- resuming: inputs known by content ------------------------------------------------------------


def test_the_same_input_named_otherwise_resumes_and_keeps_the_first_runs_sources(tmp_path, ruler_model, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    src = write_jsonl(data / "in.jsonl", 12)
    monkeypatch.chdir(tmp_path)
    first = run_job(job(["data/in.jsonl"], ruler_model, tmp_path / "out", shard_size=5))
    rows = read_rows(tmp_path / "out")
    assert {r["source"] for r in rows} == {"data/in.jsonl"}
    os.utime(src, ns=(10**18, 10**18))  # touch: a new modification time, the same content
    for given, cwd in ((str(src), tmp_path), ("in.jsonl", data), (str(src), data)):
        monkeypatch.chdir(cwd)
        again = run_job(job([given], ruler_model, tmp_path / "out", shard_size=5))
        assert again["runs"][-1]["shards_pending_at_start"] == 0 and again["counts"] == first["counts"]
    assert read_rows(tmp_path / "out") == rows
    # other content: refused, saying what differs
    write_jsonl(src, 13)
    with pytest.raises(JobError, match=r"input 1 \(.*in\.jsonl\) differs in content: size .*n_records 13 \(was 12\)"):
        run_job(job([str(src)], ruler_model, tmp_path / "out", shard_size=5))
    with pytest.raises(JobError, match="the inputs are 2 files, the job's were 1"):
        run_job(job([str(src), str(write_jsonl(data / "b.jsonl", 1))], ruler_model, tmp_path / "out", shard_size=5))


# -- every line, file and id accounted for ---------------------------------------------------------


def test_blank_lines_skipped_files_integer_and_duplicate_ids_are_all_accounted_for(tmp_path, ruler_model, caplog):
    folder = tmp_path / "in"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "x.jsonl").write_text('{"text": "hidden"}\n')
    (folder / "table.csv").write_text("id,text\n1,x\n")
    (folder / "README").write_text("no suffix")
    (folder / ".notes.txt").write_text("hidden file")
    lines = [
        json.dumps({"id": 83, "text": text_of(1)}),
        "",
        "   \t",
        json.dumps({"id": "83", "text": text_of(2)}),
        json.dumps({"id": "dup", "text": text_of(3)}),
        json.dumps({"id": "dup", "text": text_of(4)}),
        json.dumps({"id": 83, "text": text_of(5)}),
        "",
    ]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    caplog.set_level("INFO", logger="conll_crf.annotate")
    manifest = run_job(job([folder], ruler_model, tmp_path / "out", shard_size=2))
    counts = manifest["counts"]
    assert counts["records"] == 5 and counts["blank_lines"] == 3  # 8 lines: 5 records, 3 blank, none lost
    assert manifest["inputs"][0]["blank_lines"] == 3
    assert sorted((Path(s["path"]).name, s["reason"]) for s in manifest["inputs_not_read"]) == [
        (".git", "hidden folder, not searched"),
        (".notes.txt", "hidden file"),
        ("README", "not *.jsonl, *.ndjson, *.parquet, *.txt"),
        ("table.csv", "not *.jsonl, *.ndjson, *.parquet, *.txt"),
    ]
    assert counts["inputs_not_read"] == 4
    rows = read_rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [83, "83", "dup", "dup", 83]  # JSON types kept; 83 and "83" differ
    assert counts["duplicate_ids"] == 2
    assert [(d["id"], d["again"].rsplit(":", 1)[1]) for d in manifest["duplicate_ids"]] == [("dup", "6"), (83, "7")]
    log = caplog.text
    assert "3 blank lines" in log and "4 files or hidden folders in the input folders were not read" in log
    assert "2 records have an id an earlier record has" in log


def test_parquet_output_writes_an_integer_id_as_its_string(tmp_path, ruler_model):
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"id": 7, "text": text_of(1)}) + "\n")
    run_job(job([src], ruler_model, tmp_path / "out", output_format="parquet"))
    assert pq.read_table(tmp_path / "out/entities/part-00000.parquet").column("id").to_pylist() == ["7"]


# -- memory: a long record's pieces flow through bounded batches -----------------------------------


def test_batches_are_bounded_by_texts_and_characters():
    pieces = [(0, 0, "x" * 40), (0, 40, "x" * 40), (0, 80, "x" * 40), (1, 0, "y" * 250), (2, 0, "z" * 10)]
    assert [[len(p[2]) for p in b] for _, b in batches(pieces, 64, 100)] == [[40, 40], [40], [250], [10]]
    assert [[len(p[2]) for p in b] for _, b in batches(pieces, 2, 0)] == [[40, 40], [40, 250], [10]]
    assert [start for start, _ in batches(pieces, 64, 100)] == [0, 2, 3, 4]


def test_a_long_records_pieces_are_not_batched_together(ruler_model):
    annotator = Annotator(ruler_model, batch_size=64, batch_chars=2_000, max_chars=1_000, retain_freed_memory=False)
    seen = []
    real_pipe = annotator.nlp.pipe

    def pipe(texts, **kwargs):
        texts = list(texts)
        seen.append(sum(len(t) for t in texts))
        return real_pipe(texts, **kwargs)

    annotator.nlp.pipe = pipe
    from conll_crf.annotate.records import Record

    text = " ".join(text_of(i) for i in range(400))  # about 13,000 characters
    rows, errors, _ = annotator.annotate([Record("long", text, "x", 1), Record("short", text_of(1), "x", 2)])
    assert not errors and len(seen) > 6 and max(seen) <= 2_000
    whole = Annotator(ruler_model, max_chars=len(text), retain_freed_memory=False).annotate(
        [Record("long", text, "x", 1)]
    )
    assert rows[0]["entities"] == whole[0][0]["entities"]  # cut at sentence ends: the same entities
