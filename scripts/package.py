"""Package a trained pipeline as `en_<name>` plus the library it needs.

    python scripts/package.py MODEL OUT_DIR [--name conll_crf] [--version 0.2.0]
        [--data-name TEXT] [--data-url URL] [--data-license TEXT] [--license TEXT]
        [--vectors-encoder NAME] [--vectors assets/encoder_vectors] [--word-table assets/glove_6b_50d]

Writes into OUT_DIR/dist/:
- spacy_conll_crf-<lib version>-py3-none-any.whl: this repository's `conll_crf`
  package (the crf_ner factory and the architectures, found through entry points);
- en_<name>-<version>-py3-none-any.whl: the pipeline, built by `spacy package`,
  whose requirements name spacy-conll-crf (and spacy-transformers for a
  transformer pipeline), so `pip install OUT_DIR/dist/*.whl` is all an app needs
  before `spacy.load("en_<name>")`.
The package meta describes the pipeline by its own entity labels (read from the
trained components) and names the training data given by the --data-* options
(the defaults describe this project's CoNLL-2003 run), the scores and the
requirements.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import conll_crf

ROOT = Path(__file__).resolve().parent.parent
NER_FACTORIES = ("crf_ner", "ner", "beam_ner")
CONLL = {
    "data_name": "CoNLL-2003 English (eng.train; tuned on eng.testa)",
    "data_url": "https://www.clips.uantwerpen.be/conll2003/ner/",
    "data_license": "Reuters Corpus (RCV1) agreement",
    "data_author": "Tjong Kim Sang and De Meulder (2003)",
    "license": "Model weights trained on CoNLL-2003, which is licence-restricted (Reuters RCV1): research use",
}


def entity_labels(model: Path, meta: dict) -> list:
    """The labels of the pipeline's entity recognizers (by factory), sorted."""
    from thinc.api import Config

    components = Config().from_disk(model / "config.cfg", interpolate=False).get("components", {})
    labels = set()
    for name, component in components.items():
        if component.get("factory") in NER_FACTORIES:
            labels.update(meta.get("labels", {}).get(name, []))
    return sorted(labels)


def vectors_source(meta: dict, encoder: str, vectors_meta: Optional[dict] = None) -> list:
    """A `sources` entry for the static vectors the pipeline carries (none without vectors): the
    encoder whose input embedding table they are, whose licence applies to them too. The encoder,
    its address and its licence come from the vectors' own meta where encoder_vectors.py wrote them
    (the licence read from the encoder's model card), else from ``encoder``."""
    vectors = meta.get("vectors") or {}
    source = ((vectors_meta or {}).get("sources") or [{}])[0]
    encoder = source.get("name") or encoder
    if not vectors.get("width") or not encoder:
        return []
    url = source.get("url", "" if Path(encoder).exists() else f"https://huggingface.co/{encoder}")
    licence = source.get("license") or ""
    entry = {
        "name": f"Static vectors: the input embedding table of {encoder} "
        f"({vectors.get('vectors', '?')} rows of width {vectors['width']})",
        "url": url,
        "license": f"that of the encoder ({licence})" if licence else "that of the encoder (its model card names none)",
    }
    return [entry]


def word_table_source(table_meta: Optional[dict]) -> list:
    """A `sources` entry for the word table the model carries in its weights (HashCharEmbed.v4's `word_table`),
    from the table folder's own meta (scripts/word_table.py writes GloVe's name, address and licence)."""
    source = ((table_meta or {}).get("sources") or [{}])[0]
    if not source.get("name"):
        return []
    vectors = (table_meta or {}).get("vectors") or {}
    size = f" ({vectors['vectors']:,} rows of width {vectors['width']})" if vectors.get("width") else ""
    return [
        {
            "name": f"Word table: {source['name']}{size}",
            "url": source.get("url", ""),
            "license": source.get("license", ""),
        }
    ]


def package_meta(
    meta: dict,
    labels: list,
    name: str,
    version: str,
    requirement: str,
    data: dict,
    encoder: str = "",
    vectors_meta: Optional[dict] = None,
    table_meta: Optional[dict] = None,
) -> dict:
    """The trained pipeline's meta, described by its own labels, training data and static vectors' encoder."""
    out = dict(meta)
    out.update(
        {
            "name": name,
            "version": version,
            "description": f"Named entity recognition ({', '.join(labels) or 'no entity labels'}) with a BiLSTM-CRF "
            f"(PyTorch forward algorithm and Viterbi), trained on {data['data_name']}",
            "license": data["license"],
            "sources": [
                {
                    "name": data["data_name"],
                    "url": data["data_url"],
                    "license": data["data_license"],
                    "author": data["data_author"],
                }
            ]
            + vectors_source(meta, encoder, vectors_meta)
            + word_table_source(table_meta),
            "requirements": [r for r in meta.get("requirements", []) if not r.startswith("spacy-conll-crf")]
            + [requirement],
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="conll_crf")
    parser.add_argument("--version", default="0.2.0")
    parser.add_argument(
        "--vectors-encoder", default="", help="the encoder the static vectors came from, for the meta's sources"
    )
    parser.add_argument(
        "--vectors",
        type=Path,
        default=None,
        help="the vectors folder encoder_vectors.py wrote (its meta names the encoder and its licence)",
    )
    parser.add_argument(
        "--word-table",
        type=Path,
        default=None,
        help="the word table folder the model was trained with (word_table.py wrote it; its meta names the source)",
    )
    for key, value in CONLL.items():
        parser.add_argument("--" + key.replace("_", "-"), default=value, help=f"(default: {value})")
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
    data = {key: getattr(args, key) for key in CONLL}
    vectors_meta = None
    if args.vectors is not None and (args.vectors / "meta.json").exists():
        vectors_meta = json.loads((args.vectors / "meta.json").read_text())
    table_meta = None
    if args.word_table is not None and (args.word_table / "meta.json").exists():
        table_meta = json.loads((args.word_table / "meta.json").read_text())
    meta = package_meta(
        meta,
        entity_labels(args.model, meta),
        args.name,
        args.version,
        requirement,
        data,
        args.vectors_encoder,
        vectors_meta,
        table_meta,
    )
    meta_path = args.out_dir / f"meta_{args.name}.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "package",
            str(args.model),
            str(args.out_dir),
            "--name",
            args.name,
            "--version",
            args.version,
            "--meta-path",
            str(meta_path),
            "--build",
            "wheel",
            "--force",
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
