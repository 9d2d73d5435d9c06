"""`conll-crf annotate`: resumable annotation of large corpora with any spaCy pipeline.

job.py (the job, its manifest and resume rules) plans shards over the input
records (records.py), and an engine runs them: local_engine.py (one process)
or ray_engine.py (a Ray Data actor pool). Either engine hands each shard to
shards.py, which annotates it with an `Annotator` (annotator.py) and writes its
files; progress.py draws the bar. docs/annotate.md describes the output.
"""
