"""Package a trained pipeline as `en_<name>` plus the library it needs.

    python scripts/package.py MODEL OUT_DIR [--name conll_crf] [--version 0.1.0]

Writes into OUT_DIR/dist/:
- spacy_conll_crf-<lib version>-py3-none-any.whl: this repository's `conll_crf`
  package (the crf_ner factory and the architectures, found through entry points);
- en_<name>-<version>-py3-none-any.whl: the pipeline, built by `spacy package`,
  whose requirements name spacy-conll-crf (and spacy-transformers for a
  transformer pipeline), so `pip install OUT_DIR/dist/*.whl` is all an app needs
  before `spacy.load("en_<name>")`.
The package meta names the training data, the scores and the requirements.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import conll_crf

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="conll_crf")
    parser.add_argument("--version", default="0.1.0")
    args = parser.parse_args()
    dist = args.out_dir / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    lib_version = conll_crf.__version__
    # 1. the library wheel, from this checkout (no build isolation: no downloads)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
    )
    # 2. the pipeline wheel
    meta = json.loads((args.model / "meta.json").read_text())
    major, minor = lib_version.split(".")[:2]
    requirement = f"spacy-conll-crf>={lib_version},<{major}.{int(minor) + 1}.0"
    meta.update(
        {
            "name": args.name,
            "version": args.version,
            "description": "English named entity recognition (PER, LOC, ORG, MISC) with a BiLSTM-CRF "
            "(PyTorch forward algorithm and Viterbi), trained on CoNLL-2003",
            "license": "Model weights trained on CoNLL-2003, which is licence-restricted (Reuters RCV1): research use",
            "sources": [
                {
                    "name": "CoNLL-2003 English (eng.train; tuned on eng.testa)",
                    "url": "https://www.clips.uantwerpen.be/conll2003/ner/",
                    "license": "Reuters Corpus (RCV1) agreement",
                    "author": "Tjong Kim Sang and De Meulder (2003)",
                }
            ],
            "requirements": [r for r in meta.get("requirements", []) if not r.startswith("spacy-conll-crf")] + [requirement],
        }
    )
    meta_path = args.out_dir / f"meta_{args.name}.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    subprocess.run(
        [
            sys.executable, "-m", "spacy", "package", str(args.model), str(args.out_dir),
            "--name", args.name, "--version", args.version, "--meta-path", str(meta_path),
            "--build", "wheel", "--force",
        ],
        check=True,
    )
    lang = meta.get("lang", "en")
    built = args.out_dir / f"{lang}_{args.name}-{args.version}" / "dist"
    for wheel in built.glob("*.whl"):
        shutil.copy2(wheel, dist / wheel.name)
    print(f"wheels in {dist}: {sorted(p.name for p in dist.glob('*.whl'))}")


if __name__ == "__main__":
    main()
