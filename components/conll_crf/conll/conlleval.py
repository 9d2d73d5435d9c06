"""The CoNLL shared tasks' scorer, conlleval (Perl, v2004-01-26), rule for rule.

Input: lines "token ... gold guessed" (space-separated; the last two columns
are the tags); an empty line (or a line whose first field is "-X-") is a
sentence boundary, which conlleval reads as a token tagged O/O, so no chunk
crosses it. "-DOCSTART-" lines are ordinary O/O tokens. A chunk starts and ends
by conlleval's `startOfChunk` / `endOfChunk` rules (IOB1, IOB2, IOE and the
bracket tags), so an I- after O starts a chunk and a type change ends one. A
guessed chunk is correct when it starts and ends where a gold chunk does, with
the same type. Precision, recall and F1 are over chunks (fractions here;
conlleval prints percentages).
"""

from typing import Dict, Iterable, NamedTuple, Tuple

BOUNDARY = "-X-"


def _split(tag: str) -> Tuple[str, str]:
    """conlleval's `^([^-]*)-(.*)$`: prefix and type; no hyphen: the tag, type ''."""
    prefix, sep, kind = tag.partition("-")
    return (prefix, kind) if sep else (tag, "")


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's endOfChunk: does a chunk end between the previous token and this one?"""
    if (prev_tag, tag) in {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}:
        return True
    if prev_tag not in ("O", ".") and prev_type != kind:
        return True
    return prev_tag in ("]", "[")


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at this token?"""
    if (prev_tag, tag) in {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}:
        return True
    if tag not in ("O", ".") and prev_type != kind:
        return True
    return tag in ("[", "]")


class Counts(NamedTuple):
    """conlleval's counts: correct, gold and guessed chunks, and correct and all tags."""

    correct_chunks: int
    gold_chunks: int
    guessed_chunks: int
    per_type: Dict[str, Tuple[int, int, int]]  # type -> (correct, gold, guessed)
    tokens: int
    correct_tags: int

    def prf(self, kind: str = "") -> Dict[str, float]:
        """Precision, recall and F1 over chunks (or over tags with `kind` "tags") as fractions."""
        correct, gold, guessed = (
            (self.correct_chunks, self.gold_chunks, self.guessed_chunks)
            if not kind
            else self.per_type.get(kind, (0, 0, 0))
        )
        p = correct / guessed if guessed else 0.0
        r = correct / gold if gold else 0.0
        return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def count(lines: Iterable[str], source: str = "<input>") -> Counts:
    """conlleval's counts over the lines of an export (see the module docstring)."""
    correct_chunks = gold_chunks = guessed_chunks = tokens = correct_tags = 0
    per: Dict[str, list] = {}
    in_correct = False
    last_c, last_g, last_ct, last_gt = "O", "O", "", ""
    n_fields = -1
    for lineno, line in enumerate(lines, 1):
        fields = line.rstrip("\n").split()
        if n_fields < 0 and fields:
            n_fields = len(fields)
        elif fields and len(fields) != n_fields:
            raise ValueError(f"{source}:{lineno}: unexpected number of fields ({len(fields)}, expected {n_fields})")
        if not fields or fields[0] == BOUNDARY:
            fields = [BOUNDARY, "O", "O"]
        if len(fields) < 3:
            raise ValueError(f"{source}:{lineno}: a line needs a token, a gold tag and a guessed tag: {line!r}")
        guessed, g_type = _split(fields[-1])
        correct, c_type = _split(fields[-2])
        first = fields[0]
        if first == BOUNDARY:
            guessed = "O"
        if in_correct:
            end_c = end_of_chunk(last_c, correct, last_ct, c_type)
            end_g = end_of_chunk(last_g, guessed, last_gt, g_type)
            if end_c and end_g and last_gt == last_ct:
                in_correct = False
                correct_chunks += 1
                per.setdefault(last_ct, [0, 0, 0])[0] += 1
            elif end_c != end_g or g_type != c_type:
                in_correct = False
        start_c = start_of_chunk(last_c, correct, last_ct, c_type)
        start_g = start_of_chunk(last_g, guessed, last_gt, g_type)
        if start_c and start_g and g_type == c_type:
            in_correct = True
        if start_c:
            gold_chunks += 1
            per.setdefault(c_type, [0, 0, 0])[1] += 1
        if start_g:
            guessed_chunks += 1
            per.setdefault(g_type, [0, 0, 0])[2] += 1
        if first != BOUNDARY:
            if correct == guessed and g_type == c_type:
                correct_tags += 1
            tokens += 1
        last_g, last_c, last_gt, last_ct = guessed, correct, g_type, c_type
    if in_correct:
        correct_chunks += 1
        per.setdefault(last_ct, [0, 0, 0])[0] += 1
    return Counts(
        correct_chunks, gold_chunks, guessed_chunks, {k: tuple(v) for k, v in per.items()}, tokens, correct_tags
    )
