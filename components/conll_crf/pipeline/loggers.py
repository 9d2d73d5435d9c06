"""The JSONL training logger `conll_crf.JSONLLogger.v2`: spaCy's console logger
plus one JSON line per evaluation (step, epoch, losses, scores, words/s), for
plots and reports. `path` may be null (console only): the project's configs set
`paths.log = null`, so a plain `spacy train` writes no JSONL and never
truncates another run's log; `scripts/train.py` (the project's train commands)
sets it to the run's own `OUTPUT_DIR/log.jsonl`. (v1, in legacy.py, required a path.)"""

import json
from pathlib import Path
from typing import IO, Callable, Dict, Optional, Tuple

from spacy import Language
from spacy.training.loggers import console_logger
from spacy.util import registry


@registry.loggers("conll_crf.JSONLLogger.v2")
def jsonl_logger_v2(path: Optional[str] = None, progress_bar: bool = False) -> Callable:
    """spaCy's console logger, and one JSON line per evaluation in `path` (None: console only)."""
    if path is None:
        return console_logger(progress_bar=progress_bar)
    return jsonl_logger(path, progress_bar)


def jsonl_logger(path: str, progress_bar: bool) -> Callable:
    """The logger of `conll_crf.JSONLLogger.v2` for a given `path` (opened for writing)."""
    console = console_logger(progress_bar=progress_bar)

    def setup(nlp: Language, stdout: IO, stderr: IO) -> Tuple[Callable[[Optional[Dict]], None], Callable[[], None]]:
        log_console, finalize_console = console(nlp, stdout, stderr)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        f = out.open("w", encoding="utf8")

        def log_step(info: Optional[Dict]) -> None:
            log_console(info)
            if info is None:
                return
            record = {
                "step": info["step"],
                "epoch": info["epoch"],
                "seconds": info.get("seconds"),
                "words": info.get("words"),
                "losses": info.get("losses"),
                "score": info.get("score"),
                "other_scores": info.get("other_scores"),
            }
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

        def finalize() -> None:
            finalize_console()
            f.close()

        return log_step, finalize

    return setup
