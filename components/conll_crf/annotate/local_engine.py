"""The local engine of `conll-crf annotate`: one process, `nlp.pipe`, shard after shard."""

from pathlib import Path
from typing import Callable, Dict

from .annotator import Annotator
from .progress import Progress
from .shards import process_shard


def run_local(config, specs: Dict[int, str], output: Path, shard_done: Callable[[Dict], None], bar: Progress) -> None:
    """Annotate the shards `specs` (index -> spec) in this process.

    config (JobConfig): the job's arguments (model, fields, format, GPU, annotator settings).
    specs (Dict[int, str]): the pending shards' specs, in order.
    output (Path): the job's output folder.
    shard_done (Callable[[Dict], None]): called with each shard's status once its files are complete.
    bar (Progress): counts documents and words as batches finish."""
    annotator = Annotator(config.model, gpu_id=config.gpu_id, **config.annotator_kwargs())
    for spec in specs.values():
        status = process_shard(
            annotator, spec, output, config.output_format, config.text_field, config.id_field, bar.update
        )
        shard_done(status)
