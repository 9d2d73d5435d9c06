"""Peak memory of `conll-crf annotate` on one very long record, with and without character-bounded batches.

    python scripts/bench_annotate_memory.py MODEL CORPUS.spacy [--chars 2520000] [--max-chars 100000]
        [--work-dir DIR] [--json PATH]

Builds one JSONL record of --chars characters (the corpus's article texts
joined by blank lines, repeated), then runs `conll-crf annotate` on it twice,
each as its own process with one thread: with the defaults (batches of at most
--batch-chars 150,000 characters) and with --batch-chars 0 (a batch holds up
to --batch-size pieces whatever their length: all of the record's pieces at
once). Both with --max-chars. Prints each run's peak RSS (from the shard's
status file), seconds and entity count, checks that both found the same
entities, and writes the JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import spacy
from spacy.tokens import DocBin


def build_record(corpus: Path, chars: int, path: Path) -> None:
    texts = [doc.text for doc in DocBin().from_disk(corpus).get_docs(spacy.blank("en").vocab)]
    parts, n, i = [], 0, 0
    while n < chars:
        parts.append(texts[i % len(texts)])
        n += len(parts[-1]) + 2
        i += 1
    text = "\n\n".join(parts)[:chars]
    path.write_text(json.dumps({"id": "long", "text": text}) + "\n", encoding="utf8")


def run(model: str, record: Path, out: Path, extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "conll_crf", "annotate", str(record), "--model", model, "--output", str(out)]
    cmd += ["--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    status = json.loads((out / "_status" / "part-00000.json").read_text())
    rows = [json.loads(line) for line in (out / "entities" / "part-00000.jsonl").read_text().splitlines()]
    return {
        "arguments": extra,
        "peak_rss_mb": status["peak_rss_mb"],
        "seconds": round(seconds, 1),
        "entities": [(e["start_char"], e["end_char"], e["label"]) for r in rows for e in r["entities"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--chars", type=int, default=2_520_000)
    parser.add_argument("--max-chars", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="annotate_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    record = work / "long.jsonl"
    build_record(args.corpus, args.chars, record)
    cases = {
        "defaults (--batch-chars 150000)": ["--max-chars", str(args.max_chars)],
        "--batch-chars 0 (pieces batched by count only)": ["--max-chars", str(args.max_chars), "--batch-chars", "0"],
    }
    results = {}
    for i, (name, extra) in enumerate(cases.items()):
        results[name] = run(args.model, record, work / f"out{i}", extra)
        r = results[name]
        print(f"{name}: peak {r['peak_rss_mb']:.0f} MB, {r['seconds']} s, {len(r['entities'])} entities", flush=True)
    a, b = results.values()
    same = a["entities"] == b["entities"]
    print(f"same entities: {same}")
    report = {
        "model": args.model,
        "record_chars": args.chars,
        "max_chars": args.max_chars,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "same_entities": same,
        "runs": {k: {**v, "entities": len(v["entities"])} for k, v in results.items()},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
