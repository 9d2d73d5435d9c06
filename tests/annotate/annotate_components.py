"""Components for the annotate tests, imported with `--code` (as a user's custom
components would be), in the test process, in CLI subprocesses and in Ray workers."""

import os
import time

from spacy.language import Language


@Language.factory("test_slow", default_config={"seconds": 0.0})
def make_slow(nlp, name, seconds: float):
    """Sleeps per doc, so a test can kill a job half-way."""

    def slow(doc):
        time.sleep(seconds)
        return doc

    return slow


def _start_env(name: str) -> str:
    """The variable as this process started with it (Linux: /proc/self/environ), "-" if unset or unknown."""
    try:
        with open("/proc/self/environ", "rb") as f:
            pairs = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    except OSError:
        return "-"
    return pairs.get(name.encode(), b"-").decode()


@Language.factory("test_crash_once", default_config={"marker": "", "always": False})
def make_crash_once(nlp, name, marker: str, always: bool):
    """Kills its own process (as a segfault or the OOM killer would) at the first
    doc containing CRASH, once: the marker file records that it happened. With
    `always`, at every such doc (a document that kills every worker), appending
    a line to the marker each time."""

    def crash_once(doc):
        if marker and "CRASH" in doc.text and (always or not os.path.exists(marker)):
            with open(marker, "a") as f:
                f.write(f"{os.getpid()} {_start_env('OMP_NUM_THREADS')} {_start_env('TOKENIZERS_PARALLELISM')}\n")
            os._exit(1)
        return doc

    return crash_once


@Language.factory("test_span_scores", default_config={"key": "crf_ner"})
def make_span_scores(nlp, name, key: str):
    """Puts every entity in doc.spans[key] with a score, spancat style, plus one
    candidate that is not an entity."""

    def span_scores(doc):
        spans = list(doc.ents)
        scores = [0.5 + 0.1 * i for i in range(len(spans))]
        if len(doc):
            spans.append(doc[0:1])
            scores.append(0.01)
        doc.spans[key] = spans
        doc.spans[key].attrs["scores"] = scores
        return doc

    return span_scores


@Language.factory("test_raise_on", default_config={"word": "RAISE"})
def make_raise_on(nlp, name, word: str):
    """Raises on any doc containing `word`, as a buggy component would."""

    def raise_on(doc):
        if word in doc.text:
            raise ValueError(f"test_raise_on: {word}")
        return doc

    return raise_on
