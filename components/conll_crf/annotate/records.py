"""Input records for `conll-crf annotate`: finding the files, planning shards, reading them.

Inputs are JSONL files (one JSON object per line), Parquet files, and plain-text
files (one document per file), given as files, folders (searched recursively for
*.jsonl, *.ndjson, *.parquet, *.txt) or glob patterns. Their records form one
stream in a fixed order (inputs in the order given, the files of a folder or
glob sorted by path, records in file order). The stream is cut into shards of
`shard_size` records; a shard is a list of `Segment`s, each a contiguous run of
records of one file, with what a worker needs to read exactly that run (a byte
offset for JSONL, row numbers for Parquet). The plan depends only on the input
files and `shard_size`, so a job started again plans the same shards.

Reading a shard yields one item per record: a `Record` (id, text, where it came
from) or a `RecordError` (id where known, where, why). Blank (empty or
whitespace-only) JSONL lines are not records; each file's count of them is in
the plan (and so in the manifest and the job's summary). Nothing else is
skipped: a line that is not JSON, undecodable bytes, a missing or non-string
text, a bad id each give a `RecordError`; a file in an input folder that is
not read (another suffix, a hidden folder) is listed with the reason. An id
keeps its JSON type (string or integer).

A file is known by its content (size and SHA-256, counted in the same pass
that counts its records), not its name or modification time: a job resumed
with the same file under another path, from another working directory or
after `touch` finds the same plan.
"""

import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt",)
FOLDER_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES


class InputError(ValueError):
    """An input that cannot be planned at all (missing file, Parquet file without
    the text column): the job does not start."""


@dataclass(frozen=True)
class InputFile:
    """One input file of a job: what it is, how many records it holds, and how it is known on resume."""

    path: str  # as first given (relative paths stay relative): the `source` of its records
    kind: str  # "jsonl" | "parquet" | "text"
    size: int
    sha256: str
    n_records: int
    blank_lines: int = 0  # JSONL: empty or whitespace-only lines (not records)
    resolved: str = ""  # absolute path, which workers read (a Ray worker's working directory is not ours)

    @property
    def identity(self) -> dict:
        """What identifies the file in a job: its content (not its name, path or modification time)."""
        return {k: getattr(self, k) for k in ("kind", "size", "sha256", "n_records")}


@dataclass(frozen=True)
class Segment:
    """Records [start, start + count) of input file `file` (an index into the
    plan's files). JSONL: `offset` is the byte offset of record `start` and
    `line` its 1-based line number."""

    file: int
    start: int
    count: int
    offset: int = 0
    line: int = 0


@dataclass(frozen=True)
class Record:
    """One input record to annotate: its id, text, and where it came from (file and position)."""

    id: Union[str, int]  # as in the input (JSON string or integer), or derived from file and position
    text: str
    source: str
    position: int  # JSONL: 1-based line number; Parquet: 0-based row; text file: 0


@dataclass(frozen=True)
class RecordError:
    """One input record that cannot be annotated: where it came from and why (an error row)."""

    id: Optional[Union[str, int]]
    source: str
    position: int
    reason: str


Item = Union[Record, RecordError]


# -- finding the files -----------------------------------------------------------------------


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES) or "." not in name:
        return "text"
    raise InputError(
        f"{path}: not an input type annotate reads (*.jsonl, *.ndjson, *.parquet, *.txt or a file "
        "without an extension, read as one plain-text document)"
    )


def _is_under(path: Path, folder: Optional[Path]) -> bool:
    if folder is None:
        return False
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def expand_inputs(inputs: Sequence[str], exclude: Optional[Path] = None) -> List[Path]:
    """The input files of `find_inputs` (without the list of files not read)."""
    return find_inputs(inputs, exclude)[0]


def find_inputs(inputs: Sequence[str], exclude: Optional[Path] = None) -> Tuple[List[Path], List[Dict[str, str]]]:
    """Files, folders (recursive, by suffix) and glob patterns -> files, in a fixed
    order, each once; files under `exclude` (the job's output folder) are left
    out. Also returns what a folder holds that is not read, each as {"path",
    "reason"} (a hidden folder as one entry). Raises InputError for an input that
    matches nothing or has an unknown type."""
    found: List[Path] = []
    skipped: List[Dict[str, str]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = []
            for root, dirs, names in os.walk(path):
                for d in sorted(dirs):
                    if d.startswith("."):
                        skipped.append({"path": str(Path(root) / d), "reason": "hidden folder, not searched"})
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _is_under(Path(root) / d, exclude))
                for name in sorted(names):
                    file = Path(root) / name
                    if _is_under(file, exclude):
                        continue
                    if name.startswith("."):
                        skipped.append({"path": str(file), "reason": "hidden file"})
                    elif not name.lower().endswith(FOLDER_SUFFIXES):
                        skipped.append(
                            {"path": str(file), "reason": f"not {', '.join('*' + x for x in FOLDER_SUFFIXES)}"}
                        )
                    elif file.is_file():
                        files.append(file)
            files.sort()
            if not files:
                raise InputError(f"{given}: folder holds no {', '.join('*' + s for s in FOLDER_SUFFIXES)} files")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(given):
            files = sorted(Path(p) for p in glob.glob(given, recursive=True) if Path(p).is_file())
            if not files:
                raise InputError(f"{given}: the pattern matches no file")
        else:
            raise InputError(f"{given}: no such file or folder")
        found.extend(files)
    seen, unique = set(), []
    for path in found:
        key = os.path.realpath(path)
        if _is_under(path, exclude):
            continue
        _kind(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, skipped


def _jsonl_offsets(path: Path, every: int, first: int) -> tuple:
    """Number of records (non-blank lines) in a JSONL file, {record: (byte offset,
    1-based line)} for records first, first + every, first + 2 * every, ..., the
    number of blank lines and the file's SHA-256, in one pass."""
    marks = {}
    n = blank = 0
    offset = 0
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            digest.update(raw)
            if raw.strip():
                if n >= first and (n - first) % every == 0:
                    marks[n] = (offset, lineno)
                n += 1
            else:
                blank += 1
            offset += len(raw)
    return n, marks, blank, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parquet_rows(path: Path, text_field: str) -> int:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise InputError(f"{path}: not a readable Parquet file ({err})") from err
    names = pf.schema_arrow.names
    if text_field not in names:
        raise InputError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); set --text-field")
    return pf.metadata.num_rows


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """The input files of a job and its shards (each a list of file segments)."""

    files: List[InputFile]
    shards: List[List[Segment]]
    shard_size: int
    skipped: List[Dict[str, str]] = field(default_factory=list)  # what input folders hold that is not read

    @property
    def n_records(self) -> int:
        """The number of records in all input files."""
        return sum(f.n_records for f in self.files)

    def shard_records(self, index: int) -> int:
        """The number of records in shard `index`."""
        return sum(seg.count for seg in self.shards[index])

    @property
    def blank_lines(self) -> int:
        """The blank JSONL lines of all input files (not records)."""
        return sum(f.blank_lines for f in self.files)

    def fingerprint(self) -> dict:
        """What the plan's shards depend on: compared when a job is resumed."""
        return {"shard_size": self.shard_size, "files": [f.identity for f in self.files]}

    def with_sources(self, paths: Sequence[str]) -> "Plan":
        """The same plan with its files' `path` (their records' `source`) set to
        `paths`: a resumed job keeps the names its first run wrote."""
        files = [replace(f, path=p) for f, p in zip(self.files, paths)]
        return Plan(files, self.shards, self.shard_size, self.skipped)

    def differences(self, old: dict) -> List[str]:
        """How this plan's fingerprint differs from `old` (an earlier fingerprint), in words."""
        out = []
        if old.get("shard_size") != self.shard_size:
            out.append(f"--shard-size is {self.shard_size}, the job's was {old.get('shard_size')}")
        new_files, old_files = [f.identity for f in self.files], old.get("files", [])
        if len(new_files) != len(old_files):
            out.append(f"the inputs are {len(new_files)} files, the job's were {len(old_files)}")
        for i, (f, before) in enumerate(zip(self.files, old_files)):
            if f.identity != before:
                what = ", ".join(
                    f"{k} {f.identity[k]!r} (was {before.get(k)!r})"
                    for k in ("kind", "size", "n_records", "sha256")
                    if f.identity[k] != before.get(k)
                )
                out.append(f"input {i + 1} ({f.path}) differs in content: {what}")
        return out

    def shard_spec(self, index: int) -> str:
        """A shard as JSON, everything a worker needs to read it."""
        segs = self.shards[index]
        files = sorted({s.file for s in segs})
        return json.dumps(
            {
                "index": index,
                "files": {str(i): asdict(self.files[i]) for i in files},
                "segments": [asdict(s) for s in segs],
            }
        )


def plan_shards(
    paths: Sequence[Path], shard_size: int, text_field: str, skipped: Sequence[Dict[str, str]] = ()
) -> Plan:
    """Count the records of every file and cut the stream into shards."""
    if shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    files: List[InputFile] = []
    shards: List[List[Segment]] = []
    filled = shard_size  # records in the last shard; a full one forces a new shard
    for i, path in enumerate(paths):
        kind = _kind(path)
        blank = 0
        first = (shard_size - filled) % shard_size  # records of this file that complete the open shard
        marks = {0: (0, 1)}  # a segment that starts a file reads it from the top
        if kind == "jsonl":
            n, found, blank, sha = _jsonl_offsets(path, shard_size, first)
            marks.update({k: v for k, v in found.items() if k})
        elif kind == "parquet":
            n, sha = _parquet_rows(path, text_field), _sha256(path)
        else:
            n, sha = 1, _sha256(path)
        size = path.stat().st_size
        files.append(InputFile(str(path), kind, size, sha, n, blank, os.path.abspath(path)))
        start = 0
        while start < n:
            if filled == shard_size:
                shards.append([])
                filled = 0
            count = min(shard_size - filled, n - start)
            offset, line = marks[start] if kind == "jsonl" else (0, 0)
            shards[-1].append(Segment(i, start, count, offset, line))
            filled += count
            start += count
    return Plan(files, shards, shard_size, list(skipped))


# -- reading a shard ---------------------------------------------------------------------------


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _id(value, derived: str, source: str, position: int) -> Union[str, int, RecordError]:
    if value is None:
        return derived
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # its JSON type kept
    return RecordError(None, source, position, f"id is {_type_name(value)}, not a string or an integer")


def _lone_surrogate(text: str) -> int:
    """Index of the first lone surrogate (JSON allows "\\ud800"; UTF-8 cannot hold it), or -1."""
    try:
        text.encode("utf-8")
        return -1
    except UnicodeEncodeError as err:
        return err.start


def _record(obj, text_field: str, id_field: str, source: str, position: int, derived_id: str) -> Item:
    rid = _id(obj.get(id_field), derived_id, source, position)
    if isinstance(rid, RecordError):
        return rid
    if isinstance(rid, str) and _lone_surrogate(rid) >= 0:
        return RecordError(None, source, position, "id holds a lone surrogate (not valid Unicode)")
    if text_field not in obj:
        return RecordError(rid, source, position, f"no {text_field!r} field")
    text = obj[text_field]
    if not isinstance(text, str):
        return RecordError(rid, source, position, f"{text_field!r} is {_type_name(text)}, not a string")
    bad = _lone_surrogate(text)
    if bad >= 0:
        return RecordError(
            rid, source, position, f"{text_field!r} holds a lone surrogate at character {bad} (not valid Unicode)"
        )
    return Record(rid, text, source, position)


def _read_jsonl(file: InputFile, seg: Segment, text_field: str, id_field: str) -> Iterator[Item]:
    with open(file.resolved or file.path, "rb") as f:
        f.seek(seg.offset)
        lineno = seg.line
        got = 0
        while got < seg.count:
            raw = f.readline()
            if not raw:
                raise InputError(f"{file.path}: ended before line {lineno}: the file changed since the job was planned")
            if raw.strip():
                got += 1
                derived = f"{file.path}:{lineno}"
                try:
                    line = raw.decode("utf-8-sig")  # a BOM: at the start of a file, or of a file cat-ed on
                except UnicodeDecodeError as err:
                    yield RecordError(None, file.path, lineno, f"not valid UTF-8 (byte {err.start} of the line)")
                else:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        yield RecordError(None, file.path, lineno, f"not valid JSON at column {err.colno}: {err.msg}")
                    else:
                        if isinstance(obj, dict):
                            yield _record(obj, text_field, id_field, file.path, lineno, derived)
                        else:
                            yield RecordError(None, file.path, lineno, f"a JSON {type(obj).__name__}, not an object")
            lineno += 1


_ROW_GROUP_CACHE: dict = {}  # the last row group this process decoded: consecutive shards share it


def _row_group(file: InputFile, pf, g: int, columns: List[str]):
    key = (file.resolved or file.path, file.sha256, g, tuple(columns))
    if key not in _ROW_GROUP_CACHE:
        _ROW_GROUP_CACHE.clear()
        _ROW_GROUP_CACHE[key] = pf.read_row_group(g, columns=columns)
    return _ROW_GROUP_CACHE[key]


def _read_parquet(file: InputFile, seg: Segment, text_field: str, id_field: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(file.resolved or file.path)
    columns = [text_field] + ([id_field] if id_field in pf.schema_arrow.names and id_field != text_field else [])
    stop = seg.start + seg.count
    row0 = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(seg.start, row0), min(stop, row0 + n)
        if lo < hi:
            table = _row_group(file, pf, g, columns).slice(lo - row0, hi - lo)
            texts = table.column(text_field).to_pylist()
            ids = table.column(id_field).to_pylist() if id_field in table.column_names else [None] * len(texts)
            for k, (text, rid) in enumerate(zip(texts, ids)):
                row = lo + k
                yield _record(
                    {text_field: text, id_field: rid}, text_field, id_field, file.path, row, f"{file.path}#{row}"
                )
        row0 += n


def _read_text(file: InputFile) -> Iterator[Item]:
    data = Path(file.resolved or file.path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        yield RecordError(file.path, file.path, 0, f"not valid UTF-8 (byte {err.start})")
    else:
        yield Record(file.path, text, file.path, 0)  # lone surrogates cannot come out of a strict UTF-8 decode


def read_shard(spec: str, text_field: str, id_field: str) -> Iterator[Item]:
    """The records of one shard (a `Plan.shard_spec`), in order."""
    shard = json.loads(spec)
    files = {int(k): InputFile(**v) for k, v in shard["files"].items()}
    for seg in (Segment(**s) for s in shard["segments"]):
        file = files[seg.file]
        if file.kind == "jsonl":
            yield from _read_jsonl(file, seg, text_field, id_field)
        elif file.kind == "parquet":
            yield from _read_parquet(file, seg, text_field, id_field)
        else:
            yield from _read_text(file)
