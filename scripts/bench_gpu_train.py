"""Training and inference speed of trf_crf against trf_ner on one encoder, side by side, in one run.

    python scripts/bench_gpu_train.py CONLL_TRAIN WORK_DIR [--gpu-id 0] [--steps 300] [--size base]
        [--json PATH]

Builds an encoder of roberta-base's size (12 layers, width 768, 12 heads; BERT's
architecture with a WordPiece vocabulary made from the training file's words,
randomly initialised: nothing is downloaded, so the speed is a real encoder's
and the accuracy is not the point) or, with `--size tiny`, a 2-layer 32-wide
one for a dry run on a CPU. Converts CONLL_TRAIN (its last 20 articles are the
dev set), then trains configs/trf_crf.cfg and configs/trf_ner.cfg for `steps`
steps each, with mixed precision off and on (on a GPU only), each run in a
fresh process so its peak GPU memory is its own; then times `nlp.pipe` on the
dev texts with the trained pipeline. Prints words/s of training (from the
training log: the words and seconds between the first evaluation and the last)
and of inference, peak GPU memory, and the ratios trf_crf / trf_ner.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}
CHILD = r"""
import json, sys, time
import spacy, torch
from spacy.cli.train import train
from spacy.tokens import DocBin
config, out, gpu_id, overrides, dev = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
train(config, out, use_gpu=gpu_id, overrides=overrides)
on_gpu = gpu_id >= 0 and torch.cuda.is_available()
peak_train = torch.cuda.max_memory_allocated() if on_gpu else 0
import gc
gc.collect()  # the training loop's model and optimizer state out of the inference peak
if on_gpu:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
nlp = spacy.load(f"{out}/model-last")
texts = [d.text for d in DocBin().from_disk(dev).get_docs(nlp.vocab)]
list(nlp.pipe(texts[:4]))  # warm-up
if on_gpu:
    torch.cuda.synchronize()
start = time.perf_counter()
words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=64))
if on_gpu:
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
peak_infer = torch.cuda.max_memory_allocated() if on_gpu else 0
print(json.dumps({"peak_train_bytes": peak_train, "peak_infer_bytes": peak_infer,
                  "infer_words": words, "infer_seconds": seconds}))
"""


def build_encoder(conll_train: Path, folder: Path, size: str) -> Path:
    """A randomly initialised BERT-architecture encoder and its WordPiece tokenizer, saved in `folder`."""
    import transformers

    words = Counter()
    for line in conll_train.read_text(encoding="utf8").splitlines():
        if line.strip() and not line.startswith("-DOCSTART-"):
            words[line.split()[0].lower()] += 1
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    vocab += [w for w, _ in words.most_common(30000 - len(vocab)) if w not in set(vocab)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(dict.fromkeys(vocab)), max_position_embeddings=512, **SIZES[size])
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def train_rate(log: Path, min_seconds: float) -> float:
    """Training words/s between the first and the last evaluation of a JSONL training log. spaCy logs whole
    seconds, so a short window is coarse: under `min_seconds` it raises."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("words") is not None and r.get("seconds") is not None]
    first, last = rows[0], rows[-1]
    seconds = last["seconds"] - first["seconds"]
    if seconds < min_seconds:
        raise ValueError(f"{log}: {seconds} s between the first and the last evaluation, under {min_seconds} s")
    return (last["words"] - first["words"]) / max(seconds, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("conll_train", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--min-seconds", type=float, default=10.0, help="the shortest training window to time")
    args = parser.parse_args()
    work = args.work
    encoder = build_encoder(args.conll_train, work / "encoder", args.size)
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/convert.py"), str(args.conll_train), str(corpus / "all.spacy")],
        check=True,
        capture_output=True,
    )
    import spacy
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(corpus / "all.spacy").get_docs(spacy.blank("en").vocab))
    DocBin(docs=docs[:-20], store_user_data=True).to_disk(corpus / "train.spacy")
    DocBin(docs=docs[-20:], store_user_data=True).to_disk(corpus / "dev.spacy")
    on_gpu = args.gpu_id >= 0
    runs = {}
    for amp in [False, True] if on_gpu else [False]:
        for name in ("trf_crf", "trf_ner"):
            out = work / f"{name}_amp{int(amp)}"
            overrides = {
                "paths.train": str(corpus / "train.spacy"),
                "paths.dev": str(corpus / "dev.spacy"),
                "paths.transformer": str(encoder),
                "paths.log": str(out / "log.jsonl"),
                "training.max_steps": args.steps,
                "training.eval_frequency": args.steps,  # at step 0 and at the end only
                "training.optimizer.learn_rate.total_steps": args.steps,
                "training.optimizer.learn_rate.warmup_steps": max(args.steps // 10, 1),
                "system.mixed_precision": amp,
            }
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            start = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(ROOT / f"configs/{name}.cfg"),
                    str(out),
                    str(args.gpu_id),
                    json.dumps(overrides),
                    str(corpus / "dev.spacy"),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if result.returncode:
                print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(result.stdout.strip().splitlines()[-1])
            r.update(
                {
                    "train_words_per_s": train_rate(out / "log.jsonl", args.min_seconds),
                    "wall_seconds": time.perf_counter() - start,
                    "infer_words_per_s": r["infer_words"] / r["infer_seconds"],
                }
            )
            runs[f"{name}_amp{int(amp)}"] = r
            print(
                f"{name} mixed precision {'on' if amp else 'off'}: train {r['train_words_per_s']:,.0f} words/s, "
                f"inference {r['infer_words_per_s']:,.0f} words/s, peak GPU memory train "
                f"{r['peak_train_bytes'] / 2**30:.2f} GiB, inference {r['peak_infer_bytes'] / 2**30:.2f} GiB",
                flush=True,
            )
            report(args, runs, on_gpu)
    return 0


def report(args, runs, on_gpu: bool) -> None:
    """Print the ratios of the runs so far and write them all (to --json), so a stage cut short keeps its figures."""
    ratios = {}
    for amp in [0, 1]:
        crf, ner = runs.get(f"trf_crf_amp{amp}"), runs.get(f"trf_ner_amp{amp}")
        if crf is None or ner is None:
            continue
        ratios[f"amp{amp}"] = {
            "train_words_per_s": crf["train_words_per_s"] / ner["train_words_per_s"],
            "infer_words_per_s": crf["infer_words_per_s"] / ner["infer_words_per_s"],
            "peak_train_memory": crf["peak_train_bytes"] / ner["peak_train_bytes"] if ner["peak_train_bytes"] else None,
        }
        print(f"trf_crf / trf_ner, mixed precision {'on' if amp else 'off'}: {ratios[f'amp{amp}']}", flush=True)
    if args.json:
        import torch

        device = torch.cuda.get_device_name(args.gpu_id) if on_gpu else platform.processor() or platform.machine()
        meta = {
            "device": device,
            "torch": torch.__version__,
            "steps": args.steps,
            "size": args.size,
            "runs": runs,
            "ratios": ratios,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
