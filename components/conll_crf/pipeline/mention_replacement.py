"""Mention replacement (Dai & Adel 2020): train on the context around a name, not on the name.

`conll_crf.mention_replacement_augmenter.v1` replaces, in an example, each gold
entity mention with probability `level` by another mention of the same label
drawn from the mentions the augmenter has seen so far in the training stream
(after the first epoch: every training mention). The model then meets known
contexts with names it has not memorised with them, which is what names never
seen in training look like. The new reference keeps the sentence starts (a
mention never crosses one) and the other entities; the example's predicted doc
has the new reference's tokens, and `then` (e.g. the raw-text augmenter)
augments the result further.

    [corpora.train.augmenter]
    @augmenters = "conll_crf.mention_replacement_augmenter.v1"
    level = 0.3

    [corpora.train.augmenter.then]
    @augmenters = "conll_crf.raw_text_augmenter.v1"
    level = 0.5

Draws from `random`, which spaCy seeds with the training seed.
"""

import random
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

Mention = Tuple[str, ...]


class MentionPool:
    """The mentions seen so far, by label, each once, in the order first seen."""

    def __init__(self) -> None:
        self.by_label: Dict[str, List[Mention]] = {}
        self._seen: Set[Tuple[str, Mention]] = set()

    def add(self, doc: Doc) -> None:
        """Add the entities of `doc`."""
        for ent in doc.ents:
            key = (ent.label_, tuple(t.text for t in ent))
            if key not in self._seen:
                self._seen.add(key)
                self.by_label.setdefault(ent.label_, []).append(key[1])

    def draw(self, label: str) -> Optional[Mention]:
        """A random mention of `label`, or None when there is none yet."""
        mentions = self.by_label.get(label)
        return random.choice(mentions) if mentions else None


@registry.augmenters("conll_crf.mention_replacement_augmenter.v1")
def create_mention_replacement_augmenter(
    level: float, then: Optional[Callable[[Language, Example], Iterator[Example]]] = None
) -> Callable[[Language, Example], Iterator[Example]]:
    """`level`: the probability that each mention is replaced. `then`: an augmenter applied to the result."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"[mention_replacement_augmenter] level must be in [0, 1], got {level}")
    pool = MentionPool()

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        pool.add(example.reference)
        out = replace_mentions(nlp, example, pool, level)
        if then is None:
            yield out
        else:
            yield from then(nlp, out)

    return augment


def replace_mentions(nlp: Language, example: Example, pool: MentionPool, level: float) -> Example:
    """`example` with each entity replaced with probability `level` by a pool mention of its label."""
    ref = example.reference
    if level == 0.0 or not ref.ents:
        return example
    choice = {}
    for ent in ref.ents:
        if random.random() < level:
            other = pool.draw(ent.label_)
            if other is not None and other != tuple(t.text for t in ent):
                choice[ent.start] = (ent, other)
    if not choice:
        return example
    has_starts = ref.has_annotation("SENT_START")
    words, spaces, starts, ents = [], [], [], []
    i = 0
    while i < len(ref):
        if i in choice:
            ent, other = choice[i]
            begin = len(words)
            words.extend(other)
            spaces.extend([True] * (len(other) - 1) + [bool(ref[ent.end - 1].whitespace_)])
            starts.extend([ref[i].is_sent_start] + [False] * (len(other) - 1))
            ents.append((begin, len(words), ent.label_))
            i = ent.end
            continue
        token = ref[i]
        if token.ent_iob_ == "B":
            span = next(e for e in ref.ents if e.start == i)
            ents.append((len(words), len(words) + len(span), span.label_))
        words.append(token.text)
        spaces.append(bool(token.whitespace_))
        starts.append(token.is_sent_start)
        i += 1
    new = Doc(nlp.vocab, words=words, spaces=spaces, sent_starts=starts if has_starts else None)
    new.ents = [Span(new, s, e, label=label) for s, e, label in ents]
    return Example(Doc(nlp.vocab, words=words, spaces=spaces), new)
