"""Does a pipeline give the same entities when threads share it?

    python scripts/check_threads.py MODEL CORPUS.spacy [--threads 2 8] [--repeats 3] [--batch-size 32]
        [--mode-stable] [--out metrics/threads.json]

Runs the corpus's texts (each Doc's text, as an app sends it) through one
`nlp` sequentially, then in N threads at once (each thread all texts,
`--repeats` times, the same batch size), and counts the documents whose
entities, or whose doc.spans["crf_ner"] probabilities, differ from the
sequential run's. `--mode-stable` first applies
conll_crf.pipeline.stable_mode.mode_stable_prediction to the loaded pipeline
(what the [nlp.after_pipeline_creation] callback
conll_crf.mode_stable_torch_prediction.v1 does), for pipelines with a
transformer. Prints one line per thread count and writes the JSON to --out.
"""

import argparse
import json
import platform
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import spacy
from spacy.tokens import DocBin


def annotations(docs, key):
    out = []
    for doc in docs:
        group = doc.spans.get(key)
        out.append(
            (
                [(e.start_char, e.end_char, e.label_) for e in doc.ents],
                list(group.attrs.get("scores", [])) if group is not None else [],
            )
        )
    return out


def run_threads(nlp, texts, n_threads, repeats, batch_size, key):
    results = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    errors = []

    def work(i):
        try:
            barrier.wait()
            for _ in range(repeats):
                results[i].append(annotations(nlp.pipe(texts, batch_size=batch_size), key))
        except Exception as e:  # an exception in a thread is reported, not lost
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a thread failed: {errors[0]}")
    return [run for per_thread in results for run in per_thread]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spans-key", default="crf_ner")
    parser.add_argument("--mode-stable", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    changed = 0
    if args.mode_stable:
        from conll_crf.pipeline.stable_mode import mode_stable_prediction

        changed = mode_stable_prediction(nlp)
    texts = [doc.text for doc in DocBin().from_disk(args.corpus).get_docs(nlp.vocab)]
    expected = annotations(nlp.pipe(texts, batch_size=args.batch_size), args.spans_key)
    again = annotations(nlp.pipe(texts, batch_size=args.batch_size), args.spans_key)
    report = {
        "model": args.model,
        "corpus": str(args.corpus),
        "documents": len(texts),
        "mode_stable_shims": changed,
        "sequential_runs_identical": expected == again,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "rows": [],
    }
    for n in args.threads:
        t0 = time.perf_counter()
        runs = run_threads(nlp, texts, n, args.repeats, args.batch_size, args.spans_key)
        ents_differ = [sum(r[i][0] != e[0] for i, e in enumerate(expected)) for r in runs]
        probs_differ = [sum(r[i][1] != e[1] for i, e in enumerate(expected)) for r in runs]
        row = {
            "threads": n,
            "runs": len(runs),
            "max_docs_with_other_entities": max(ents_differ),
            "max_docs_with_other_probabilities": max(probs_differ),
            "runs_identical_to_sequential": sum(r == expected for r in runs),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        report["rows"].append(row)
        print(
            f"{n} threads x {args.repeats}: {row['runs_identical_to_sequential']}/{len(runs)} runs identical to the "
            f"sequential one; at most {row['max_docs_with_other_entities']} of {len(texts)} docs with other "
            f"entities, {row['max_docs_with_other_probabilities']} with other probabilities"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
