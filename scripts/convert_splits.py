"""Convert CoNLL-2003 to corpus/{train,dev,test}.spacy: from a folder of the raw files, else from the Hub.

    python scripts/convert_splits.py CONLL_DIR OUT_DIR [--hf-dataset eriktks/conll2003]

With the raw files in CONLL_DIR: eng.train -> train.spacy, eng.testa -> dev.spacy,
eng.testb -> test.spacy, one Doc per article. eng.train and eng.testa are
required; a missing eng.testb is reported and skipped (evaluation then uses the
dev corpus).

With neither eng.train nor eng.testa in CONLL_DIR and --hf-dataset given, the
corpus comes from that Hugging Face dataset through `datasets` (the Hub where the
network allows, or the local HF cache; a local folder of the dataset's files
works too): train -> train.spacy, validation -> dev.spacy, test -> test.spacy.
That copy drops the -DOCSTART- rows, so the article boundaries are lost and each
sentence becomes one Doc (docs/data.md says why no grouping is guessed); its
sentence, token and entity counts are printed beside the raw files' counts.

Writes OUT_DIR/convert_stats.json.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import convert  # noqa: E402

SPLITS = [("eng.train", "train", True), ("eng.testa", "dev", True), ("eng.testb", "test", False)]
HF_SPLITS = [("train", "train"), ("validation", "dev"), ("test", "test")]
# The raw files' counts (`conll-crf convert` on eng.train, eng.testa, eng.testb): what a copy must hold.
RAW_COUNTS = {
    "train": {"sentences": 14041, "tokens": 203621, "entities": 23499},
    "dev": {"sentences": 3250, "tokens": 51362, "entities": 5942},
    "test": {"sentences": 3453, "tokens": 46435, "entities": 5648},
}


def convert_one(src: str, out: Path, split: str, extra=()) -> dict:
    """`conll-crf convert SRC OUT/<split>.spacy`; its stats (SystemExit with its status on failure)."""
    stats_path = out / f".{split}_stats.json"
    code = convert.main([src, str(out / f"{split}.spacy"), "--stats-json", str(stats_path), *extra])
    if code:
        raise SystemExit(code)
    stats = json.loads(stats_path.read_text())
    stats_path.unlink()
    return stats


def from_files(src: Path, out: Path) -> dict:
    stats = {}
    for filename, split, required in SPLITS:
        path = src / filename
        if not path.exists():
            if required:
                raise SystemExit(f"error: {path} is missing (required)")
            print(f"warning: {path} is missing: no {split}.spacy written; evaluation will use the dev corpus")
            (out / f"{split}.spacy").unlink(missing_ok=True)
            continue
        stats[split] = convert_one(str(path), out, split)
    return stats


def count_table(stats: dict) -> str:
    """The copy's counts beside the raw files', per split, with what differs."""
    lines = [f"{'split':6s} {'':8s} {'sentences':>10s} {'tokens':>9s} {'entities':>9s}"]
    for split, got in stats.items():
        raw = RAW_COUNTS[split]
        lines.append(f"{split:6s} {'raw':8s} {raw['sentences']:>10,} {raw['tokens']:>9,} {raw['entities']:>9,}")
        lines.append(f"{'':6s} {'this copy':8s} {got['sentences']:>10,} {got['tokens']:>9,} {got['entities']:>9,}")
        diff = [k for k in raw if raw[k] != got[k]]
        if diff:
            lines.append(f"{'':6s} warning: {', '.join(diff)} differ from the raw files")
    return "\n".join(lines)


def from_hub(name: str, src: Path, out: Path) -> dict:
    print(
        f"note: no eng.train or eng.testa in {src}: taking CoNLL-2003 from the Hugging Face dataset {name} "
        "through `datasets` (the Hub, or the local HF cache). That copy has no -DOCSTART- rows: one Doc per sentence."
    )
    stats = {}
    for hf_split, split in HF_SPLITS:
        try:
            stats[split] = convert_one(f"hf:{name}", out, split, ["--split", hf_split])
        except SystemExit:  # convert said what is wrong with the dataset
            print(
                f"  (the Hub copy of CoNLL-2003 could not be read: put eng.train and eng.testa in {src})",
                file=sys.stderr,
            )
            raise
        except ImportError:
            raise SystemExit("error: the Hub copy needs `datasets`: pip install 'spacy-conll-crf[datasets]'") from None
        except Exception as err:  # the Hub unreachable, no cached copy, no such split: say which and stop
            raise SystemExit(
                f"error: could not load {name} [{hf_split}] ({type(err).__name__}: {err}); "
                f"put eng.train and eng.testa in {src} (conll_dir) instead"
            ) from None
    print(count_table(stats))
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("conll_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hf-dataset", default="", help="used when CONLL_DIR has neither eng.train nor eng.testa")
    args = parser.parse_args(argv)
    src, out = args.conll_dir, args.out_dir
    has_files = src.is_dir() and any((src / f).exists() for f in ("eng.train", "eng.testa"))
    try:
        if has_files:
            stats = from_files(src, out)
        elif args.hf_dataset:
            stats = from_hub(args.hf_dataset, src, out)
        else:
            raise SystemExit(f"error: no eng.train or eng.testa in {src}; set conll_dir to the folder holding them")
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            return 1
        return int(stop.code or 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
