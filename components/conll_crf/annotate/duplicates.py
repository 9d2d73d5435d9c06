"""Ids that occur more than once in a job's output: reported, not refused.

A job's records come from many files and shards (and Ray workers), so the
driver checks the ids once the job is complete, from the output files it
wrote (the id column only), rather than holding every id while it runs.
Ids compare by JSON value: the integer 83 and the string "83" are different ids.
"""

import json
from pathlib import Path
from typing import Dict, Iterator, Tuple

from .shards import read_rows

EXAMPLES = 20  # the duplicates listed in the manifest (the count covers all)


def _ids(path: Path) -> Iterator[Tuple[object, str, int]]:
    for row in read_rows(path, columns=["id", "source", "position"]):
        yield row["id"], row["source"], row["position"]


def duplicate_ids(output: Path, shards: Dict[int, Dict]) -> Dict:
    """{"count": rows whose id an earlier row has, "examples": up to EXAMPLES of them as
    {"id", "first", "again"} (source:position)}. Rows are read shard by shard, a shard's
    annotated rows before its error rows. Error rows without an id are left out; derived ids
    (file:line) are unique by construction."""
    first: Dict[str, str] = {}
    count, examples = 0, []
    for index in sorted(shards):
        status = shards[index]
        rows = []
        for name in (status.get("file"), status.get("errors_file")):
            if name and (output / name).exists():
                rows.extend(_ids(output / name))
        for rid, source, position in rows:
            if rid is None:
                continue
            key = json.dumps(rid)
            where = f"{source}:{position}"
            if key in first:
                count += 1
                if len(examples) < EXAMPLES:
                    examples.append({"id": rid, "first": first[key], "again": where})
            else:
                first[key] = where
    return {"count": count, "examples": examples}
