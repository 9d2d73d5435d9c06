"""Evaluate a pipeline on CoNLL-2003 whole articles, in two modes.

    python scripts/evaluate.py MODEL CORPUS_DIR OUT_DIR [--gpu-id -1] [--batch-size 32]

Scores CORPUS_DIR/test.spacy, or dev.spacy where there is no test corpus.
1. gold tokens (the CoNLL convention): the pipeline runs on Docs built from
   the gold words of each whole article -> OUT_DIR/gold_tokens.json, plus
   OUT_DIR/predictions.conll (`token gold predicted`, IOB2) and an independent
   entity-level score of that export (seqeval, strict IOB2) that must agree
   with spaCy's ents P/R/F.
2. raw text: each article's text re-tokenized by the pipeline's own tokenizer,
   as an app sees it -> OUT_DIR/raw_text.json. This is what `spacy evaluate`
   without --gold-preproc does for Docs with known whitespace; CoNLL has none
   (the converted Docs have unknown spaces), and for such Docs spaCy's Corpus
   silently falls back to the gold tokens, so the CLI would score mode 1 again.
Both give ents_p, ents_r, ents_f, ents_per_type and words/s. Also counts
predicted tag sequences that are invalid for the IOB2 scheme (0 for a CRF).
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from conll_crf.tags import iob_spans


def pick_corpus(corpus_dir: Path) -> Path:
    test = corpus_dir / "test.spacy"
    return test if test.exists() else corpus_dir / "dev.spacy"


def doc_tags(doc: Doc) -> List[str]:
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def write_conll(path: Path, pairs) -> None:
    """`token gold predicted` per line; sentences (gold boundaries) separated by
    blank lines, articles by -DOCSTART-."""
    with path.open("w", encoding="utf8") as f:
        for gold, pred in pairs:
            f.write("-DOCSTART- O O\n\n")
            gold_tags, pred_tags = doc_tags(gold), doc_tags(pred)
            for i, token in enumerate(gold):
                if i and token.is_sent_start:
                    f.write("\n")
                f.write(f"{token.text} {gold_tags[i]} {pred_tags[i]}\n")
            f.write("\n")


def read_conll_export(path: Path):
    """Read predictions.conll back: (gold, predicted) tag sequences per article."""
    golds, preds, g, p = [], [], [], []
    for line in path.read_text(encoding="utf8").split("\n"):
        if line.startswith("-DOCSTART-"):
            if g:
                golds.append(g)
                preds.append(p)
            g, p = [], []
        elif line.strip():
            _, gold, pred = line.split(" ")
            g.append(gold)
            p.append(pred)
    if g:
        golds.append(g)
        preds.append(p)
    return golds, preds


def seqeval_scores(golds, preds) -> Dict[str, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    kw = {"mode": "strict", "scheme": IOB2}
    return {
        "ents_p": precision_score(golds, preds, **kw),
        "ents_r": recall_score(golds, preds, **kw),
        "ents_f": f1_score(golds, preds, **kw),
    }


def count_invalid(nlp, docs: List[Doc]) -> Dict[str, int]:
    """Predicted tag sequences (per doc) that break IOB2, from components that
    expose their raw tags (`predict_tags`); spaCy's ner cannot produce one."""
    counts = {}
    for name, pipe in nlp.pipeline:
        if hasattr(pipe, "predict_tags"):
            invalid = 0
            for start in range(0, len(docs), 32):
                for tags in pipe.predict_tags(docs[start : start + 32]):
                    invalid += iob_spans(tags)[1] > 0
            counts[name] = invalid
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.gpu_id >= 0:
        spacy.require_gpu(args.gpu_id)
    corpus = pick_corpus(args.corpus_dir)
    if corpus.name != "test.spacy":
        print(f"note: no test corpus in {args.corpus_dir}: scoring {corpus}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    nlp = spacy.load(args.model)
    refs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    n_words = sum(len(d) for d in refs)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"

    # 1. gold tokens, whole articles
    inputs = [Doc(nlp.vocab, words=[t.text for t in r], spaces=[bool(t.whitespace_) for t in r]) for r in refs]
    start = time.perf_counter()
    preds = list(nlp.pipe(inputs, batch_size=args.batch_size))
    seconds = time.perf_counter() - start
    scores = nlp.evaluate([Example(p, r) for p, r in zip(preds, refs)])
    conll_path = args.out_dir / "predictions.conll"
    write_conll(conll_path, zip(refs, preds))
    golds, pred_tags = read_conll_export(conll_path)
    independent = seqeval_scores(golds, pred_tags)
    agree = all(abs(independent[k] - (scores[k] or 0.0)) <= 1e-4 for k in ("ents_p", "ents_r", "ents_f"))
    gold = {
        "mode": "gold tokens, whole articles",
        "model": args.model,
        "corpus": str(corpus),
        "docs": len(refs),
        "words": n_words,
        "ents_p": scores["ents_p"],
        "ents_r": scores["ents_r"],
        "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "words_per_second": n_words / seconds,
        "seqeval_strict_iob2": independent,
        "seqeval_agrees": agree,
        "invalid_tag_sequences": count_invalid(nlp, inputs),
        "machine": machine,
    }
    (args.out_dir / "gold_tokens.json").write_text(json.dumps(gold, indent=2) + "\n")
    print(f"gold tokens: P {gold['ents_p']:.4f} R {gold['ents_r']:.4f} F {gold['ents_f']:.4f}, {gold['words_per_second']:,.0f} words/s")
    print(f"  seqeval (strict IOB2) on {conll_path}: F {independent['ents_f']:.4f} ({'agrees' if agree else 'DISAGREES'})")
    print(f"  invalid tag sequences: {gold['invalid_tag_sequences']}")

    # 2. raw text, re-tokenized by the pipeline (see the module docstring)
    raw_path = args.out_dir / "raw_text.json"
    raw_examples = [Example(nlp.make_doc(r.text), r) for r in refs]
    retokenized = sum(1 for eg in raw_examples if [t.text for t in eg.predicted] != [t.text for t in eg.reference])
    raw = nlp.evaluate(raw_examples, batch_size=args.batch_size)
    raw_out = {
        "mode": "raw text re-tokenized by the pipeline (as spacy evaluate does for docs with known spaces)",
        "model": args.model,
        "corpus": str(corpus),
        "docs_tokenized_differently_from_gold": retokenized,
        "ents_p": raw.get("ents_p"),
        "ents_r": raw.get("ents_r"),
        "ents_f": raw.get("ents_f"),
        "ents_per_type": raw.get("ents_per_type"),
        "words_per_second": raw.get("speed"),
        "machine": machine,
    }
    raw_path.write_text(json.dumps(raw_out, indent=2) + "\n")
    print(f"raw text:    P {raw_out['ents_p']:.4f} R {raw_out['ents_r']:.4f} F {raw_out['ents_f']:.4f}, {raw_out['words_per_second']:,.0f} words/s")
    if not agree:
        sys.exit("spaCy's ents scores and seqeval disagree")


if __name__ == "__main__":
    main()
