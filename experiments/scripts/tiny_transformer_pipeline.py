"""A small transformer + crf_ner pipeline built offline, for checks that need a transformer but no accuracy.

    python experiments/scripts/tiny_transformer_pipeline.py CORPUS.spacy OUT_DIR [--steps 20] [--mode-stable]

Builds a 2-layer, 64-wide BERT (dropout 0.1, HF's default) with a WordPiece
vocabulary of characters and the corpus's 2,000 commonest lowercase words,
adds a spacy-transformers `transformer` and crf_ner listening to it, trains
`--steps` updates on the corpus's first 100 docs and saves the pipeline. With
--mode-stable its config carries the [nlp.after_pipeline_creation] callback
conll_crf.mode_stable_torch_prediction.v1. scripts/check_threads.py on the
result shows what threads do to a transformer pipeline (docs/threads.md).
"""

import argparse
import string
import tempfile
from collections import Counter
from pathlib import Path

import spacy
import transformers
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed


def build_encoder(folder: Path, words) -> None:
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.ascii_lowercase + string.digits + string.punctuation) + pieces + list(words)
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(
        str(folder)
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    transformers.BertModel(config).save_pretrained(str(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--mode-stable", action="store_true")
    args = parser.parse_args()
    fix_random_seed(0)
    nlp = spacy.blank("en")
    refs = list(DocBin().from_disk(args.corpus).get_docs(nlp.vocab))[:100]
    words = [w for w, _ in Counter(t.lower_ for d in refs for t in d if t.is_alpha).most_common(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        build_encoder(Path(tmp), words)
        if args.mode_stable:
            callback = {"@callbacks": "conll_crf.mode_stable_torch_prediction.v1"}
            nlp = spacy.blank("en", config={"nlp": {"after_pipeline_creation": callback}})
        nlp.add_pipe(
            "transformer",
            config={
                "model": {
                    "@architectures": "spacy-transformers.TransformerModel.v3",
                    "name": tmp,
                    "tokenizer_config": {"use_fast": True},
                    "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
                }
            },
        )
        listener = {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"},
            "upstream": "*",
        }
        nlp.add_pipe("crf_ner", config={"model": {"@architectures": "conll_crf.BiLSTMCRF.v3", "tok2vec": listener}})
        examples = [Example(nlp.make_doc(d.text), d) for d in refs]
        optimizer = nlp.initialize(lambda: examples)
        for step in range(args.steps):
            batch = examples[(step * 8) % len(examples) :][:8]
            losses = nlp.update(batch, sgd=optimizer)
            print(f"step {step + 1}/{args.steps}: loss {losses['crf_ner']:.1f}", flush=True)
        nlp.to_disk(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
