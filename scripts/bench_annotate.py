"""Throughput of `conll-crf annotate` (local and Ray) against `nlp.pipe(n_process=N)`, in one run.

    python scripts/bench_annotate.py MODEL CONLL_FILE... [--words 2000000] [--work-dir DIR]
        [--runs local,pipe2,ray1,ray2] [--rounds 1] [--shard-size 100] [--json PATH] [--png PATH]

Builds a JSONL corpus of at least `--words` words from the CoNLL files' article
texts (sentences one per line, tokens joined by spaces; articles repeated in a
shuffled order, seed 0), then runs, each as its own process with
OMP_NUM_THREADS=1, the same model over the same corpus:
- local: `conll-crf annotate --engine local` (one process, nlp.pipe);
- pipeN: `nlp.pipe(texts, n_process=N, batch_size=64)`, spaCy's own single-machine
  answer, extracting the same rows and writing one Parquet file;
- rayN: `conll-crf annotate --engine ray --workers N` (a local Ray started by the
  command).
Times are end to end (process start to exit: imports, model loading, Ray start-up,
reading and writing included), so they are what a user waits for; the
"annotating" figures leave out the start-up (first shard started to last shard
written; pipeN: the pipe's start to its last doc, which includes its workers'
start). Peak memory
per worker is each annotating process's peak RSS (annotate: from the shard
statuses; pipeN: the largest worker). Checks that every run produced the same
rows, prints a table and the ratios the annotate issue sets targets for, and
writes JSON and a PNG bar chart.
"""

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from conll_crf.process import retained_memory_env, thread_env

RATIOS = [("ray2", "ray1", 1.7), ("ray2", "pipe2", 0.95), ("ray1", "local", 0.9)]


def build_corpus(conll_files: List[str], words: int, path: Path) -> Dict:
    from conll_crf.conll import read_conll_file

    texts = []
    for src in conll_files:
        articles, _, _ = read_conll_file(src)
        texts += ["\n".join(" ".join(s.words) for s in a.sentences) for a in articles if a.sentences]
    rng = random.Random(0)
    n_words = n_docs = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf8") as f:
        while n_words < words:
            order = list(range(len(texts)))
            rng.shuffle(order)
            for i in order:
                f.write(json.dumps({"id": f"doc-{n_docs}", "text": texts[i]}) + "\n")
                n_words += len(texts[i].split())
                n_docs += 1
                if n_words >= words:
                    break
    return {"path": str(path), "documents": n_docs, "whitespace_words": n_words, "articles": len(texts)}


def pipe_baseline(model: str, corpus: Path, out: Path, n_process: int, batch_size: int) -> None:
    """Child mode: nlp.pipe(n_process=N) over the corpus, rows as annotate writes them."""
    import resource

    import pyarrow as pa
    import pyarrow.parquet as pq
    import spacy
    import torch

    torch.set_num_threads(1)
    nlp = spacy.load(model)
    records = [json.loads(line) for line in corpus.open(encoding="utf8")]
    rows, n_words = [], 0
    start = time.time()
    first = None
    for rec, doc in zip(records, nlp.pipe((r["text"] for r in records), n_process=n_process, batch_size=batch_size)):
        first = first or time.time()
        rows.append(
            {
                "id": rec["id"],
                "entities": [
                    {"start_char": e.start_char, "end_char": e.end_char, "label": e.label_, "text": e.text}
                    for e in doc.ents
                ],
            }
        )
        n_words += len(doc)
    last = time.time()
    pq.write_table(pa.Table.from_pylist(rows), out)
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "documents": len(rows),
                "words": n_words,
                "annotating_seconds": last - start,
                "first_doc_seconds": first - start,
                "peak_rss_mb_per_worker": round(worker, 1),
                "peak_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def entity_rows(run: str, work: Path) -> List:
    import pyarrow.parquet as pq

    if run.startswith("pipe"):
        rows = pq.read_table(work / f"{run}.parquet").to_pylist()
    else:
        rows = [
            r for p in sorted((work / run / "entities").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()
        ]
    return [(r["id"], [(e["start_char"], e["end_char"], e["label"]) for e in r["entities"]]) for r in rows]


def run_one(run: str, args, corpus: Path, work: Path) -> Dict:
    # every run with glibc keeping freed memory, as conll-crf annotate sets it for itself
    env = {**os.environ, **thread_env(1), **retained_memory_env(), "TOKENIZERS_PARALLELISM": "false"}
    if run.startswith("pipe"):
        cmd = [
            sys.executable,
            __file__,
            "--pipe-baseline",
            args.model,
            str(corpus),
            str(work / f"{run}.parquet"),
            "--n-process",
            run[4:],
            "--batch-size",
            str(args.batch_size),
        ]
    else:
        engine = ["--engine", "local"] if run == "local" else ["--engine", "ray", "--workers", run[3:]]
        cmd = [
            sys.executable,
            "-m",
            "conll_crf",
            "annotate",
            str(corpus),
            "--model",
            args.model,
            "--output",
            str(work / run),
            "--overwrite",
            "--no-progress",
            "--format",
            "parquet",  # as the pipeN baseline writes (and as the stored figures were measured)
            "--shard-size",
            str(args.shard_size),
            "--batch-size",
            str(args.batch_size),
            *engine,
        ]
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{run} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    if run.startswith("pipe"):
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        docs, words, peak = stats["documents"], stats["words"], [stats["peak_rss_mb_per_worker"]]
        busy = stats["annotating_seconds"]
    else:
        manifest = json.loads((work / run / "manifest.json").read_text())
        docs, words = manifest["counts"]["documents"], manifest["counts"]["words"]
        per_pid: Dict = {}
        for shard in manifest["shards"]:
            per_pid[shard["pid"]] = max(per_pid.get(shard["pid"], 0), shard["peak_rss_mb"])
        peak = sorted(per_pid.values())
        busy = max(s["started_at"] + s["seconds"] for s in manifest["shards"]) - min(
            s["started_at"] for s in manifest["shards"]
        )
    out = {
        "seconds": round(seconds, 2),
        "documents": docs,
        "words": words,
        "docs_per_second": round(docs / seconds, 1),
        "words_per_second": round(words / seconds),
        "annotating_seconds": round(busy, 2),
        "annotating_words_per_second": round(words / busy),
        "peak_rss_mb_per_worker": peak,
    }
    print(
        f"  {run:6s} {seconds:8.1f} s  {out['docs_per_second']:8,.1f} docs/s  {out['words_per_second']:8,} words/s  "
        f"(annotating: {busy:6.1f} s, {out['annotating_words_per_second']:8,} words/s)  "
        f"peak RSS per worker {', '.join(f'{p:,.0f}' for p in peak)} MB",
        flush=True,
    )
    return out


def plot(results: Dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy

    runs = list(results)
    x = numpy.arange(len(runs))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for k, (key, label, color) in enumerate(
        [("words_per_second", "end to end", "#3b6ea8"), ("annotating_words_per_second", "while annotating", "#9dbbe0")]
    ):
        values = [results[r][key] for r in runs]
        bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, label=label, color=color)
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, runs)
    ax.set_ylabel("words/s")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--pipe-baseline":
        p = argparse.ArgumentParser()
        p.add_argument("model")
        p.add_argument("corpus", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--n-process", type=int, default=2)
        p.add_argument("--batch-size", type=int, default=64)
        a = p.parse_args(sys.argv[2:])
        pipe_baseline(a.model, a.corpus, a.out, a.n_process, a.batch_size)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("conll", nargs="+")
    parser.add_argument("--words", type=int, default=2_000_000)
    parser.add_argument("--work-dir", type=Path, default=Path("training/bench_annotate"))
    parser.add_argument("--runs", default="local,pipe2,ray1,ray2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--replot", action="store_true", help="only redraw --png from an earlier run's --json")
    args = parser.parse_args()
    if args.replot:
        data = json.loads(args.json.read_text())
        corpus = data["corpus"]
        plot(
            data["best_of_rounds"],
            args.png,
            f"{data['model']}: {corpus['documents']:,} docs, {corpus['whitespace_words']:,} words; {data['machine']}",
        )
        return
    corpus = args.work_dir / "corpus.jsonl"
    info = build_corpus(args.conll, args.words, corpus)
    print(f"corpus: {info['documents']:,} documents, {info['whitespace_words']:,} words ({info['articles']} articles)")
    runs = args.runs.split(",")
    samples: Dict[str, List[Dict]] = {r: [] for r in runs}
    for r in range(args.rounds):
        print(f"round {r + 1}")
        for run in runs:
            samples[run].append(run_one(run, args, corpus, args.work_dir))
    best = {run: max(s, key=lambda x: x["words_per_second"]) for run, s in samples.items()}
    reference = entity_rows(runs[0], args.work_dir)
    identical = {run: entity_rows(run, args.work_dir) == reference for run in runs}
    print(f"rows identical to {runs[0]}: {identical}")
    ratios = {}
    for a, b, target in RATIOS:
        if a in best and b in best:
            ratio = best[a]["words_per_second"] / best[b]["words_per_second"]
            ratios[f"{a}/{b}"] = {"ratio": round(ratio, 3), "target": target, "met": ratio >= target}
            steady = best[a]["annotating_words_per_second"] / best[b]["annotating_words_per_second"]
            ratios[f"{a}/{b}"]["annotating_ratio"] = round(steady, 3)
            print(
                f"{a} / {b}: {ratio:.2f}x end to end (target {target}x: {'met' if ratio >= target else 'MISSED'}); "
                f"{steady:.2f}x while annotating"
            )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "corpus": info,
                    "best_of_rounds": best,
                    "samples": samples,
                    "ratios": ratios,
                    "rows_identical": identical,
                    "machine": machine,
                },
                indent=2,
            )
            + "\n"
        )
    if args.png:
        plot(best, args.png, f"{args.model}: {info['documents']:,} docs, {info['whitespace_words']:,} words; {machine}")


if __name__ == "__main__":
    main()
