"""One long document among short ones: time and peak memory of two pipelines, in one run.

    python scripts/bench_long_doc.py MODEL_A MODEL_B CORPUS [--long-tokens 50000] [--short 63]
        [--batch-size 64] [--repeats 3] [--json PATH]

Builds, from the texts of CORPUS (a DocBin), one document of about
--long-tokens tokens (article texts joined) and --short short ones (the first
sentence of articles), then for each pipeline measures `nlp.pipe` over the
long doc with the short ones in one batch (batch size 64: the long one first)
and over the long doc alone, each after the same warm-up on three short docs.
Each measurement runs in a fresh child process (one thread) so its peak RSS is
its own; each case runs --repeats times per pipeline, A and B alternating, and
the median seconds count (one ~5-second run moves by up to 30% on a shared VM);
prints seconds and peak MB per case and the ratios A / B.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import spacy
from spacy.tokens import DocBin

from conll_crf.process import retained_memory_env, thread_env

CHILD = r"""
import json, resource, sys, time
import spacy
data = json.load(open(sys.argv[2]))
texts, warmup = data["texts"], data["warmup"]
nlp = spacy.load(sys.argv[1])
list(nlp.pipe(warmup))  # warm-up: the same short docs in every case, never the measured long one
start = time.perf_counter()
docs = list(nlp.pipe(texts, batch_size=int(sys.argv[3])))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "entities": sum(len(d.ents) for d in docs), "tokens": sum(len(d) for d in docs)}))
"""


def build(corpus: Path, long_tokens: int, n_short: int):
    nlp = spacy.blank("en")
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    parts, n = [], 0
    i = 0
    while n < long_tokens:
        text = refs[i % len(refs)].text
        parts.append(text)
        n += len(nlp.make_doc(text))
        i += 1
    long_text = "\n\n".join(parts)
    shorts = [next(iter(r.sents)).text if r.has_annotation("SENT_START") else r.text[:200] for r in refs[:n_short]]
    return long_text, shorts


def measure(model: str, texts, warmup, batch_size: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"texts": texts, "warmup": warmup}, f)
    # both pipelines with glibc keeping freed memory (the benchmark owns its processes; crf_ner does not by default)
    env = {**os.environ, **thread_env(1), **retained_memory_env()}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, f.name, str(batch_size)], capture_output=True, text=True, env=env
    )
    Path(f.name).unlink()
    if out.returncode:
        raise SystemExit(f"{model}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--long-tokens", type=int, default=50000)
    parser.add_argument("--short", type=int, default=63)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh processes per case and pipeline; the median counts"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    long_text, shorts = build(args.corpus, args.long_tokens, args.short)
    cases = {"long + short, one batch": [long_text] + shorts, "long alone": [long_text]}
    # Every case warms up on the same three short docs. (Before 2026-12-01 the warm-up was the case's own last three
    # texts, which for "long alone" is the long doc itself: that case was timed warm, its words already in the vocab,
    # and the other cold.)
    warmup = shorts[-3:]
    results = {}
    for case, texts in cases.items():
        runs = {args.model_a: [], args.model_b: []}
        for repeat in range(args.repeats):
            for model in (args.model_a, args.model_b) if repeat % 2 == 0 else (args.model_b, args.model_a):
                r = measure(model, texts, warmup, args.batch_size)
                runs[model].append(r)
                print(
                    f"{case:24s} {model}: {r['seconds']:.2f} s, peak {r['peak_mb']:,.0f} MB, "
                    f"{r['tokens']:,} tokens, {r['entities']} entities",
                    flush=True,
                )
        for model, rs in runs.items():
            if len({(r["entities"], r["tokens"]) for r in rs}) != 1:
                raise SystemExit(f"{model}: the repeats of {case!r} disagree on entities or tokens: {rs}")
            results.setdefault(case, {})[model] = {
                **rs[0],
                "seconds": statistics.median(r["seconds"] for r in rs),
                "peak_mb": max(r["peak_mb"] for r in rs),
                "seconds_per_run": [r["seconds"] for r in rs],
            }
    for case, r in results.items():
        a, b = r[args.model_a], r[args.model_b]
        print(
            f"{case}: median time A {a['seconds']:.2f} s, B {b['seconds']:.2f} s, "
            f"A/B {a['seconds'] / b['seconds']:.2f}; peak memory A/B {a['peak_mb'] / b['peak_mb']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "results": results,
                    "batch_size": args.batch_size,
                    "warmup": "the last 3 short docs, in every case",
                    "repeats": args.repeats,
                    "machine": f"{platform.machine()}, python {platform.python_version()}",
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
