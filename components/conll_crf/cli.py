"""The `conll-crf` command line (also `python -m conll_crf`).

    conll-crf annotate INPUT... --model NAME_OR_PATH --output DIR [options]
    conll-crf convert SRC OUT.spacy [options]        (conll/convert.py)
    conll-crf init-config OUT.cfg [options]          (init_config.py)

For `annotate`:
Exit status: 0 when every record was annotated; 3 when the job completed but
some records could not be annotated (see DIR/errors/ and the manifest); 2 when
the job could not start (bad arguments, inputs or output folder; nothing is
written); 1 when it stopped before completing (e.g. a full disk: run the same
command again to resume).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .annotate.job import EXIT_STOPPED, EXIT_USAGE, JobConfig, JobError, JobStopped, exit_code, run_job
from .annotate.shards import OUTPUT_FORMATS
from .tool_formats import FORMATS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in the help, except where they say nothing: a required option's None, a flag's
    True or False (its help says what it does)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The `conll-crf` argument parser (its subcommands and their options)."""
    parser = argparse.ArgumentParser(prog="conll-crf", description="Tools of the spacy-conll-crf package.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "convert",
        help="convert CoNLL files (or a Hugging Face dataset) to a .spacy DocBin: conll-crf convert --help",
        add_help=False,
    )
    review = sub.add_parser(
        "review",
        help="a review queue: texts ranked by expected errors, as Label Studio / Prodigy / doccano tasks",
        description="Annotate the texts of a JSONL file, order them by expected entity errors (most first), and "
        "write the first --budget as pre-annotated tasks for an annotation tool, with the probabilities.",
        formatter_class=_HelpFormatter,
    )
    review.add_argument(
        "input",
        type=Path,
        help="JSONL file of records with a text (and an id), a .spacy corpus, or a `conll-crf annotate --review` "
        "output folder (annotated there, on one machine or with Ray: nothing is annotated again)",
    )
    review.add_argument("--model", required=True, help="pipeline package name or folder (e.g. en_conll_crf)")
    review.add_argument("--format", dest="fmt", choices=FORMATS, required=True)
    review.add_argument("--output", required=True, type=Path, help="tasks file to write")
    review.add_argument("--budget", type=int, default=0, help="documents to keep, most expected errors first (0: all)")
    review.add_argument("--text-field", default="text")
    review.add_argument("--id-field", default="id")
    init = sub.add_parser(
        "init-config",
        help="write a training config (the CPU or transformer recipe) for your own data",
        description="Write a spaCy training config from the recipes this package ships, for data with any labels.",
        formatter_class=_HelpFormatter,
    )
    init.add_argument("output", type=Path, help="the config file to write")
    init.add_argument("--recipe", choices=("cpu_crf", "trf_crf"), default="cpu_crf", help="CPU or transformer")
    init.add_argument("--lang", default="en", help="spaCy language code of the data")
    init.add_argument("--vectors", default=None, help="a spaCy vectors folder (cpu_crf; default: no vectors)")
    init.add_argument(
        "--word-table",
        default=None,
        help="cpu_crf with --vectors: a spaCy vectors folder of lower-case words stacked beside them (default: none)",
    )
    init.add_argument("--transformer", default=None, help="trf_crf: Hugging Face model name or folder")
    init.add_argument("--source", default=None, help="go on training this pipeline (its components sourced)")
    corr = sub.add_parser(
        "corrections",
        help="read a Label Studio / Prodigy / doccano export of reviewed tasks into a .spacy training file",
        description="Read reviewed records of an annotation tool's export into a DocBin: entities aligned to the "
        "pipeline's tokens; what nobody reviewed stays missing (conll_crf/tool_corrections.py).",
        formatter_class=_HelpFormatter,
    )
    corr.add_argument("export", type=Path, help="the tool's export file")
    corr.add_argument("--format", dest="fmt", choices=FORMATS, required=True)
    corr.add_argument("--output", required=True, type=Path, help=".spacy file to write")
    corr.add_argument("--model", default=None, help="pipeline whose tokenizer to use (default: blank --lang)")
    corr.add_argument("--lang", default="en")
    corr.add_argument(
        "--add-labels", action="store_true", help="accept labels the --model does not know (trained as new labels)"
    )
    p = sub.add_parser(
        "annotate",
        help="annotate JSONL / Parquet / text files with a spaCy pipeline, resumably, locally or on Ray",
        description=(
            "Annotate documents with a spaCy pipeline's entities. One output row per input record; records that "
            "cannot be annotated get an error row. Run the same command again to resume a job that stopped."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="JSONL (.jsonl/.ndjson), Parquet (.parquet) or plain-text files (one document each), folders, globs",
    )
    p.add_argument("--model", required=True, help="pipeline package name or folder (e.g. en_conll_crf)")
    p.add_argument("--output", required=True, type=Path, help="output folder (created; a job's own folder resumes)")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: one process with nlp.pipe; ray: a Ray Data actor pool",
    )
    p.add_argument("--text-field", default="text", help="the field / column holding the text")
    p.add_argument(
        "--id-field", default="id", help="the field / column holding the id (derived from file and line when absent)"
    )
    p.add_argument(
        "--format",
        dest="output_format",
        choices=OUTPUT_FORMATS,
        default="jsonl",
        help="output shard format (parquet needs pyarrow: the [parquet] or [ray] extra)",
    )
    p.add_argument(
        "--shard-size", type=int, default=1000, help="records per output shard (the unit of resuming and of Ray tasks)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="documents per nlp.pipe batch")
    p.add_argument(
        "--batch-chars",
        type=int,
        default=150_000,
        help="characters per batch at most, unless one document (piece) is longer: bounds memory (0: no limit)",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=0,
        help="longer documents are annotated in pieces of at most this many characters (0: nlp.max_length)",
    )
    p.add_argument(
        "--scores-key",
        default="crf_ner",
        help="doc.spans key whose attrs['scores'] give entity probabilities (crf_ner's spans_key)",
    )
    p.add_argument(
        "--code", action="append", default=[], help="Python file to import first (custom components); repeatable"
    )
    p.add_argument("--workers", type=int, default=1, help="ray: number of actors, each with its own pipeline")
    p.add_argument("--threads-per-worker", type=int, default=1, help="CPU threads (and Ray CPUs) per worker")
    p.add_argument(
        "--no-retain-freed-memory",
        dest="retain_freed_memory",
        action="store_false",
        help="leave glibc's thresholds alone, in every crf_ner of the pipeline too (by default the job, which "
        "owns its processes, has glibc keep freed blocks of up to 32 MiB for reuse: faster where page faults "
        "are costly, at the price of a larger resident size)",
    )
    p.add_argument(
        "--gpus-per-worker", type=_non_negative_float, default=0.0, help="ray: GPUs per worker (fractions allowed)"
    )
    p.add_argument("--gpu-id", type=int, default=-1, help="local: GPU to use (-1: CPU)")
    p.add_argument("--address", default=None, help="ray: cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--overwrite", action="store_true", help="delete the output folder's earlier job first")
    p.add_argument(
        "--review",
        action="store_true",
        help="rows also hold the text and the scored candidates that are not entities, for `conll-crf review`",
    )
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show the progress bar"
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run `conll-crf` with `argv` (default: the command line); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from .conll.convert import main as convert

        return convert(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "init-config":
        return _init_config(args)
    if args.command == "review":
        return _review(args)
    if args.command == "corrections":
        return _corrections(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    opts = vars(args)
    opts.pop("command")
    overwrite = opts.pop("overwrite")
    try:
        manifest = run_job(JobConfig(**opts), overwrite=overwrite)
    except JobError as err:
        print(f"conll-crf annotate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except JobStopped as err:
        print(f"conll-crf annotate: stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    return exit_code(manifest)


def _review(args) -> int:
    import spacy

    from .review_inputs import ReviewInputError, review_docs
    from .tool_formats import write_queue

    if args.budget < 0 or not args.output.parent.is_dir():
        print(f"conll-crf review: error: --budget must be >= 0 and {args.output.parent} a folder", file=sys.stderr)
        return EXIT_USAGE
    nlp = spacy.load(args.model)
    try:
        items = review_docs(nlp, args.input, args.text_field, args.id_field)
        summary = write_queue(nlp, items, args.fmt, args.output, args.budget)
    except (OSError, ReviewInputError) as err:
        print(f"conll-crf review: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"wrote {summary['kept']} of {summary['documents']} documents to {args.output} ({args.fmt}): "
        f"{summary['expected_errors_kept']} of {summary['expected_errors_all']} expected entity errors"
    )
    return 0


def _corrections(args) -> int:
    import spacy

    from .tool_corrections import CorrectionsError, write_corrections

    nlp = spacy.load(args.model) if args.model else spacy.blank(args.lang)
    known = None
    if args.model:  # the labels of the pipeline's entity recognizers
        ner = [pipe for name, pipe in nlp.pipeline if nlp.get_pipe_meta(name).factory in ("crf_ner", "ner", "beam_ner")]
        known = {label for pipe in ner for label in pipe.labels}
    try:
        counts = write_corrections(args.export, args.fmt, nlp, args.output, known, args.add_labels)
    except (OSError, CorrectionsError) as err:
        print(f"conll-crf corrections: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"wrote {args.output}: {counts['docs']} docs ({counts['partial']} partly reviewed), {counts['entities']} "
        f"entities from {counts['records']} records ({counts['skipped']} skipped: not accepted or not annotated)"
    )
    if counts.get("new_labels"):
        print("new labels (--add-labels): " + ", ".join(f"{k} {v}" for k, v in sorted(counts["new_labels"].items())))
    return 0


def _init_config(args) -> int:
    from .init_config import init_config, source_config, write_config

    try:
        if args.source:
            config = source_config(args.source, args.recipe)
        else:
            # an empty value (a project variable left blank) means none
            config = init_config(
                args.recipe, args.lang, args.vectors or None, args.transformer or None, args.word_table or None
            )
    except ValueError as err:
        print(f"conll-crf init-config: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    write_config(args.output, config, args.recipe)
    what = (
        f"goes on training {args.source}"
        if args.source
        else f"{args.recipe}, lang {args.lang}, "
        + (f"vectors {args.vectors}" if args.vectors else "no static vectors")
        + (f", word table {args.word_table}" if args.word_table else "")
    )
    print(
        f"wrote {args.output} ({what}). Train with:\n"
        f"  python -m spacy train {args.output} --paths.train train.spacy --paths.dev dev.spacy --output model"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
