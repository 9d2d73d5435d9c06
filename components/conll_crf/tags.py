"""Tag schemes: parsing tags, decoding entity spans, and building tag sets.

Four schemes are read: IOB1 (the original CoNLL-2003 files, where an entity
starts with I- and B- only separates two touching entities of the same type),
IOB2 (every entity starts with B-, the Hugging Face form), BILUO and IOBES.
Spans are decoded with conlleval's chunk rules for the IOB family, so IOB1 and
IOB2 files holding the same data give the same entities. BILUO and IOBES are
decoded strictly: a sequence that breaks the scheme is an error.

The model side uses two schemes, ``BIO`` (= IOB2) and ``BILUO``, and this
module is also where what they forbid is written down (`SchemeRules`): the
CRF's transition constraints and the constraints a Doc's sentence boundaries
and preset entities put on its tokens are both derived from it.
"""

from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

OUTSIDE = "O"
IOB_PREFIXES = frozenset("BI")
KNOWN_PREFIXES = frozenset("BILUES")
MODEL_SCHEMES = ("BIO", "BILUO")


class TagError(ValueError):
    """A tag or tag sequence that cannot be read. ``index`` is the position
    of the offending tag in the sequence that was decoded."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def split_tag(tag: str) -> Tuple[str, str]:
    """Split "B-PER" into ("B", "PER") and "O" into ("O", "").
    Raises ValueError for anything else (no prefix, unknown prefix, no type).
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in KNOWN_PREFIXES or not label:
        raise ValueError(
            f"invalid NER tag {tag!r}: expected 'O' or PREFIX-TYPE with PREFIX one of B, I, L, U, E, S (e.g. 'B-PER')"
        )
    return prefix, label


def detect_scheme(prefixes: Iterable[str]) -> str:
    """Name the file scheme from the set of prefixes seen: 'BILUO' when L-/U-
    occur, 'IOBES' when E-/S- occur, else 'IOB'. Mixed L/U and E/S raise."""
    seen = set(prefixes)
    biluo = seen & {"L", "U"}
    iobes = seen & {"E", "S"}
    if biluo and iobes:
        raise ValueError(f"tags mix BILUO (L-/U-) and IOBES (E-/S-) prefixes: {sorted(biluo | iobes)}")
    if biluo:
        return "BILUO"
    if iobes:
        return "IOBES"
    return "IOB"


def iob_spans(tags: Sequence[str]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Decode IOB1 or IOB2 tags with conlleval's chunk rules.

    B-X always starts an entity; I-X starts one unless it continues an X entity
    (the previous tag is B-X or I-X). Returns (spans, repaired) where spans are
    (start, end, label) token offsets, end exclusive, and `repaired` counts the
    I-X tags that had to start an entity (every entity of an IOB1 file; an
    IOB2 file should have none). L-/U-/E-/S- tags raise TagError.
    """
    spans: List[Tuple[int, int, str]] = []
    repaired = 0
    start = -1
    label = ""
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if prefix not in IOB_PREFIXES and prefix != OUTSIDE:
            raise TagError(
                f"tag {tag!r} has prefix {prefix}-, which is not an IOB prefix "
                f"(this file uses IOB tags: only B-, I- and O are valid)",
                i,
            )
        continues = prefix == "I" and start >= 0 and typ == label
        if start >= 0 and not continues:
            spans.append((start, i, label))
            start = -1
        if prefix == "B" or (prefix == "I" and not continues):
            if prefix == "I":
                repaired += 1
            start, label = i, typ
    if start >= 0:
        spans.append((start, len(tags), label))
    return spans, repaired


def strict_spans(tags: Sequence[str], scheme: str) -> List[Tuple[int, int, str]]:
    """Decode BILUO or IOBES tags strictly (no repair): B-X (I-X)* L-X/E-X for
    multi-token entities, U-X/S-X for single tokens. A violation raises TagError
    at the offending position."""
    if scheme == "BILUO":
        last, unit = "L", "U"
    elif scheme == "IOBES":
        last, unit = "E", "S"
    else:
        raise ValueError(f"strict decoding is for BILUO or IOBES, not {scheme!r}")
    valid = {"B", "I", last, unit, OUTSIDE}
    spans: List[Tuple[int, int, str]] = []
    start = -1
    label = ""
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if prefix not in valid:
            raise TagError(f"tag {tag!r} is not a {scheme} tag", i)
        inside = start >= 0
        if prefix in ("I", last):
            if not inside or typ != label:
                where = f"inside a {label} entity" if inside else "outside an entity"
                raise TagError(
                    f"tag {tag!r} is invalid {where} in {scheme} (expected B-{typ} before it)",
                    i,
                )
            if prefix == last:
                spans.append((start, i + 1, label))
                start = -1
        else:
            if inside:
                raise TagError(
                    f"tag {tag!r} follows an unfinished {label} entity "
                    f"(begun at token {start + 1}); {scheme} ends entities with {last}-",
                    i,
                )
            if prefix == unit:
                spans.append((i, i + 1, typ))
            elif prefix == "B":
                start, label = i, typ
    if start >= 0:
        raise TagError(
            f"the sentence ends inside a {label} entity begun at token {start + 1} "
            f"({scheme} ends entities with {last}-)",
            len(tags) - 1,
        )
    return spans


def spans_to_tags(spans: Iterable[Tuple[int, int, str]], length: int, scheme: str) -> List[str]:
    """Encode (start, end, label) spans as BIO or BILUO tags."""
    if scheme not in MODEL_SCHEMES:
        raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
    tags = [OUTSIDE] * length
    for start, end, label in spans:
        if scheme == "BILUO" and end - start == 1:
            tags[start] = f"U-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
        if scheme == "BILUO":
            tags[end - 1] = f"L-{label}"
    return tags


def build_tags(labels: Iterable[str], scheme: str) -> List[str]:
    """All tags for the entity labels under a model scheme, O first, then the
    labels in sorted order: BIO gives B-X, I-X; BILUO gives B-X, I-X, L-X, U-X."""
    if scheme not in MODEL_SCHEMES:
        raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
    prefixes = "BI" if scheme == "BIO" else "BILU"
    tags = [OUTSIDE]
    for label in sorted(set(labels)):
        tags.extend(f"{p}-{label}" for p in prefixes)
    return tags


def biluo_to_scheme(biluo: Sequence[Optional[str]], scheme: str) -> List[Optional[str]]:
    """Map spaCy's aligned BILUO tags (from Example.get_aligned_ner) to a model
    scheme, keeping None and '-' (missing) as None."""
    out: List[Optional[str]] = []
    for tag in biluo:
        if tag is None or tag == "-" or tag == "":
            out.append(None)
        elif scheme == "BILUO" or tag == OUTSIDE:
            out.append(tag)
        else:
            prefix, label = tag.split("-", 1)
            out.append(("B-" if prefix in "BU" else "I-") + label)
    return out


# -- what the model schemes forbid --------------------------------------------------------------


class SchemeRules(NamedTuple):
    """What a model scheme allows, per tag of a tag list (K tags), as plain booleans.

    transitions: [K][K], True where tag j may follow tag i. BIO: I-X only after
        B-X or I-X. BILUO: after B-X or I-X only I-X or L-X; I-X and L-X only
        after B-X or I-X.
    first: [K], the tags that may begin a sequence (or a sentence: no entity
        crosses a sentence start). BIO: not I-X; BILUO: not I-X or L-X.
    last: [K], the tags that may end a sequence (or the sentence before a
        sentence start). BIO: all; BILUO: not B-X or I-X.
    outside: [K], the tags that are outside every entity (O).
    continues: [K], the tags that continue an entity begun before them (I-X, L-X).
    """

    transitions: List[List[bool]]
    first: List[bool]
    last: List[bool]
    outside: List[bool]
    continues: List[bool]


def scheme_rules(tags: Sequence[str], scheme: str) -> SchemeRules:
    """The rules of ``scheme`` ("BIO" or "BILUO") over ``tags``.

    tags (Sequence[str]): the tag list, e.g. from `build_tags`.
    scheme (str): "BIO" or "BILUO".
    RETURNS (SchemeRules): what each tag allows. Raises ValueError for a tag
        of another scheme."""
    if scheme not in MODEL_SCHEMES:
        raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
    parsed = [split_tag(t) for t in tags]
    valid = set("BI") if scheme == "BIO" else set("BILU")
    for tag, (prefix, _) in zip(tags, parsed):
        if prefix != OUTSIDE and prefix not in valid:
            raise ValueError(f"tag {tag!r} does not belong to the {scheme} scheme")
    transitions = []
    for pi, li in parsed:
        open_i = pi in ("B", "I")  # inside an unfinished entity
        row = []
        for pj, lj in parsed:
            if scheme == "BIO":
                row.append(pj != "I" or (open_i and li == lj))
            elif open_i:
                row.append(pj in ("I", "L") and li == lj)
            else:
                row.append(pj in (OUTSIDE, "B", "U"))
        transitions.append(row)
    return SchemeRules(
        transitions=transitions,
        first=[p in (OUTSIDE, "B", "U") for p, _ in parsed],
        last=[p in (OUTSIDE, "L", "U") if scheme == "BILUO" else True for p, _ in parsed],
        outside=[p == OUTSIDE for p, _ in parsed],
        continues=[p in ("I", "L") for p, _ in parsed],
    )


def entity_labels(tags: Sequence[str]) -> List[str]:
    """The entity labels of a tag list, in the order of their B- tags."""
    return [label for prefix, label in map(split_tag, tags) if prefix == "B"]


def entity_tag_indices(tags: Sequence[str], scheme: str) -> Tuple[List[int], ...]:
    """The tag indices of each label's B- and I- tags (and for BILUO L- and U-),
    labels in the order of `entity_labels`: (begin, inside) or (begin, inside,
    last, unit), each a list with one index per label."""
    index = {t: i for i, t in enumerate(tags)}
    labels = entity_labels(tags)
    prefixes = "BI" if scheme == "BIO" else "BILU"
    try:
        return tuple([index[f"{prefix}-{x}"] for x in labels] for prefix in prefixes)
    except KeyError as err:
        raise ValueError(f"the tag list lacks {err.args[0]!r} for the {scheme} scheme: {list(tags)}") from None


def span_tags(label: str, length: int, scheme: str) -> List[str]:
    """The tags of one entity of ``length`` tokens under a model scheme."""
    if scheme == "BIO":
        return [f"B-{label}"] + [f"I-{label}"] * (length - 1)
    if length == 1:
        return [f"U-{label}"]
    return [f"B-{label}"] + [f"I-{label}"] * (length - 2) + [f"L-{label}"]
