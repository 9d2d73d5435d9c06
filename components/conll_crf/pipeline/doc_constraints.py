"""Per-token tag constraints that a Doc imposes on the CRF.

The CRF's own constraints (the tag scheme) are transitions; what a particular
Doc adds is a set of allowed tags per token, applied as -inf emissions, so
Viterbi decoding, the partition function, the marginals and the entity
probabilities all respect it exactly. Three sources:

* whitespace tokens can only be O;
* sentence boundaries (``token.is_sent_start`` set by the converter, a
  sentencizer, a senter or a parser; tokens whose boundary is unknown are
  free): no entity crosses one. BIO: the first token of a sentence cannot be
  I-X. BILUO: it cannot be I-X or L-X, and the token before it cannot be B-X
  or I-X (its entity has to end there);
* preset entities (``doc.ents`` set before the component, e.g. by an
  entity_ruler): their tokens are fixed to the preset's tags, so the CRF fills
  in the rest around them and never overlaps them; the token after a preset
  entity cannot continue it. A preset whose label the component does not know
  fixes its tokens to O (the CRF only sees that they are taken).

`doc_constraints` returns a bool array [n_tokens, K] (True: allowed).
`relax_for_gold` makes a training constraint agree with the gold annotation
where the two disagree at a token (the gold tag is never made impossible).
"""

from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy
from spacy.attrs import ENT_IOB, IS_SPACE, SENT_START
from spacy.tokens import Doc

from ..tags import scheme_rules, span_tags


class TagIndex:
    """Per-tag masks [K] of one tag list and scheme, from `tags.scheme_rules`
    (computed once per tag set): the tags outside every entity, those that
    cannot begin a sentence or end the one before a sentence start (the rules
    that bound a whole sequence, applied at each known sentence boundary), and
    those that continue an entity."""

    def __init__(self, tags: Sequence[str], scheme: str) -> None:
        self.tags = list(tags)
        self.scheme = scheme
        rules = scheme_rules(self.tags, scheme)
        self.index: Dict[str, int] = {t: i for i, t in enumerate(self.tags)}
        self.outside = numpy.array(rules.outside)
        self.cannot_start_sentence = ~numpy.array(rules.first)
        self.cannot_end_sentence = ~numpy.array(rules.last)
        self.continues = numpy.array(rules.continues)

    def entity_tags(self, label: str, length: int) -> List[int]:
        """Tag indices of an entity of ``length`` tokens, or [] for an unknown label."""
        if f"B-{label}" not in self.index:
            return []
        return [self.index[name] for name in span_tags(label, length, self.scheme)]


def doc_constraints(
    doc: Doc,
    tag_index: TagIndex,
    sentences: bool = True,
    presets: bool = True,
    sent_starts: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    """The allowed tags [len(doc), K] bool of ``doc``: whitespace, sentence
    boundaries (when ``sentences``) and preset entities (when ``presets``).
    ``sent_starts`` [len(doc)] (1 start, -1 not, 0 unknown) replaces the doc's
    own sentence starts (training aligns the gold's onto a predicted doc)."""
    n, K = len(doc), len(tag_index.tags)
    allowed = numpy.ones((n, K), dtype=bool)
    if n == 0:
        return allowed
    space, sent, iob = doc.to_array([IS_SPACE, SENT_START, ENT_IOB]).T
    allowed[space.astype(bool)] = tag_index.outside
    if sentences and n > 1:
        values = sent if sent_starts is None else numpy.asarray(sent_starts)
        starts = numpy.flatnonzero(values[1:] == 1) + 1
        if len(starts):
            allowed[starts] &= ~tag_index.cannot_start_sentence
            allowed[starts - 1] &= ~tag_index.cannot_end_sentence
    if presets and ((iob == 1) | (iob == 3)).any():  # any preset entity (I or B)
        for ent in doc.ents:
            ids = tag_index.entity_tags(ent.label_, len(ent))
            rows = allowed[ent.start : ent.end]
            rows[:] = False
            if ids:
                rows[numpy.arange(len(ent)), ids] = True
            else:
                rows[:, tag_index.outside] = True
            if ent.end < n:  # (a preset starting there is fixed to B-/U- when its turn comes)
                allowed[ent.end] &= ~tag_index.continues
    return allowed


def relax_for_gold(constraints: numpy.ndarray, targets: numpy.ndarray) -> numpy.ndarray:
    """``constraints`` [n, K] with every row that admits none of the gold's
    tags (``targets`` [n, K], nonzero where the annotation admits a tag)
    opened up entirely: the gold is never made impossible by a constraint."""
    conflict = ~(constraints & (targets > 0)).any(axis=1)
    if conflict.any():
        constraints = constraints.copy()
        constraints[conflict] = True
    return constraints


@lru_cache(maxsize=16)
def cached_tag_index(tags: tuple, scheme: str) -> TagIndex:
    """The TagIndex of a tag set, built once per tag set (not per batch)."""
    return TagIndex(list(tags), scheme)
