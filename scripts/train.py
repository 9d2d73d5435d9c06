"""Train a config with `spacy train`, filling in the project's paths.

    python scripts/train.py CONFIG OUTPUT_DIR [--gpu-id -1|N|auto] [--transformer NAME]
        [--max-steps N] [--train corpus/train.spacy] [--dev corpus/dev.spacy] [overrides ...]

Sets paths.train/dev, paths.log (OUTPUT_DIR/log.jsonl) and, for configs with a
transformer, paths.transformer (and mixed precision when training on a GPU);
--max-steps N > 0 overrides training.max_steps. A relative paths.vectors or
paths.word_table (the CPU configs' assets/encoder_vectors and assets/glove_6b_50d)
that is not under the working directory is taken from the project folder; missing
from both, it stops with what to run.
Extra `--section.key value` arguments are passed on as config overrides.
Writes OUTPUT_DIR/train_meta.json with the wall time, the overrides used and a hash
of the config's parsed settings (a renamed or re-commented config keeps it).
"""

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

from spacy.cli._util import parse_config_overrides
from spacy.cli.train import train
from thinc.api import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import gpu_id_arg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def static_vector_keys(config, prefix: str = "") -> list:
    """The dotted config keys of every `include_static_vectors` that is on (e.g.
    components.crf_ner.model.tok2vec.tok2vec.embed.include_static_vectors)."""
    keys = []
    for key, value in config.items():
        if isinstance(value, dict):
            keys += static_vector_keys(value, f"{prefix}{key}.")
        elif key == "include_static_vectors" and value is True:
            keys.append(f"{prefix}{key}")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--gpu-id", type=gpu_id_arg, default=-1, help="-1: CPU; auto: GPU 0 if there is one")
    parser.add_argument("--transformer", default=None)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--train", default="corpus/train.spacy")
    parser.add_argument("--dev", default="corpus/dev.spacy")
    args, extra = parser.parse_known_args()
    config = Config().from_disk(args.config, interpolate=False)
    overrides = {"paths.train": args.train, "paths.dev": args.dev, "paths.log": str(args.output / "log.jsonl")}
    if "transformer" in config["paths"] and args.transformer:
        overrides["paths.transformer"] = args.transformer
    if "mixed_precision" in config["system"] and args.gpu_id >= 0:
        overrides["system.mixed_precision"] = True  # fp16 autocast on CUDA; off on CPU
    if args.max_steps > 0:
        overrides["training.max_steps"] = args.max_steps
    overrides.update(parse_config_overrides(extra))
    # the CPU configs name assets/encoder_vectors (and the word table, assets/glove_6b_50d) relative to the
    # project: found from any working directory
    for name, step in (("vectors", "vectors"), ("word_table", "vectors")):
        path = overrides.get(f"paths.{name}", config["paths"].get(name))
        if not isinstance(path, str) or not path or Path(path).is_absolute() or Path(path).exists():
            continue
        if (ROOT / path).exists():
            overrides[f"paths.{name}"] = str(ROOT / path)
            continue
        flags = " ".join(f"--{key} false" for key in static_vector_keys(config))
        nulls = " ".join(f"--paths.{n} null" for n in ("vectors", "word_table") if n in config["paths"])
        sys.exit(
            f"{args.config}: its {'static vectors' if name == 'vectors' else 'word table'} {path!r} do not exist "
            f"(from {Path.cwd()} nor from {ROOT}): run `python -m spacy project run {step}` first, or train "
            f"without them: {nulls} {flags}"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    start = time.time()
    train(args.config, args.output, use_gpu=args.gpu_id, overrides=overrides)
    meta = {
        "config": str(args.config),
        # the config's settings, parsed (comments and layout do not count): seeds.py summarize compares runs by it
        "config_sha256": hashlib.sha256(config.to_str().encode("utf8")).hexdigest(),
        "overrides": overrides,
        "gpu_id": args.gpu_id,
        "wall_seconds": round(time.time() - start, 1),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
    }
    (args.output / "train_meta.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
