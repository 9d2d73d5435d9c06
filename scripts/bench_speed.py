"""Inference speed of two pipelines on the same corpus, in one run.

    python scripts/bench_speed.py MODEL_A MODEL_B CORPUS [--rounds 4] [--batch-size 64] [--n-batches 20] [--json PATH]
        [--set-a KEY=VALUE ...] [--set-b KEY=VALUE ...] [--threads 1] [--retain-freed-memory] [--order alternate|fixed]

--set-a/--set-b: config overrides of a loaded pipeline (spacy.load's config=),
e.g. `--set-b components.crf_ner.confidence=false` measures the cost of the
entity probabilities on the same model (A and B may be the same path).

Uses the measuring code of `spacy benchmark speed` (spacy.cli.benchmark_speed:
warm-up, then words/s per batch on the corpus texts, re-tokenized by each
pipeline, not shuffled) and alternates A and B for `rounds` rounds so
both see the same machine load, counterbalanced (A, B then B, A: the first
pipeline timed after the warm-ups runs slower, whichever it is); reports the mean words/s of each and the
ratio A / B (spaCy's figure: the mean of per-batch rates), and beside them all
tokens over all time (the rate a corpus sees; a batch of short docs does not
weigh as much as one of long docs there). Both run with --threads threads (torch and numpy's BLAS; default
1, as `spacy benchmark speed` users on a shared machine would pin it).
--retain-freed-memory: glibc keeps freed blocks of up to 32 MiB for reuse
(conll_crf.process.retain_freed_memory, what a crf_ner component does when
created with retain_freed_memory = true) from the start, for both pipelines.
Also counts, per pipeline, the collections of Python's cyclic garbage
collector during its timed batches and the seconds spent in them, per
generation (a full collection, generation 2, takes ~0.1 s once spaCy and torch
are loaded): printed and stored under "gc".
"""

import argparse
import gc
import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from conll_crf.process import pin_threads, retain_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-batches", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and numpy's BLAS (default 1)")
    parser.add_argument(
        "--order",
        choices=["alternate", "fixed"],
        default="alternate",
        help="alternate: A, B in odd rounds and B, A in even ones (default; use an even --rounds); "
        "fixed: A, B every round (how runs before commit a27ca3b, 2026-12-01, measured)",
    )
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="keep freed blocks of up to 32 MiB in the heap (conll_crf.process), for both pipelines",
    )
    args = parser.parse_args()
    pin_threads(args.threads)  # before numpy and spaCy load: BLAS reads its thread count once
    retained = retain_freed_memory() if args.retain_freed_memory else False
    if args.retain_freed_memory and not retained:
        print("--retain-freed-memory: not glibc, the allocator's defaults stay")
    import numpy
    import spacy
    from spacy.cli.benchmark_speed import benchmark, warmup
    from spacy.tokens import DocBin

    specs = [(args.model_a, args.set_a), (args.model_b, args.set_b)]
    names = [path + "".join(f" [{kv}]" for kv in sets) for path, sets in specs]
    if names[0] == names[1]:
        names = [f"A: {names[0]}", f"B: {names[1]}"]
    models = {name: spacy.load(path, config=_overrides(sets)) for name, (path, sets) in zip(names, specs)}
    wps = {name: [] for name in models}
    for name, nlp in models.items():
        docs = list(DocBin().from_disk(args.corpus).get_docs(nlp.vocab))
        warmup(nlp, docs, 1, args.batch_size)
    docs = {name: list(DocBin().from_disk(args.corpus).get_docs(nlp.vocab)) for name, nlp in models.items()}
    # the tokens of each batch `benchmark` times (its docs, unshuffled: docs[i % n] re-tokenized by the pipeline),
    # so the time of each batch is tokens / words-per-second and the whole run's rate can be given too
    tokens = {name: batch_tokens(nlp, docs[name], args.n_batches, args.batch_size) for name, nlp in models.items()}
    seconds = {name: 0.0 for name in models}
    gc_stats = GCStats(list(models))
    for r in range(args.rounds):
        # counterbalanced: A then B in odd rounds, B then A in even ones (--order alternate), since whichever
        # pipeline runs first after the warm-ups is measured slower (the process is still settling)
        order = list(models) if args.order == "fixed" or r % 2 == 0 else list(models)[::-1]
        for name in order:
            nlp = models[name]
            with gc_stats.charged_to(name):
                sample = benchmark(nlp, docs[name], args.n_batches, args.batch_size, shuffle=False)
            wps[name].extend(sample.tolist())
            seconds[name] += float((tokens[name][: len(sample)] / sample).sum())
            print(f"round {r + 1}: {name}: {numpy.mean(sample):,.0f} words/s")
    means = {name: float(numpy.mean(v)) for name, v in wps.items()}
    ratio = means[names[0]] / means[names[1]]
    # spaCy's figure is the mean of per-batch rates (a batch of short docs weighs as much as one of long docs);
    # the whole run's tokens over its time is the rate a corpus sees
    totals = {name: float(tokens[name].sum()) * args.rounds / seconds[name] for name in models}
    ratio_total = totals[names[0]] / totals[names[1]]
    for name, mean in means.items():
        print(
            f"{name}: mean {mean:,.0f} words/s over {len(wps[name])} batches of {args.batch_size} docs "
            f"(all tokens over all time: {totals[name]:,.0f} words/s)"
        )
    for name, st in gc_stats.stats.items():
        print(
            f"{name}: garbage collections per generation {st['collections']}, "
            f"seconds in them {[round(x, 3) for x in st['seconds']]}"
        )
    print(f"ratio {names[0]} / {names[1]}: {ratio:.2f} (all tokens over all time: {ratio_total:.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "corpus": str(args.corpus),
            "batch_size": args.batch_size,
            "threads": args.threads,
            "retain_freed_memory": retained,
            "rounds": args.rounds,
            "order": args.order,
            "words_per_second": means,
            "ratio_a_over_b": ratio,
            "words_per_second_all_tokens_over_all_time": totals,
            "ratio_a_over_b_all_tokens_over_all_time": ratio_total,
            "ratio_a_over_b_per_round": (
                numpy.mean(numpy.reshape(wps[names[0]], (args.rounds, -1)), 1)
                / numpy.mean(numpy.reshape(wps[names[1]], (args.rounds, -1)), 1)
            ).tolist(),
            "gc": gc_stats.stats,
            "machine": f"{platform.machine()}, python {platform.python_version()}",
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")


class GCStats:
    """Collections of Python's cyclic GC and the seconds spent in them, per
    generation, charged to the pipeline being timed (gc.callbacks)."""

    def __init__(self, names):
        self.stats = {name: {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]} for name in names}
        self._current = None
        self._start = 0.0

    def _callback(self, phase, info):
        if self._current is None:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            st = self.stats[self._current]
            st["collections"][info["generation"]] += 1
            st["seconds"][info["generation"]] += time.perf_counter() - self._start

    @contextmanager
    def charged_to(self, name):
        self._current = name
        gc.callbacks.append(self._callback)
        try:
            yield
        finally:
            gc.callbacks.remove(self._callback)
            self._current = None


def batch_tokens(nlp, docs, n_batches: int, batch_size: int):
    """Tokens per batch of spaCy's `benchmark(..., shuffle=False)`: docs[i % len(docs)] re-tokenized by ``nlp``."""
    import numpy

    n = [len(nlp.make_doc(docs[i % len(docs)].text)) for i in range(n_batches * batch_size)]
    return numpy.add.reduceat(numpy.asarray(n, dtype="float64"), numpy.arange(0, len(n), batch_size))


def _overrides(pairs):
    """Nested config dict from KEY=VALUE pairs (dotted keys; JSON values, else strings)."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


if __name__ == "__main__":
    main()
