"""The progress bar of `conll-crf annotate`: documents, with words/s."""

import sys
import time
from typing import Optional


class Progress:
    """A context manager around a tqdm bar (documents, with words/s) on a terminal; nothing otherwise. The
    bar and its clock start at the first finished batch, so that loading the
    pipeline (or starting Ray) does not count in the rates."""

    def __init__(self, total: int, enabled: Optional[bool]) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total
        self.words = 0
        self.start = 0.0
        self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def _open(self) -> None:
        import shutil

        from tqdm import tqdm

        size = shutil.get_terminal_size()  # a pty of unknown size says 0 x 0, where tqdm would draw nothing
        self.bar = tqdm(
            total=self.total,
            unit="doc",
            ncols=size.columns if size.columns >= 40 else 100,
            nrows=max(size.lines, 2),
            file=sys.stderr,
            smoothing=0.1,
        )
        self.start = time.perf_counter()

    def update(self, docs: int, words: int) -> None:
        """Count `docs` more documents (records) and `words` more words."""
        if not self.enabled:
            return
        if self.bar is None:
            self._open()
        self.words += words
        self.bar.update(docs)
        wps = self.words / max(time.perf_counter() - self.start, 1e-3)
        self.bar.set_postfix_str(f"{wps:,.0f} words/s", refresh=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
