"""`conll-crf annotate`: a resumable annotation job over many files.

The output folder holds:
- `entities/part-NNNNN.parquet` (or `.jsonl`): one row per annotated record, in
  input order: `id`, `source`, `position`, `entities` (a list of `{start_char,
  end_char, label, text, score}`);
- `errors/part-NNNNN.*` (only for shards that had one): one row per record that
  could not be annotated: `id` (null where unknown), `source`, `position`,
  `reason`. Every input record is in exactly one of the two;
- `_status/part-NNNNN.json`: written last, when the shard's files are complete;
- `manifest.json`: the model, the versions, the arguments, the inputs, the
  counts and every shard's status, rewritten (atomically) as shards complete.

Each shard's files are written under a temporary name and renamed, and its status
file comes last, so a job killed at any point and started again with the same
arguments redoes only the shards without a status file and ends with the same
output as an uninterrupted run. A shard redone after a crash (or by a replaced
Ray worker) rewrites identical files. Starting a job whose inputs, model or
output-shaping arguments differ from the folder's manifest is refused.
"""
import functools
import json
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .annotator import Annotator, model_meta
from .records import InputError, Plan, Record, RecordError, expand_inputs, plan_shards, read_shard

logger = logging.getLogger("conll_crf.annotate")

MANIFEST_VERSION = 1
EXIT_OK, EXIT_RECORD_ERRORS, EXIT_USAGE = 0, 3, 2
OUTPUT_FORMATS = ("parquet", "jsonl")
MANIFEST_INTERVAL = 5.0  # seconds between manifest rewrites while a job runs


class JobError(RuntimeError):
    """A job that cannot start (bad arguments, a folder holding another job)."""


@dataclass
class JobConfig:
    inputs: Sequence[str]
    model: str
    output: Path
    engine: str = "local"
    text_field: str = "text"
    id_field: str = "id"
    output_format: str = "parquet"
    shard_size: int = 1000
    batch_size: int = 64
    max_chars: int = 0
    scores_key: str = "crf_ner"
    code: Sequence[str] = ()
    workers: int = 1
    threads_per_worker: int = 1
    retain_freed_memory: bool = True  # False: every crf_ner loaded with retain_freed_memory = false (conll_crf.allocator)
    gpus_per_worker: float = 0.0
    gpu_id: int = -1
    address: Optional[str] = None
    progress: Optional[bool] = None  # None: a bar when stderr is a terminal

    def output_args(self) -> Dict:
        """The arguments that shape the output: a resumed job must repeat them."""
        return {
            "model": self.model, "text_field": self.text_field, "id_field": self.id_field,
            "output_format": self.output_format, "max_chars": self.max_chars, "scores_key": self.scores_key,
            "code": [str(c) for c in self.code],
        }

    def annotator_kwargs(self) -> Dict:
        return {
            "code": [os.path.abspath(c) for c in self.code], "threads": self.threads_per_worker, "batch_size": self.batch_size,
            "max_chars": self.max_chars, "scores_key": self.scores_key, "retain_freed_memory": self.retain_freed_memory,
        }


# -- writing ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _schemas() -> Dict:
    """The Parquet schemas of the entity rows and of the error rows."""
    import pyarrow as pa

    entity = pa.struct([("start_char", pa.int64()), ("end_char", pa.int64()), ("label", pa.string()),
                        ("text", pa.string()), ("score", pa.float64())])
    rows = pa.schema([("id", pa.string()), ("source", pa.string()), ("position", pa.int64()),
                      ("entities", pa.list_(entity))])
    errors = pa.schema([("id", pa.string()), ("source", pa.string()), ("position", pa.int64()), ("reason", pa.string())])
    return {"entities": rows, "errors": errors}


def _tmp_name(path: Path) -> Path:
    """A temporary name of this writer's own (a redone shard may be written twice at once)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_atomic(path: Path, rows: List[Dict], fmt: str, kind: str) -> None:
    """Rows of `kind` ("entities" or "errors") to `path`, via a temporary name."""
    tmp = _tmp_name(path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=_schemas()[kind]), tmp)
    else:
        with tmp.open("w", encoding="utf8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_json_atomic(path: Path, data: Dict) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KiB; macOS: bytes)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def process_shard(annotator: Annotator, spec: str, output: Path, fmt: str, text_field: str, id_field: str,
                  progress: Optional[Callable[[int, int], None]] = None) -> Dict:
    """Read, annotate and write one shard; return its status (also written to
    `_status/`). Used by both engines, so they write identical files."""
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
    _write_atomic(output / "entities" / name, rows, fmt, "entities")
    status = {
        "index": index, "file": f"entities/{name}", "errors_file": f"errors/{name}" if errors else None,
        "records": len(items), "documents": len(rows), "errors": len(errors),
        "entities": sum(len(r["entities"]) for r in rows), "words": n_words,
        "started_at": round(started_at, 3), "seconds": round(time.perf_counter() - start, 3), "pid": os.getpid(), "host": platform.node(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    _write_json_atomic(output / "_status" / part_name(index, "json"), status)
    return status


# -- the job ------------------------------------------------------------------------------------


def _versions(engine: str) -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    names = ["spacy", "thinc", "spacy-conll-crf", "torch", "pyarrow"] + (["ray"] if engine == "ray" else [])
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class Job:
    def __init__(self, config: JobConfig, overwrite: bool = False) -> None:
        if config.output_format not in OUTPUT_FORMATS:
            raise JobError(f"--format must be one of {OUTPUT_FORMATS}, not {config.output_format!r}")
        if config.engine not in ("local", "ray"):
            raise JobError(f"--engine must be 'local' or 'ray', not {config.engine!r}")
        if config.workers < 1 or config.threads_per_worker < 1 or config.batch_size < 1:
            raise JobError("--workers, --threads-per-worker and --batch-size must be at least 1")
        if config.max_chars < 0:
            raise JobError("--max-chars must be 0 (the pipeline's nlp.max_length) or more")
        self.config = config
        self.output = Path(config.output)
        self.plan: Plan = plan_shards(expand_inputs(config.inputs, exclude=self.output), config.shard_size,
                                      config.text_field)
        self.meta = model_meta(config.model)
        if not self.meta:
            raise JobError(f"--model {config.model}: no installed pipeline package or pipeline folder (with a "
                           "meta.json) of that name")
        if config.output_format == "parquet" or any(f.kind == "parquet" for f in self.plan.files):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise JobError("Parquet needs pyarrow: pip install 'spacy-conll-crf[ray]' (or pyarrow), "
                               "or write --format jsonl") from None
        self.manifest_path = self.output / "manifest.json"
        if (not self.manifest_path.exists() and self.output.is_dir()
                and any(p.name != ".lock" for p in self.output.iterdir())):
            raise JobError(f"{self.output} is not empty and holds no manifest.json: give an empty or new --output folder")
        if overwrite and self.manifest_path.exists():
            import shutil

            shutil.rmtree(self.output)  # only now: the new job's inputs and model are known to be good
        self._lock = self._acquire_lock()
        self.manifest = self._open_manifest()
        self.done: Dict[int, Dict] = self.scan_status()
        self._manifest_written = 0.0

    def _acquire_lock(self):
        """An exclusive lock on the output folder for this driver's lifetime: a
        second job on the same folder is refused, not interleaved."""
        import fcntl

        self.output.mkdir(parents=True, exist_ok=True)
        handle = open(self.output / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JobError(f"{self.output} is in use by another annotate job (its .lock is held)") from None
        return handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _identity(self) -> Dict:
        return {"plan": self.plan.fingerprint(), "arguments": self.config.output_args(),
                "model_meta": {k: self.meta.get(k) for k in ("lang", "name", "version")}}

    def _open_manifest(self) -> Dict:
        identity = self._identity()
        if self.manifest_path.exists():
            old = json.loads(self.manifest_path.read_text(encoding="utf8"))
            diff = [k for k in identity if old.get("identity", {}).get(k) != identity[k]]
            if diff:
                self.close()
                raise JobError(
                    f"{self.output} holds a job with other {' and '.join(diff)} (see its manifest.json); "
                    "give a new --output folder, or --overwrite to start afresh"
                )
            manifest = old
        else:
            manifest = {"manifest_version": MANIFEST_VERSION, "identity": identity, "runs": [], "state": "planned"}
            _write_json_atomic(self.manifest_path, manifest)  # first, so that a kill from here on can be resumed
        for sub in ("entities", "errors", "_status"):
            (self.output / sub).mkdir(parents=True, exist_ok=True)
            for tmp in (self.output / sub).glob("*.tmp"):
                tmp.unlink()  # a write that a killed run did not finish (we hold the lock: no other writer)
        manifest["model"] = {"arg": self.config.model, **{k: self.meta.get(k) for k in ("lang", "name", "version",
                             "spacy_version", "pipeline")}}
        manifest["inputs"] = [vars(f) for f in self.plan.files]
        return manifest

    def scan_status(self) -> Dict[int, Dict]:
        """The complete shards, read from the status files (the truth on disk)."""
        done = {}
        for path in (self.output / "_status").glob("part-*.json"):
            status = json.loads(path.read_text(encoding="utf8"))
            if (self.output / status["file"]).exists():
                done[status["index"]] = status
        return done

    def pending(self) -> List[int]:
        return [i for i in range(len(self.plan.shards)) if i not in self.done]

    def shard_done(self, status: Dict) -> None:
        """Record a shard a worker completed; the manifest is rewritten at most
        every MANIFEST_INTERVAL seconds while the job runs (and at its end)."""
        self.done[status["index"]] = status
        if time.monotonic() - self._manifest_written >= MANIFEST_INTERVAL:
            self.write_manifest("running")

    def write_manifest(self, state: str) -> Dict:
        done = self.done
        shards = []
        for i in range(len(self.plan.shards)):
            status = done.get(i)
            shards.append({"index": i, "status": "complete", **status} if status else
                          {"index": i, "status": "pending", "records": self.plan.shard_records(i)})
        keys = ("records", "documents", "entities", "errors", "words")
        counts = {k: sum(s.get(k, 0) for s in done.values()) for k in keys}
        counts["records_planned"] = self.plan.n_records
        self.manifest.update({"state": state, "counts": counts, "shards": shards,
                              "shards_complete": len(done), "shards_total": len(shards)})
        _write_json_atomic(self.manifest_path, self.manifest)
        self._manifest_written = time.monotonic()
        return self.manifest

    def run(self) -> Dict:
        cfg = self.config
        pending = self.pending()
        run_info = {"engine": cfg.engine, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
                    "versions": _versions(cfg.engine), "shards_pending_at_start": len(pending)}
        self.manifest["runs"].append(run_info)
        self.write_manifest("running")
        total = sum(self.plan.shard_records(i) for i in pending)
        start = time.perf_counter()
        with Progress(total, cfg.progress) as bar:
            if pending:
                if cfg.engine == "ray":
                    from .ray_engine import run_ray

                    run_ray(self, pending, bar)
                else:
                    self._run_local(pending, bar)
        run_info["seconds"] = round(time.perf_counter() - start, 3)
        run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.done = self.scan_status()
        manifest = self.write_manifest("complete" if not self.pending() else "incomplete")
        c = manifest["counts"]
        logger.info("%s: %d records (%d annotated, %d errors), %d entities, %d words; %.1f s this run",
                    self.output, c["records"], c["documents"], c["errors"], c["entities"], c["words"], run_info["seconds"])
        return manifest

    def _run_local(self, pending: List[int], bar: "Progress") -> None:
        cfg = self.config
        annotator = Annotator(cfg.model, gpu_id=cfg.gpu_id, **cfg.annotator_kwargs())
        for i in pending:
            self.shard_done(process_shard(annotator, self.plan.shard_spec(i), self.output, cfg.output_format,
                                          cfg.text_field, cfg.id_field, bar.update))


class Progress:
    """A tqdm bar (documents, with words/s) on a terminal; nothing otherwise. The
    bar and its clock start at the first finished batch, so that loading the
    pipeline (or starting Ray) does not count in the rates."""

    def __init__(self, total: int, enabled: Optional[bool]) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total
        self.words = 0
        self.start = 0.0
        self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def _open(self) -> None:
        import shutil

        from tqdm import tqdm

        size = shutil.get_terminal_size()  # a pty of unknown size says 0 x 0, where tqdm would draw nothing
        self.bar = tqdm(total=self.total, unit="doc", ncols=size.columns if size.columns >= 40 else 100,
                        nrows=max(size.lines, 2), file=sys.stderr, smoothing=0.1)
        self.start = time.perf_counter()

    def update(self, docs: int, words: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self._open()
        self.words += words
        self.bar.update(docs)
        wps = self.words / max(time.perf_counter() - self.start, 1e-3)
        self.bar.set_postfix_str(f"{wps:,.0f} words/s", refresh=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def run_job(config: JobConfig, overwrite: bool = False) -> Dict:
    """Plan, resume or start, and run a job; its final manifest. `overwrite`
    deletes an earlier job's folder (one holding a manifest.json), once the new
    job's inputs and model have been checked."""
    try:
        job = Job(config, overwrite=overwrite)
    except InputError as err:
        raise JobError(str(err)) from err
    try:
        return job.run()
    finally:
        job.close()


def exit_code(manifest: Dict) -> int:
    if manifest.get("state") != "complete":
        return 1
    return EXIT_RECORD_ERRORS if manifest["counts"]["errors"] else EXIT_OK
