"""Convert CoNLL-style NER data to a spaCy DocBin: `conll-crf convert` (also scripts/convert.py).

    conll-crf convert SRC OUT.spacy [--docs article|sentence|N] [--split train]
        [--scheme auto|IOB|BILUO|IOBES] [--sep auto|tab|space] [--stats-json PATH]

SRC is a raw CoNLL file (2+ columns, NER tag last; IOB1, IOB2, BILUO or IOBES),
`hf:NAME` (Hugging Face `datasets`, needs network or a local HF cache) or a local
.parquet / .jsonl / .arrow file in Hugging Face form (`tokens`, `ner_tags`).
Bad input exits with status 1 and `FILE:LINE: what is wrong`; no output is written.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from spacy.tokens import DocBin
from spacy.vocab import Vocab

from .reader import ConllError, docs_from_articles, read_source


def docs_option(value: str):
    """--docs: 'article', 'sentence' or a positive number of sentences per Doc."""
    if value in ("article", "sentence"):
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError("expected 'article', 'sentence' or a positive integer")


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder: no partial output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def format_summary(stats: dict, out: Path) -> str:
    """The counts a conversion prints: articles, sentences, tokens, docs, entities per type."""
    ents = ", ".join(f"{k} {v:,}" for k, v in stats["entities_per_type"].items())
    lines = [
        f"{stats['source']} -> {out}",
        f"  scheme {stats['scheme']}: {stats['articles']:,} articles, {stats['sentences']:,} sentences, "
        f"{stats['tokens']:,} tokens, {stats['docs']:,} docs",
        f"  {stats['entities']:,} entities ({ents})",
        f"  I- tags that started an entity (IOB1 style, repaired by conlleval rules): {stats['repaired_tags']:,}",
    ]
    if stats["empty_articles"]:
        lines.append(f"  empty articles (-DOCSTART- with no tokens): {stats['empty_articles']:,}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """`conll-crf convert` with `argv` (default: the command line); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="conll-crf convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="CoNLL file, hf:NAME, or a .parquet/.jsonl/.arrow file")
    parser.add_argument("out", type=Path, help="output .spacy file")
    parser.add_argument("--docs", type=docs_option, default="article", help="article, sentence or N sentences per Doc")
    parser.add_argument("--split", default="train", help="dataset split for Hugging Face sources")
    parser.add_argument("--scheme", default="auto", choices=["auto", "IOB", "BILUO", "IOBES"])
    parser.add_argument(
        "--sep",
        default="auto",
        choices=["auto", "tab", "space"],
        help="column separator of raw CoNLL files (auto: tab if the first token line has one)",
    )
    parser.add_argument("--stats-json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        articles, spans, stats, docs = read_source(
            args.src, split=args.split, scheme=args.scheme, docs=args.docs, sep=args.sep
        )
    except (ConllError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    vocab = Vocab()  # DocBin stores strings; no language data is needed
    doc_bin = DocBin(store_user_data=True)
    for doc in docs_from_articles(vocab, articles, spans, stats, docs):
        doc_bin.add(doc)
    write_atomic(args.out, doc_bin.to_bytes())
    summary = stats.to_dict()
    if docs != args.docs:
        summary["note"] = "no -DOCSTART- rows: one Doc per sentence"
    print(format_summary(summary, args.out))
    if "note" in summary:
        print(f"  note: {summary['note']}")
    if args.stats_json:
        write_atomic(args.stats_json, (json.dumps(summary, indent=2) + "\n").encode("utf8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
