"""One shard of an annotation job: read its records, annotate them, write its files.

The same `process_shard` serves both engines (local_engine.py, ray_engine.py),
so they write identical files. Each file is written under a temporary name of
the writer's own and renamed, and the shard's status file comes last: a shard
is complete exactly when its status file exists, and a shard redone after a
crash (or by a replaced Ray worker) rewrites identical files.
"""

import functools
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from .annotator import Annotator
from .records import Record, RecordError, read_shard

OUTPUT_FORMATS = ("jsonl", "parquet")


@functools.lru_cache(maxsize=None)
def _schemas() -> Dict:
    """The Parquet schemas of the entity rows and of the error rows."""
    import pyarrow as pa

    entity = pa.struct(
        [
            ("start_char", pa.int64()),
            ("end_char", pa.int64()),
            ("label", pa.string()),
            ("text", pa.string()),
            ("score", pa.float64()),
        ]
    )
    rows = pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("position", pa.int64()), ("entities", pa.list_(entity))]
    )
    review = rows.append(pa.field("text", pa.string())).append(pa.field("candidates", pa.list_(entity)))
    errors = pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("position", pa.int64()), ("reason", pa.string())]
    )
    return {"entities": rows, "entities_review": review, "errors": errors}


def _tmp_name(path: Path) -> Path:
    """A temporary name of this writer's own (a redone shard may be written twice at once)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_atomic(path: Path, rows: List[Dict], fmt: str, kind: str) -> None:
    """Rows of `kind` ("entities", "entities_review" or "errors") to `path`, via a temporary name."""
    tmp = _tmp_name(path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # a Parquet column has one type: an integer id is written as its decimal string (JSONL keeps its type)
        rows = [r if r["id"] is None or isinstance(r["id"], str) else {**r, "id": str(r["id"])} for r in rows]
        try:
            pq.write_table(pa.Table.from_pylist(rows, schema=_schemas()[kind]), tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        try:
            with tmp.open("w", encoding="utf8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except BaseException:  # a full disk: no half-written file stays behind
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)


def read_rows(path: Path, columns: Optional[List[str]] = None) -> Iterator[Dict]:
    """The rows of a shard file that `_write_atomic` wrote (Parquet or JSONL), in order; with `columns`, Parquet
    reads only those (JSONL rows come whole)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path, columns=columns).to_pylist()
    else:
        with path.open(encoding="utf8") as f:
            for line in f:
                yield json.loads(line)


def write_json_atomic(path: Path, data: Dict) -> None:
    """`data` as indented JSON to `path`, via a temporary name."""
    tmp = _tmp_name(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def remove_temporary_files(output: Path) -> None:
    """Delete the temporary files of writes that did not finish, in a job's output folder."""
    for folder in (output, output / "entities", output / "errors", output / "_status"):
        if folder.is_dir():
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KiB; macOS: bytes)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def part_name(index: int, fmt: str) -> str:
    """The file name of shard `index` in format `fmt`."""
    return f"part-{index:05d}.{fmt}"


def process_shard(
    annotator: Annotator,
    spec: str,
    output: Path,
    fmt: str,
    text_field: str,
    id_field: str,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict:
    """Read, annotate and write one shard; return its status (also written to
    `_status/`). Used by both engines, so they write identical files.

    annotator (Annotator): the loaded pipeline.
    spec (str): the shard's JSON spec (`records.Plan.shard_spec`).
    output (Path): the job's output folder.
    fmt (str): "parquet" or "jsonl".
    text_field, id_field (str): the fields holding the text and the id.
    progress (Optional[Callable[[int, int], None]]): called with (records, words) as batches finish.
    RETURNS (Dict): the shard's status (counts, timings, the files written)."""
    start = time.perf_counter()
    started_at = time.time()
    index = json.loads(spec)["index"]
    items = list(read_shard(spec, text_field, id_field))
    records = [it for it in items if isinstance(it, Record)]
    read_errors = [it for it in items if isinstance(it, RecordError)]
    if progress is not None and read_errors:
        progress(len(read_errors), 0)
    rows, pipeline_errors, n_words = annotator.annotate(records, progress)
    order = {(it.source, it.position): k for k, it in enumerate(items)}
    errors = [vars(e) for e in sorted(read_errors + pipeline_errors, key=lambda e: order[(e.source, e.position)])]
    name = part_name(index, fmt)
    if errors:
        _write_atomic(output / "errors" / name, errors, fmt, "errors")
    else:
        (output / "errors" / name).unlink(missing_ok=True)
    _write_atomic(output / "entities" / name, rows, fmt, "entities_review" if annotator.review else "entities")
    status = {
        "index": index,
        "file": f"entities/{name}",
        "errors_file": f"errors/{name}" if errors else None,
        "records": len(items),
        "documents": len(rows),
        "errors": len(errors),
        "entities": sum(len(r["entities"]) for r in rows),
        "words": n_words,
        "started_at": round(started_at, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "pid": os.getpid(),
        "host": platform.node(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_json_atomic(output / "_status" / part_name(index, "json"), status)
    return status
