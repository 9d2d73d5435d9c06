"""The Ray engine of `conll-crf annotate`: shards on a Ray Data actor pool.

The pending shards form a Ray dataset (one row, one block per shard: the shard's
JSON spec); `map_batches` runs `ShardWorker`, a callable class, on an actor pool
of `workers` actors, each loading the pipeline once and pinned to
`threads_per_worker` CPUs (and `gpus_per_worker` GPUs, fractions allowed). A
worker reads its shard's records from the input files itself and writes the
shard's output files (the same `process_shard` as the local engine), so only
shard specs and statuses cross the object store; inputs and output must be on a
file system every node sees (one machine, or NFS and the like on a cluster).

Ray Data restarts an actor that dies (max_restarts=-1, its default for actor
pools) and we let it retry the shard up to MAX_SHARD_RETRIES times; a retried
shard rewrites the same files, and its status file is written last, so the
output stays complete and duplicate-free. A shard that still fails (a document
that kills every worker reading it) stays pending: the job ends incomplete and
says which shards, and the other shards complete. `address=None` starts a local Ray for the job (an
instance started by `ray start` is joined only when named: `--address auto` or
its address); otherwise `ray.init(address=...)` joins that cluster, as does
`RAY_ADDRESS`.
"""

import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator

import numpy

from ..process import thread_env
from .annotator import Annotator
from .progress import Progress
from .shards import process_shard

logger = logging.getLogger("conll_crf.annotate")


MAX_SHARD_RETRIES = 3
SHARDS_IN_FLIGHT = 2  # per actor


class ShardWorker:
    """Loads the pipeline once per actor; annotates and writes one shard per row."""

    def __init__(
        self, model: str, output: str, fmt: str, text_field: str, id_field: str, annotator_kwargs: Dict, use_gpu: bool
    ) -> None:
        self.annotator = Annotator(model, gpu_id=0 if use_gpu else -1, **annotator_kwargs)
        self.args = (output, fmt, text_field, id_field)

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, numpy.ndarray]:
        """Annotate and write the shards of `batch["spec"]`; their statuses as JSON strings."""
        output, fmt, text_field, id_field = self.args
        statuses = [
            json.dumps(process_shard(self.annotator, str(spec), Path(output), fmt, text_field, id_field))
            for spec in batch["spec"]
        ]
        return {"status": numpy.array(statuses, dtype=object)}


@contextmanager
def environment(variables: Dict[str, str]) -> Iterator[None]:
    """`variables` set in os.environ inside the block, the previous values back after it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_ray(config, specs: Dict[int, str], output: Path, shard_done: Callable[[Dict], None], bar: Progress) -> None:
    """Annotate the shards `specs` (index -> spec) on a Ray Data actor pool; the
    same contract as `local_engine.run_local`. Shards that still fail after
    MAX_SHARD_RETRIES stay pending (logged)."""
    import ray

    cfg = config
    threads = cfg.threads_per_worker
    env = {**thread_env(threads), "TOKENIZERS_PARALLELISM": "false"}
    runtime_env = {"env_vars": env}  # how the workers get the environment, unless they inherit it
    started_here = False
    start = time.perf_counter()
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        init_kwargs = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
        if not address:
            cores = os.cpu_count() or 1
            if cfg.workers * threads > cores:
                logger.warning(
                    "%d workers x %d threads on %d cores: the workers will share cores", cfg.workers, threads, cores
                )
            init_kwargs["num_cpus"] = max(cores, cfg.workers * threads)
            # Ray runs workers at nice 15, below everything else on the node; a local instance started for
            # this job is the user's job itself, so its actors run at the user's priority, as nlp.pipe's
            # processes do (at nice 15 an actor loading the pipeline on a busy machine waits for minutes)
            init_kwargs["_system_config"] = {"worker_niceness": 0}
        if address:
            ray.init(address=address, runtime_env=runtime_env, **init_kwargs)
        else:
            # a local instance started here takes the thread environment from ours, as every process it
            # starts inherits it: its prestarted workers then match the job and become the actors (a
            # runtime_env would make them unusable for it, and Ray would start as many again before the
            # first shard). address="local": a new instance even when
            # another one started by `ray start` runs on this machine (ray.init() would join that one, where
            # neither this environment nor num_cpus would apply)
            with environment(env):
                ray.init(address="local", **init_kwargs)
            runtime_env = None
        started_here = True
        logger.info(
            "Ray: %s in %.1f s",
            f"joined {address}" if address else "started a local instance",
            time.perf_counter() - start,
        )
    try:
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # our bar counts documents and words
        context.enable_auto_log_stats = False
        context.max_errored_blocks = -1  # a shard that fails stays pending; the others complete
        ds = ray.data.from_items([{"spec": spec} for spec in specs.values()], override_num_blocks=len(specs))
        with warnings.catch_warnings():
            # max_task_retries has no named parameter before Ray 2.64, which the [ray] extra excludes
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            out = ds.map_batches(
                ShardWorker,
                fn_constructor_kwargs={
                    # a worker's working directory is not ours: a model folder goes by its absolute path
                    "model": os.path.abspath(cfg.model) if os.path.exists(cfg.model) else cfg.model,
                    "output": str(Path(output).resolve()),
                    "fmt": cfg.output_format,
                    "text_field": cfg.text_field,
                    "id_field": cfg.id_field,
                    "annotator_kwargs": cfg.annotator_kwargs(),
                    "use_gpu": cfg.gpus_per_worker > 0,
                },
                batch_size=1,
                # two shards in flight per actor: the next shard is queued while one runs, so an actor never
                # waits for the driver's scheduling loop between shards; at the end an actor idles for at
                # most one shard
                compute=ray.data.ActorPoolStrategy(size=cfg.workers, max_tasks_in_flight_per_actor=SHARDS_IN_FLIGHT),
                num_cpus=threads,
                num_gpus=cfg.gpus_per_worker or None,
                runtime_env=runtime_env,
                # a worker that dies is replaced and its shard redone, up to 3 times: a document that kills
                # every worker that reads it leaves its shard pending (the job ends incomplete, naming it)
                max_task_retries=MAX_SHARD_RETRIES,
            )
        done = set()
        for row in out.iter_rows():
            status = json.loads(row["status"])
            bar.update(status["records"], status["words"])
            shard_done(status)
            done.add(status["index"])
        failed = sorted(set(specs) - done)
        if failed:
            logger.error(
                "shards %s failed on Ray (after %d retries each; see Ray's log above); the job is "
                "incomplete: run it again to retry them, or with --engine local to see the error",
                ", ".join(map(str, failed)),
                MAX_SHARD_RETRIES,
            )
    finally:
        if started_here:
            ray.shutdown()
