"""Convert a CoNLL-2003 folder to corpus/{train,dev,test}.spacy.

    python scripts/convert_splits.py CONLL_DIR OUT_DIR

eng.train -> train.spacy, eng.testa -> dev.spacy, eng.testb -> test.spacy.
eng.train and eng.testa are required; a missing eng.testb is reported and
skipped (evaluation then uses the dev corpus). Writes OUT_DIR/convert_stats.json.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import convert  # noqa: E402

SPLITS = [("eng.train", "train", True), ("eng.testa", "dev", True), ("eng.testb", "test", False)]


def main(conll_dir: str, out_dir: str) -> int:
    src, out = Path(conll_dir), Path(out_dir)
    if not src.is_dir():
        print(
            f"error: {src} is not a folder; set conll_dir to the folder holding eng.train and eng.testa",
            file=sys.stderr,
        )
        return 1
    stats = {}
    for filename, split, required in SPLITS:
        path = src / filename
        if not path.exists():
            if required:
                print(f"error: {path} is missing (required)", file=sys.stderr)
                return 1
            print(f"warning: {path} is missing: no {split}.spacy written; evaluation will use the dev corpus")
            (out / f"{split}.spacy").unlink(missing_ok=True)
            continue
        stats_path = out / f".{split}_stats.json"
        code = convert.main([str(path), str(out / f"{split}.spacy"), "--stats-json", str(stats_path)])
        if code:
            return code
        stats[split] = json.loads(stats_path.read_text())
        stats_path.unlink()
    (out / "convert_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
