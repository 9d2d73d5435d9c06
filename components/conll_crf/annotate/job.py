"""`conll-crf annotate`: a resumable annotation job over many files (the job and its manifest).

The output folder holds:
- `entities/part-NNNNN.parquet` (or `.jsonl`): one row per annotated record, in
  input order: `id`, `source`, `position`, `entities` (a list of `{start_char,
  end_char, label, text, score}`); with `--review`, also `text` and `candidates`;
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
Ray worker) rewrites identical files. Inputs are known by their content, so the
same files under other paths resume the job (its rows keep the first run's
`source` names); a job whose inputs, model or output-shaping arguments differ
from the folder's manifest is refused with what differs. A job that cannot
write (a full disk) stops with one line naming the path and the cause, leaves
no temporary file behind, and resumes where it stopped.

Everything in the inputs is accounted for in the manifest and the summary:
records (annotated or error rows), blank JSONL lines, the files of input
folders that are not read, and ids that occur more than once.
"""

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .annotator import model_meta
from .duplicates import duplicate_ids
from .local_engine import run_local
from .progress import Progress
from .ray_engine import run_ray
from .records import InputError, Plan, find_inputs, plan_shards
from .shards import OUTPUT_FORMATS, remove_temporary_files, write_json_atomic

logger = logging.getLogger("conll_crf.annotate")

MANIFEST_VERSION = 2  # 2: inputs known by content (sha256), blank lines, skipped files, duplicate ids
EXIT_OK, EXIT_RECORD_ERRORS, EXIT_USAGE, EXIT_STOPPED = 0, 3, 2, 1
MANIFEST_INTERVAL = 5.0  # seconds between manifest rewrites while a job runs


class JobError(RuntimeError):
    """A job that cannot start (bad arguments, a folder holding another job, an output it cannot write)."""


class JobStopped(RuntimeError):
    """A job that stopped before completing because it could not write (a full disk): resumable."""


@dataclass
class JobConfig:
    """The arguments of a job (`conll-crf annotate --help` describes each)."""

    inputs: Sequence[str]
    model: str
    output: Path
    engine: str = "local"
    text_field: str = "text"
    id_field: str = "id"
    output_format: str = "jsonl"
    shard_size: int = 1000
    batch_size: int = 64
    batch_chars: int = 150_000
    max_chars: int = 0
    scores_key: str = "crf_ner"
    code: Sequence[str] = ()
    workers: int = 1
    threads_per_worker: int = 1
    retain_freed_memory: bool = True  # the job owns its process: every crf_ner it loads gets this (conll_crf.process)
    gpus_per_worker: float = 0.0
    gpu_id: int = -1
    address: Optional[str] = None
    progress: Optional[bool] = None  # None: a bar when stderr is a terminal
    review: bool = False  # rows also hold the text and the scored candidates (`conll-crf review` reads them)

    def output_args(self) -> Dict:
        """The arguments that shape the output: a resumed job must repeat them."""
        return {
            "model": self.model,
            "text_field": self.text_field,
            "id_field": self.id_field,
            "output_format": self.output_format,
            "max_chars": self.max_chars,
            "scores_key": self.scores_key,
            "code": [str(c) for c in self.code],
            "review": self.review,
        }

    def annotator_kwargs(self) -> Dict:
        """The keyword arguments of each worker's `Annotator`."""
        return {
            "code": [os.path.abspath(c) for c in self.code],
            "threads": self.threads_per_worker,
            "batch_size": self.batch_size,
            "batch_chars": self.batch_chars,
            "max_chars": self.max_chars,
            "scores_key": self.scores_key,
            "retain_freed_memory": self.retain_freed_memory,
            "review": self.review,
        }


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
    """An annotation job over an output folder: its plan of shards, its manifest,
    and which shards are complete (their status files, the truth on disk).

    config (JobConfig): the job's arguments.
    overwrite (bool): delete an earlier job's folder (one holding a
        manifest.json) once the new job's inputs and model are known to be good.
    Raises JobError when the job cannot start; holds a lock on the folder
    until `close`."""

    def __init__(self, config: JobConfig, overwrite: bool = False) -> None:
        if config.output_format not in OUTPUT_FORMATS:
            raise JobError(f"--format must be one of {OUTPUT_FORMATS}, not {config.output_format!r}")
        if config.engine not in ("local", "ray"):
            raise JobError(f"--engine must be 'local' or 'ray', not {config.engine!r}")
        if config.workers < 1 or config.threads_per_worker < 1 or config.batch_size < 1:
            raise JobError("--workers, --threads-per-worker and --batch-size must be at least 1")
        if config.max_chars < 0 or config.batch_chars < 0:
            raise JobError("--max-chars and --batch-chars must be 0 or more")
        self.config = config
        self.output = Path(config.output)
        if self.output.exists() and not self.output.is_dir():
            raise JobError(f"--output {self.output}: is a file, not a folder")
        paths, skipped = find_inputs(config.inputs, exclude=self.output)
        self.plan: Plan = plan_shards(paths, config.shard_size, config.text_field, skipped)
        self.meta = model_meta(config.model)
        if not self.meta:
            raise JobError(
                f"--model {config.model}: no installed pipeline package or pipeline folder (with a "
                "meta.json) of that name"
            )
        if config.output_format == "parquet" or any(f.kind == "parquet" for f in self.plan.files):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise JobError(
                    "Parquet needs pyarrow: pip install 'spacy-conll-crf[parquet]' (or pyarrow), or write "
                    "--format jsonl (the default)"
                ) from None
        self.manifest_path = self.output / "manifest.json"
        if (
            not self.manifest_path.exists()
            and self.output.is_dir()
            and any(p.name != ".lock" for p in self.output.iterdir())
        ):
            raise JobError(
                f"{self.output} is not empty and holds no manifest.json: give an empty or new --output folder"
            )
        if overwrite and self.manifest_path.exists():
            import shutil

            shutil.rmtree(self.output)  # only now: the new job's inputs and model are known to be good
        self._lock = self._acquire_lock()
        try:
            self.manifest = self._open_manifest()
        except OSError as err:
            self.close()
            raise JobError(f"--output {self.output}: cannot write there: {_cause(err)}") from None
        self.done: Dict[int, Dict] = self.scan_status()
        self._manifest_written = 0.0

    def _acquire_lock(self):
        """An exclusive lock on the output folder for this driver's lifetime: a
        second job on the same folder is refused, not interleaved."""
        import fcntl

        try:
            self.output.mkdir(parents=True, exist_ok=True)
            if not os.access(self.output, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            handle = open(self.output / ".lock", "a+")
        except OSError as err:
            raise JobError(f"--output {self.output}: cannot write there: {_cause(err)}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JobError(f"{self.output} is in use by another annotate job (its .lock is held)") from None
        return handle

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _identity(self) -> Dict:
        return {
            "plan": self.plan.fingerprint(),
            "arguments": self.config.output_args(),
            "model_meta": {k: self.meta.get(k) for k in ("lang", "name", "version")},
        }

    def _open_manifest(self) -> Dict:
        identity = self._identity()
        if self.manifest_path.exists():
            old = json.loads(self.manifest_path.read_text(encoding="utf8"))
            diff = self._differences(old)
            if diff:
                self.close()
                raise JobError(
                    f"{self.output} holds another job: " + "; ".join(diff) + ". Give a new --output folder, or "
                    "--overwrite to start afresh"
                )
            # the same files, maybe under other names: the rows keep the names the first run wrote
            if "inputs" in old:  # (a job killed right after planning has none yet: its files' paths stand)
                self.plan = self.plan.with_sources([f["path"] for f in old["inputs"]])
            manifest = old
        else:
            manifest = {"manifest_version": MANIFEST_VERSION, "identity": identity, "runs": [], "state": "planned"}
            write_json_atomic(self.manifest_path, manifest)  # first, so that a kill from here on can be resumed
        for sub in ("entities", "errors", "_status"):
            (self.output / sub).mkdir(parents=True, exist_ok=True)
        remove_temporary_files(self.output)  # writes a killed run did not finish (we hold the lock: no other writer)
        manifest["model"] = {
            "arg": self.config.model,
            **{k: self.meta.get(k) for k in ("lang", "name", "version", "spacy_version", "pipeline")},
        }
        manifest["inputs"] = [vars(f) for f in self.plan.files]
        manifest["inputs_not_read"] = self.plan.skipped
        return manifest

    def _differences(self, old: Dict) -> List[str]:
        """What differs between this job and the one a manifest describes, in words."""
        if old.get("manifest_version") != MANIFEST_VERSION:
            return [f"it was written by another version of conll-crf annotate (manifest {old.get('manifest_version')})"]
        before = old.get("identity", {})
        diff = self.plan.differences(before.get("plan", {}))
        args, old_args = self.config.output_args(), before.get("arguments", {})
        for key in args:
            was = old_args.get(key, False if key == "review" else None)  # jobs from before --review had none
            if args[key] != was:
                flag = {"output_format": "--format"}.get(key, "--" + key.replace("_", "-"))
                diff.append(f"{flag} is {args[key]!r}, the job's was {was!r}")
        meta, old_meta = self._identity()["model_meta"], before.get("model_meta", {})
        if meta != old_meta and "--model" not in " ".join(diff):
            diff.append(
                "the pipeline is {name} {version}, the job's was {old}".format(
                    name=meta.get("name"),
                    version=meta.get("version"),
                    old=f"{old_meta.get('name')} {old_meta.get('version')}",
                )
            )
        return diff

    def scan_status(self) -> Dict[int, Dict]:
        """The complete shards, read from the status files (the truth on disk)."""
        done = {}
        for path in (self.output / "_status").glob("part-*.json"):
            status = json.loads(path.read_text(encoding="utf8"))
            if (self.output / status["file"]).exists():
                done[status["index"]] = status
        return done

    def pending(self) -> List[int]:
        """The indices of the shards not complete yet."""
        return [i for i in range(len(self.plan.shards)) if i not in self.done]

    def shard_done(self, status: Dict) -> None:
        """Record a shard a worker completed; the manifest is rewritten at most
        every MANIFEST_INTERVAL seconds while the job runs (and at its end)."""
        self.done[status["index"]] = status
        if time.monotonic() - self._manifest_written >= MANIFEST_INTERVAL:
            self.write_manifest("running")

    def write_manifest(self, state: str) -> Dict:
        """Rewrite manifest.json (atomically) with `state` and the counts so far; returns it."""
        done = self.done
        shards = []
        for i in range(len(self.plan.shards)):
            status = done.get(i)
            shards.append(
                {"index": i, "status": "complete", **status}
                if status
                else {"index": i, "status": "pending", "records": self.plan.shard_records(i)}
            )
        keys = ("records", "documents", "entities", "errors", "words")
        counts = {k: sum(s.get(k, 0) for s in done.values()) for k in keys}
        counts["records_planned"] = self.plan.n_records
        counts["blank_lines"] = self.plan.blank_lines
        counts["inputs_not_read"] = len(self.plan.skipped)
        if state == "complete":
            dups = duplicate_ids(self.output, done)
            counts["duplicate_ids"] = dups["count"]
            self.manifest["duplicate_ids"] = dups["examples"]
        self.manifest.update(
            {
                "state": state,
                "counts": counts,
                "shards": shards,
                "shards_complete": len(done),
                "shards_total": len(shards),
            }
        )
        write_json_atomic(self.manifest_path, self.manifest)
        self._manifest_written = time.monotonic()
        return self.manifest

    def run(self) -> Dict:
        """Annotate the pending shards with the configured engine; the final manifest."""
        cfg = self.config
        pending = self.pending()
        run_info = {
            "engine": cfg.engine,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
            "versions": _versions(cfg.engine),
            "shards_pending_at_start": len(pending),
        }
        self.manifest["runs"].append(run_info)
        self.write_manifest("running")
        total = sum(self.plan.shard_records(i) for i in pending)
        start = time.perf_counter()
        specs = {i: self.plan.shard_spec(i) for i in pending}
        with Progress(total, cfg.progress) as bar:
            if pending:
                engine = run_ray if cfg.engine == "ray" else run_local
                engine(cfg, specs, self.output, self.shard_done, bar)
        run_info["seconds"] = round(time.perf_counter() - start, 3)
        run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.done = self.scan_status()
        manifest = self.write_manifest("complete" if not self.pending() else "incomplete")
        c = manifest["counts"]
        logger.info(
            "%s: %d records (%d annotated, %d errors), %d entities, %d words; %.1f s this run",
            self.output,
            c["records"],
            c["documents"],
            c["errors"],
            c["entities"],
            c["words"],
            run_info["seconds"],
        )
        if c["blank_lines"]:
            logger.info("%d blank lines in the JSONL inputs (not records; per file in manifest.json)", c["blank_lines"])
        if c["inputs_not_read"]:
            logger.warning(
                "%d files or hidden folders in the input folders were not read (listed with the reason in "
                "manifest.json, inputs_not_read)",
                c["inputs_not_read"],
            )
        if c.get("duplicate_ids"):
            first = manifest["duplicate_ids"][0]
            logger.warning(
                "%d records have an id an earlier record has (e.g. %s at %s, first at %s; manifest.json lists more)",
                c["duplicate_ids"],
                json.dumps(first["id"]),
                first["again"],
                first["first"],
            )
        return manifest


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
    except OSError as err:  # a write failed (a full disk, a folder gone): stop cleanly, resumable
        remove_temporary_files(job.output)
        job.done = job.scan_status()
        try:
            job.write_manifest("incomplete")
        except OSError:
            remove_temporary_files(job.output)
        where = err.filename or job.output
        raise JobStopped(
            f"{where}: {_cause(err)}; {len(job.done)} of {len(job.plan.shards)} shards are complete. "
            "Run the same command again to resume"
        ) from err
    finally:
        job.close()


def _cause(err: OSError) -> str:
    return err.strerror or str(err)


def exit_code(manifest: Dict) -> int:
    """The command's exit status for a job's final manifest (see cli.py)."""
    if manifest.get("state") != "complete":
        return EXIT_STOPPED
    return EXIT_RECORD_ERRORS if manifest["counts"]["errors"] else EXIT_OK
