"""Figures and the error-analysis page from the project's runs.

    python scripts/report.py TRAINING_DIR METRICS_DIR [--runs cpu_crf,cpu_ner,...] [--max-docs 40]

Writes METRICS_DIR/figures/:
- dev_f1.png: dev ents F1 against training step, one line per run (from each
  run's log.jsonl, written by conll_crf.JSONLLogger.v1);
- transitions_<run>.png: the trained CRF transition matrix of each crf_ner run
  as a labelled heatmap; transitions the tag scheme forbids (BIO or BILUO, the
  component's own) are hatched;
- per_type.png: dev P/R/F per entity type (gold tokens) for each evaluated run;
and METRICS_DIR/errors_<run>.html: the dev articles where the prediction differs
from gold, gold and predicted entities side by side (displaCy), differing
sentences only.
"""

import argparse
import html
import json
import shutil
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy  # noqa: E402
import spacy  # noqa: E402
from spacy import displacy  # noqa: E402
from spacy.tokens import DocBin  # noqa: E402

from conll_crf.conll import gold_token_docs  # noqa: E402


def read_log(path: Path):
    steps, f1 = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        scores = rec.get("other_scores") or {}
        if scores.get("ents_f") is not None:  # None: a dev set with nothing to score
            steps.append(rec["step"])
            f1.append(100 * scores["ents_f"])
    return steps, f1


def plot_dev_f1(runs, training: Path, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        log = training / run / "log.jsonl"
        if log.exists():
            steps, f1 = read_log(log)
            if steps:
                ax.plot(steps, f1, marker="o", markersize=3, label=f"{run} (best {max(f1):.2f})")
    ax.set_xlabel("training step")
    ax.set_ylabel("dev ents F1 (%)")
    ax.set_ylim(bottom=70)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("CoNLL-2003 dev (eng.testa), gold tokens: evaluation during training")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_transitions(model_dir: Path, out: Path) -> bool:
    from conll_crf.pipeline.thinc_head import torch_module

    nlp = spacy.load(model_dir)
    pipe = next((p for _, p in nlp.pipeline if hasattr(p, "predict_tags")), None)
    if pipe is None:
        return False
    crf = torch_module(pipe.model.get_ref("output_layer")).crf
    tags = pipe.tags
    trans = crf.transitions.detach().cpu().numpy()
    allowed = crf.allowed.cpu().numpy()
    shown = numpy.where(allowed, trans, numpy.nan)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lim = numpy.nanmax(numpy.abs(shown))
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for i, j in zip(*numpy.where(~allowed)):
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="0.6", linewidth=0))
    ax.set_xticks(range(len(tags)), tags, rotation=60, ha="right")
    ax.set_yticks(range(len(tags)), tags)
    ax.set_xlabel("to tag")
    ax.set_ylabel("from tag")
    ax.set_title(f"CRF transition scores ({model_dir.parent.name}, {pipe.cfg['scheme']}); hatched: forbidden")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_per_type(runs, metrics: Path, out: Path) -> None:
    data = {}
    for run in runs:
        path = metrics / run / "gold_tokens.json"
        if path.exists():
            data[run] = json.loads(path.read_text())["ents_per_type"] or {}  # None: nothing to score
    if not data:
        return
    types = sorted({t for d in data.values() for t in d})
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    width = 0.8 / len(data)
    for k, (metric, name) in enumerate([("p", "precision"), ("r", "recall"), ("f", "F1")]):
        ax = axes[k]
        for i, (run, per_type) in enumerate(data.items()):
            values = [100 * per_type.get(t, {}).get(metric, 0.0) for t in types]
            ax.bar(numpy.arange(len(types)) + i * width, values, width, label=run)
        ax.set_xticks(numpy.arange(len(types)) + width * (len(data) - 1) / 2, types)
        ax.set_title(f"dev {name} (%)")
        ax.set_ylim(60, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def confidence_notes(pred, start: int, end: int, gold: set) -> str:
    """HTML: each predicted entity of pred[start:end] with its probability and the
    strongest alternative the CRF weighed (the most probable overlapping candidate
    in doc.spans["crf_ner"] that is not the entity itself); wrong ones marked."""
    group = pred.spans.get("crf_ner")
    if group is None or "scores" not in group.attrs:
        return ""
    cands = [(c, score) for c, score in zip(group, group.attrs["scores"])]
    out = []
    for ent in pred.ents:
        if not start <= ent.start < end:
            continue
        key = (ent.start, ent.end, ent.label_)
        p = ent._.crf_prob
        alts = [
            (c, sc) for c, sc in cands if (c.start, c.end, c.label_) != key and c.start < ent.end and ent.start < c.end
        ]
        alt = max(alts, key=lambda x: x[1]) if alts else None
        mark = "" if key in gold else " &#10007;"
        text = (
            f"{html.escape(ent.text)} [{ent.label_}] <b>{p:.2f}</b>{mark}" if p is not None else html.escape(ent.text)
        )
        if alt:
            text += f" (alternative: {html.escape(alt[0].text)} [{alt[0].label_}] {alt[1]:.2f})"
        out.append(text)
    return "probabilities: " + "; ".join(out) if out else ""


def copy_calibration_figures(runs, metrics: Path, figures: Path) -> List[str]:
    """metrics/<run>/calibration/{reliability,threshold}.png (from `calibrate`) into figures/."""
    written = []
    for run in runs:
        for name in ("reliability", "threshold"):
            src = metrics / run / "calibration" / f"{name}.png"
            if src.exists():
                dst = figures / f"{name}_{run}.png"
                shutil.copyfile(src, dst)
                written.append(str(dst))
    return written


def error_page(model_dir: Path, corpus: Path, out: Path, max_docs: int) -> int:
    nlp = spacy.load(model_dir)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    inputs = gold_token_docs(nlp.vocab, refs)
    rows, n_diff = [], 0
    colors = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#e4e7d2"}
    for ref, pred in zip(refs, nlp.pipe(inputs)):
        gold_set = {(e.start, e.end, e.label_) for e in ref.ents}
        pred_set = {(e.start, e.end, e.label_) for e in pred.ents}
        if gold_set == pred_set:
            continue
        n_diff += 1
        if len(rows) >= max_docs:
            continue
        for sent in ref.sents:
            g = {x for x in gold_set if sent.start <= x[0] < sent.end}
            p = {x for x in pred_set if sent.start <= x[0] < sent.end}
            if g == p:
                continue
            gold_html = displacy.render(ref[sent.start : sent.end].as_doc(), style="ent", options={"colors": colors})
            pred_html = displacy.render(pred[sent.start : sent.end].as_doc(), style="ent", options={"colors": colors})
            missed = ", ".join(f"{ref[s:e].text} [{label}]" for s, e, label in sorted(g - p)) or "-"
            spurious = ", ".join(f"{pred[s:e].text} [{label}]" for s, e, label in sorted(p - g)) or "-"
            notes = confidence_notes(pred, sent.start, sent.end, g)
            rows.append(
                f"<tr><td>{gold_html}</td><td>{pred_html}</td>"
                f"<td class='d'>missed: {html.escape(missed)}<br>spurious: {html.escape(spurious)}"
                + (f"<br>{notes}" if notes else "")
                + "</td></tr>"
            )
    out.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Errors: "
        f"{html.escape(str(model_dir))}</title><style>body{{font-family:sans-serif}} td{{vertical-align:top;"
        "border-bottom:1px solid #ddd;padding:4px;width:40%}} td.d{{width:20%;font-size:12px}}</style></head><body>"
        f"<h2>{html.escape(str(model_dir))} on {html.escape(str(corpus))}: {n_diff} of {len(refs)} articles differ "
        f"from gold (first {max_docs} shown, differing sentences only)</h2>"
        "<table><tr><th>gold</th><th>predicted</th><th>difference</th></tr>" + "".join(rows) + "</table></body></html>"
    )
    return n_diff


ENCODERS = {
    "cpu_crf": "hash + char tok2vec (CPU)",
    "cpu_ner": "hash + char tok2vec (CPU)",
    "trf_crf": "transformer",
    "trf_ner": "transformer",
}
HEADS = {"crf": "BiLSTM-CRF (ours)", "ner": "spaCy ner (transition-based)"}


def uses_static_vectors(config_path: Path) -> bool:
    """Whether a saved pipeline's config has any embedding layer with include_static_vectors
    set (read as a config, not as text: layout and overrides written either way count)."""
    if not config_path.exists():
        return False
    from thinc.api import Config

    def walk(node) -> bool:
        if isinstance(node, dict):
            return node.get("include_static_vectors") is True or any(walk(v) for v in node.values())
        return False

    return walk(Config().from_disk(config_path, interpolate=False))


def _time_v_wall(path: Path) -> str:
    """Wall time from a `/usr/bin/time -v` report at the end of a training log."""
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if "Elapsed (wall clock)" in line:
                parts = [float(x) for x in line.rsplit(" ", 1)[1].split(":")]
                return f"{sum(x * 60**i for i, x in enumerate(reversed(parts))) / 60:.0f} min"
    return "?"


def results_table(runs, training: Path, metrics: Path) -> str:
    """A markdown table of every evaluated run, from the files the runs wrote."""
    rows = [
        "| run | encoder | head | dev P | dev R | dev F | F raw text | PER F | LOC F | ORG F | MISC F "
        "| invalid seqs | train steps | train wall | words/s (evaluate run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        gold_path = metrics / run / "gold_tokens.json"
        if not gold_path.exists():
            continue
        gold = json.loads(gold_path.read_text())
        raw_path = metrics / run / "raw_text.json"
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
        meta_path = training / run / "train_meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        log = training / run / "log.jsonl"
        steps = read_log(log)[0][-1] if log.exists() and read_log(log)[0] else "?"
        encoder = ENCODERS.get(run, "?")
        if encoder.startswith("hash") and uses_static_vectors(training / run / "model-best" / "config.cfg"):
            encoder = "hash + char + static vectors tok2vec (CPU)"
        name = meta.get("overrides", {}).get("paths.transformer")
        if name and encoder == "transformer":
            path = Path(name)
            encoder = f"transformer: {path.parent.name if path.name == 'model' else path.name}"
        per = gold["ents_per_type"] or {}
        invalid = (
            sum(gold.get("invalid_tag_sequences", {}).values())
            if gold.get("invalid_tag_sequences")
            else "0 (by construction)"
        )
        wall = (
            f"{meta['wall_seconds'] / 60:.0f} min"
            if "wall_seconds" in meta
            else _time_v_wall(training / run / "train.log")
        )
        pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}"  # noqa: E731  (None: nothing to score)
        rows.append(
            f"| {run} | {encoder} | {HEADS.get(run.split('_')[-1], '?')} | {pct(gold['ents_p'])} | "
            f"{pct(gold['ents_r'])} | **{pct(gold['ents_f'])}** | {pct(raw['ents_f']) if raw else '?'} | "
            + " | ".join(pct(per[t]["f"]) if t in per else "-" for t in ("PER", "LOC", "ORG", "MISC"))
            + f" | {invalid} | {steps} | {wall} | {gold['words_per_second']:,.0f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("training", type=Path)
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--runs", default="cpu_crf,cpu_ner,trf_crf,trf_ner")
    parser.add_argument("--corpus", type=Path, default=Path("corpus/dev.spacy"))
    parser.add_argument("--max-docs", type=int, default=40)
    args = parser.parse_args()
    runs = [r for r in args.runs.split(",") if (args.training / r).exists()]
    figures = args.metrics / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plot_dev_f1(runs, args.training, figures / "dev_f1.png")
    plot_per_type(runs, args.metrics, figures / "per_type.png")
    for run in runs:
        model = args.training / run / "model-best"
        if model.exists() and plot_transitions(model, figures / f"transitions_{run}.png"):
            print(f"wrote {figures / f'transitions_{run}.png'}")
        if model.exists() and run.endswith("_crf") and args.corpus.exists():
            n = error_page(model, args.corpus, args.metrics / f"errors_{run}.html", args.max_docs)
            print(f"wrote {args.metrics / f'errors_{run}.html'} ({n} articles differ)")
    for path in copy_calibration_figures(runs + ["cpu_beam"], args.metrics, figures):
        print(f"wrote {path}")
    (args.metrics / "results.md").write_text(results_table(runs, args.training, args.metrics))
    print(f"wrote {figures / 'dev_f1.png'}, {figures / 'per_type.png'}, {args.metrics / 'results.md'}")


if __name__ == "__main__":
    main()
