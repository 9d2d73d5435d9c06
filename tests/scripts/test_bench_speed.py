"""scripts/bench_speed.py: the per-batch token counts behind its whole-run rate, and a run end to end."""

import importlib.util
import json
import subprocess
import sys

import spacy
from spacy.tokens import DocBin

from tests.conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("bench_speed_script", ROOT / "scripts" / "bench_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_tokens_follow_spacys_unshuffled_benchmark_order():
    nlp = spacy.blank("en")
    docs = [nlp.make_doc(t) for t in ("one two", "three", "four five six")]
    # 4 batches of 2 docs cycle through the corpus: (2+1), (3+2), (1+3), (2+1)
    assert load_script().batch_tokens(nlp, docs, 4, 2).tolist() == [3.0, 5.0, 4.0, 3.0]


def test_bench_speed_runs_and_reports_both_rates(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "model")
    texts = ["Short .", "A much longer document with many more words in it than the others ."] * 3
    DocBin(docs=[nlp.make_doc(t) for t in texts]).to_disk(tmp_path / "corpus.spacy")
    out = tmp_path / "speed.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts/bench_speed.py"),
        str(tmp_path / "model"),
        str(tmp_path / "model"),
        str(tmp_path / "corpus.spacy"),
        "--rounds",
        "2",
        "--n-batches",
        "3",
        "--batch-size",
        "2",
        "--json",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    assert got["threads"] == 1 and len(got["words_per_second"]) == 2 and got["retain_freed_memory"] is False
    assert got["rounds"] == 2 and got["order"] == "alternate"
    # counterbalanced: round 1 times A then B, round 2 B then A
    timed = [line.split(": ")[1] for line in result.stdout.splitlines() if line.startswith("round ")]
    assert timed[:2] == timed[2:][::-1] and timed[0] != timed[1]
    assert all(v > 0 for v in got["words_per_second_all_tokens_over_all_time"].values())
    assert got["ratio_a_over_b_all_tokens_over_all_time"] > 0
    assert len(got["ratio_a_over_b_per_round"]) == 2 and all(r > 0 for r in got["ratio_a_over_b_per_round"])
    assert "all tokens over all time" in result.stdout
    # GC collections are charged to the pipeline being timed: one entry per pipeline, three generations each
    assert set(got["gc"]) == set(got["words_per_second"])
    assert all(len(st["collections"]) == 3 and len(st["seconds"]) == 3 for st in got["gc"].values())
    assert (
        all(n >= 0 for st in got["gc"].values() for n in st["collections"]) and "garbage collections" in result.stdout
    )
    result = subprocess.run(cmd + ["--retain-freed-memory"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["retain_freed_memory"] is True


def test_gc_stats_are_charged_to_the_pipeline_being_timed():
    import gc

    stats = load_script().GCStats(["a", "b"])
    was_enabled = gc.isenabled()
    gc.disable()  # only the explicit collections below run (they still call gc.callbacks)
    try:
        with stats.charged_to("a"):
            gc.collect(0)
            gc.collect(2)
        gc.collect(1)  # outside any scope: charged to nobody
    finally:
        if was_enabled:
            gc.enable()
    assert stats.stats["a"]["collections"] == [1, 0, 1]
    assert stats.stats["b"]["collections"] == [0, 0, 0]
    assert stats.stats["a"]["seconds"][2] > 0
    assert stats._callback not in gc.callbacks
