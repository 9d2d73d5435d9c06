"""Evaluate a pipeline on CoNLL-2003 whole articles, in two modes.

    python scripts/evaluate.py MODEL CORPUS_DIR OUT_DIR [--gpu-id -1|N|auto] [--batch-size 32] [--no-gold-sentences]

Scores CORPUS_DIR/test.spacy, or dev.spacy where there is no test corpus.
1. gold tokens (the CoNLL convention): the pipeline runs on Docs built from
   the gold words and gold sentence starts of each whole article (the shared
   task gave systems sentence-split input; --no-gold-sentences leaves the
   sentence starts out) -> OUT_DIR/gold_tokens.json, plus
   OUT_DIR/predictions.conll (`token gold predicted`, IOB2, a blank line at
   each gold sentence break) and conlleval's score of that export (the shared
   task's scorer, rule for rule: conll_crf.conll.conlleval), which must agree with
   spaCy's ents P/R/F to 0.01 points.
2. raw text: each article's text re-tokenized by the pipeline's own tokenizer,
   as an app sees it -> OUT_DIR/raw_text.json. This is what `spacy evaluate`
   without --gold-preproc does for Docs with known whitespace; CoNLL has none
   (the converted Docs have unknown spaces), and for such Docs spaCy's Corpus
   silently falls back to the gold tokens, so the CLI would score mode 1 again.
3. raw text with spaCy's rule-based sentencizer added before the entity
   recognizer (when the pipeline has no sentence component of its own), as an
   app can do -> OUT_DIR/raw_text_sentencizer.json.
Both give ents_p, ents_r, ents_f, ents_per_type and words/s (None where there
is nothing to score: no gold and no predicted entity). Mode 1 runs the pipeline
once, and on the way counts the predicted tag sequences that are invalid for the
component's scheme, BIO or BILUO (0 for a CRF).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from conll_crf.conll import conlleval, gold_token_docs
from conll_crf.tags import TagError, iob_spans, strict_spans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import gpu_id_arg  # noqa: E402


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


def conlleval_scores(path: Path) -> Dict[str, float]:
    """conlleval's P/R/F (fractions) of an export, and its chunk counts."""
    with path.open(encoding="utf8") as f:
        counts = conlleval.count(f, str(path))
    prf = counts.prf()
    return {
        "ents_p": prf["p"],
        "ents_r": prf["r"],
        "ents_f": prf["f"],
        "correct": counts.correct_chunks,
        "gold": counts.gold_chunks,
        "guessed": counts.guessed_chunks,
    }


def is_valid(tags: List[str], scheme: str) -> bool:
    """Whether a tag sequence is valid for its scheme (IOB2 read by conlleval's
    rules needs no repair; BILUO parses strictly)."""
    if scheme == "BILUO":
        try:
            strict_spans(tags, "BILUO")
        except TagError:
            return False
        return True
    return iob_spans(tags)[1] == 0


def predict(nlp, docs: List[Doc], batch_size: int) -> Tuple[List[Doc], Dict[str, int]]:
    """The pipeline over `docs`, once, in batches, as nlp.pipe runs it;
    components that expose their raw tags (crf_ner and its softmax ablation) run
    as predict + set_annotations, and their invalid tag sequences are counted
    per component on the way (spaCy's ner cannot produce one)."""
    invalid = {name: 0 for name, pipe in nlp.pipeline if hasattr(pipe, "predict_tags")}
    out: List[Doc] = []
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        for name, pipe in nlp.pipeline:
            if name in invalid:
                tag_ids = pipe.predict(batch)
                invalid[name] += sum(not is_valid(t, pipe.cfg["scheme"]) for t in pipe.tag_names(tag_ids))
                pipe.set_annotations(batch, tag_ids)
            elif hasattr(pipe, "pipe"):
                batch = list(pipe.pipe(batch, batch_size=batch_size))
            else:
                batch = [pipe(doc) for doc in batch]
        out.extend(batch)
    return out, invalid


def _crossing(doc: Doc) -> int:
    """Entities of ``doc`` that continue across one of its sentence starts."""
    if not doc.has_annotation("SENT_START"):
        return 0
    starts = [t.i for t in doc if t.is_sent_start and t.i]
    return sum(1 for e in doc.ents if any(e.start < i < e.end for i in starts))


def fmt(score: Optional[float]) -> str:
    return "n/a" if score is None else f"{score:.4f}"


def raw_with_sentencizer(nlp, refs, args, base: Dict) -> None:
    """Mode 3: raw text with spaCy's rule-based sentencizer first (what an app
    gets by adding it before the entity recognizer; crf_ner and spaCy's ner
    both respect sentence starts). Skipped for pipelines with a sentence
    component of their own."""
    if any(name in nlp.pipe_names for name in ("sentencizer", "senter", "parser")):
        return
    nlp.add_pipe("sentencizer", first=True)
    sent = nlp.evaluate([Example(nlp.make_doc(r.text), r) for r in refs], batch_size=args.batch_size)
    out = {
        **base,
        "mode": "raw text re-tokenized by the pipeline, spaCy's sentencizer before the entity recognizer",
        "ents_p": sent.get("ents_p"),
        "ents_r": sent.get("ents_r"),
        "ents_f": sent.get("ents_f"),
        "ents_per_type": sent.get("ents_per_type"),
        "words_per_second": sent.get("speed"),
    }
    (args.out_dir / "raw_text_sentencizer.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"raw text + sentencizer: P {fmt(out['ents_p'])} R {fmt(out['ents_r'])} F {fmt(out['ents_f'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--gpu-id", type=gpu_id_arg, default=-1, help="-1: CPU; auto: GPU 0 if there is one")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--no-gold-sentences", action="store_true", help="gold-token mode without the gold sentence starts"
    )
    parser.add_argument("--sentencizer-only", action="store_true", help="only mode 3 (raw text + sentencizer)")
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
    if args.sentencizer_only:
        base = {"model": args.model, "corpus": str(corpus), "machine": machine}
        raw_with_sentencizer(nlp, refs, args, base)
        return

    # 1. gold tokens, whole articles
    inputs = gold_token_docs(nlp.vocab, refs, sentences=not args.no_gold_sentences)
    start = time.perf_counter()
    preds, invalid = predict(nlp, inputs, args.batch_size)
    seconds = time.perf_counter() - start
    scores = get_ner_prf([Example(p, r) for p, r in zip(preds, refs)])  # what spacy.ner_scorer.v1 computes
    conll_path = args.out_dir / "predictions.conll"
    write_conll(conll_path, zip(refs, preds))
    independent = conlleval_scores(conll_path)
    agree = all(abs(independent[k] - (scores[k] or 0.0)) <= 1e-4 for k in ("ents_p", "ents_r", "ents_f"))
    # (conlleval gives 0.0 where spaCy gives None: nothing to score)
    crossing = sum(_crossing(doc) for doc in preds)
    gold = {
        "mode": "gold tokens, whole articles" + ("" if args.no_gold_sentences else ", gold sentence starts"),
        "model": args.model,
        "corpus": str(corpus),
        "docs": len(refs),
        "words": n_words,
        "ents_p": scores["ents_p"],
        "ents_r": scores["ents_r"],
        "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "words_per_second": n_words / seconds,
        "conlleval": independent,
        "conlleval_agrees": agree,
        "invalid_tag_sequences": invalid,
        "entities_across_sentence_starts": crossing,
        "machine": machine,
    }
    (args.out_dir / "gold_tokens.json").write_text(json.dumps(gold, indent=2) + "\n")
    print(
        f"gold tokens: P {fmt(gold['ents_p'])} R {fmt(gold['ents_r'])} F {fmt(gold['ents_f'])}, "
        f"{gold['words_per_second']:,.0f} words/s"
    )
    print(f"  conlleval on {conll_path}: F {fmt(independent['ents_f'])} ({'agrees' if agree else 'DISAGREES'})")
    print(f"  invalid tag sequences: {gold['invalid_tag_sequences']}; entities across a sentence start: {crossing}")

    # 2. raw text, re-tokenized by the pipeline (see the module docstring)
    raw_path = args.out_dir / "raw_text.json"
    raw_examples = [Example(nlp.make_doc(r.text), r) for r in refs]
    retokenized = sum(1 for eg in raw_examples if [t.text for t in eg.predicted] != [t.text for t in eg.reference])
    # gold entities no prediction on these tokens could match (an edge inside a token): a floor under raw-text errors
    unaligned = sum(
        eg.predicted.char_span(e.start_char, e.end_char) is None for eg in raw_examples for e in eg.reference.ents
    )
    raw = nlp.evaluate(raw_examples, batch_size=args.batch_size)
    raw_out = {
        "mode": "raw text re-tokenized by the pipeline (as spacy evaluate does for docs with known spaces)",
        "model": args.model,
        "corpus": str(corpus),
        "docs_tokenized_differently_from_gold": retokenized,
        "gold_entities_not_on_token_boundaries": unaligned,
        "ents_p": raw.get("ents_p"),
        "ents_r": raw.get("ents_r"),
        "ents_f": raw.get("ents_f"),
        "ents_per_type": raw.get("ents_per_type"),
        "words_per_second": raw.get("speed"),
        "machine": machine,
    }
    raw_path.write_text(json.dumps(raw_out, indent=2) + "\n")
    print(
        f"raw text:    P {fmt(raw_out['ents_p'])} R {fmt(raw_out['ents_r'])} F {fmt(raw_out['ents_f'])}, "
        f"{raw_out['words_per_second'] or 0:,.0f} words/s"
    )

    raw_with_sentencizer(nlp, refs, args, raw_out)
    if not agree:
        sys.exit("spaCy's ents scores and conlleval's disagree")


if __name__ == "__main__":
    main()
