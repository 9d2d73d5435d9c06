"""`LinearChainCRF`: a linear-chain conditional random field in PyTorch: exact, batched, constrained.

Shapes: B batch, T time (padded length), K tags. Emissions are ``[B, T, K]``,
masks ``[B, T]`` bool and right-padded (True for a sequence's positions, then
False). A sequence of length 0 is allowed: its log partition is 0 and its path
is empty.

Constraints (from->to transitions, allowed first tags, allowed last tags) are
buffers, not parameters: a disallowed transition is -inf in every computation,
so it is excluded from the partition function, the marginals and every decode,
and no amount of training can make it possible.

The module holds the parameters and the API; the algorithms live beside it:
forward_backward.py (the one forward-backward, shared by the loss, the
marginals and the entity probabilities), objective.py (the NLL with its
hand-written backward), viterbi.py (best and n-best paths) and entities.py
(entity probabilities and candidates). Everything stays on the emissions'
device; the one host synchronisation per training call happens before the time
loop, and decoding has none.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..tags import entity_labels, entity_tag_indices, scheme_rules
from . import entities, viterbi
from .entities import EntityTags, SpanTerms
from .forward_backward import NEG_INF
from .objective import CRFObjective, constrained_scores, raise_for_bad_gold


def transition_constraints(tags: Sequence[str], scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """The constraints of ``scheme`` ("BIO" or "BILUO", see `tags.scheme_rules`) over ``tags``.

    RETURNS (Tuple[Tensor, Tensor, Tensor]): allowed [K, K] bool (from tag i to
        tag j), allowed_start [K] bool and allowed_end [K] bool."""
    rules = scheme_rules(tags, scheme)
    k = len(tags)
    allowed = torch.tensor(rules.transitions, dtype=torch.bool).view(k, k)
    return allowed, torch.tensor(rules.first, dtype=torch.bool), torch.tensor(rules.last, dtype=torch.bool)


def entity_tags(tags: Sequence[str], scheme: str) -> EntityTags:
    """The tag indices of each label's B-, I- (and for BILUO L-, U-) tags, as tensors."""
    return EntityTags(*(torch.tensor(ids, dtype=torch.long) for ids in entity_tag_indices(tags, scheme)))


def _check(emissions: Tensor, mask: Tensor, num_tags: int) -> None:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be [B, T, K], got shape {tuple(emissions.shape)}")
    if emissions.size(2) != num_tags:
        raise ValueError(f"emissions have {emissions.size(2)} tags, the CRF has {num_tags}")
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask must be [B, T] = {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")


class LinearChainCRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    Parameters: ``transitions`` [K, K] (score of moving from tag i to tag j),
    ``start_transitions`` [K], ``end_transitions`` [K]. Optional constraints:
    ``allowed`` [K, K] bool, ``allowed_start`` [K] bool, ``allowed_end`` [K]
    bool (see `transition_constraints` and `from_tags`).
    """

    def __init__(
        self,
        num_tags: int,
        allowed: Optional[Tensor] = None,
        allowed_start: Optional[Tensor] = None,
        allowed_end: Optional[Tensor] = None,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-init_scale, init_scale))
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-init_scale, init_scale))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-init_scale, init_scale))
        ones = torch.ones
        self.register_buffer(
            "allowed", (ones(num_tags, num_tags, dtype=torch.bool) if allowed is None else allowed.bool()).clone()
        )
        self.register_buffer(
            "allowed_start",
            (ones(num_tags, dtype=torch.bool) if allowed_start is None else allowed_start.bool()).clone(),
        )
        self.register_buffer(
            "allowed_end", (ones(num_tags, dtype=torch.bool) if allowed_end is None else allowed_end.bool()).clone()
        )
        if (
            self.allowed.shape != (num_tags, num_tags)
            or self.allowed_start.shape != (num_tags,)
            or self.allowed_end.shape != (num_tags,)
        ):
            raise ValueError("constraint shapes must be [K, K], [K] and [K]")

    @classmethod
    def from_tags(cls, tags: Sequence[str], scheme: str = "BIO", **kwargs) -> "LinearChainCRF":
        """A CRF constrained to the valid sequences of ``scheme`` over ``tags``;
        it knows its entity labels (`labels`), so the entity methods need no tag indices."""
        allowed, start, end = transition_constraints(tags, scheme)
        crf = cls(len(tags), allowed, start, end, **kwargs)
        crf.set_entity_tags(entity_tags(tags, scheme))
        crf.labels = entity_labels(tags)
        return crf

    def set_entity_tags(self, ents: EntityTags) -> None:
        """The tag indices of each entity label (non-persistent buffers: they follow the device)."""
        for name in EntityTags._fields:
            value = getattr(ents, name)
            self.register_buffer(f"_ent_{name}", None if value is None else value.clone(), persistent=False)

    def _entity_tags(self, ents: Optional[EntityTags]) -> EntityTags:
        if ents is not None:
            return ents
        if getattr(self, "_ent_begin", None) is None:
            raise ValueError("this CRF has no entity tags: build it with from_tags or pass entity_tags")
        return EntityTags(*(getattr(self, f"_ent_{n}") for n in EntityTags._fields))

    def extra_repr(self) -> str:
        """The tag count, and whether any constraint applies (torch's module repr)."""
        unconstrained = bool(self.allowed.all() and self.allowed_start.all() and self.allowed_end.all())
        return f"num_tags={self.num_tags}, constrained={not unconstrained}"

    # -- helpers --------------------------------------------------------------------------

    def _compute_dtype(self, emissions: Tensor) -> torch.dtype:
        return torch.promote_types(emissions.dtype, torch.float32) if emissions.is_floating_point() else torch.float32

    def _params(self, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """Transition scores with disallowed entries at -inf, in ``dtype``."""
        return constrained_scores(
            self.transitions.to(dtype),
            self.start_transitions.to(dtype),
            self.end_transitions.to(dtype),
            self.allowed,
            self.allowed_start,
            self.allowed_end,
        )

    def _checked_mask(self, emissions: Tensor, mask: Optional[Tensor]) -> Tensor:
        """``mask``, or all True when None, after checking both shapes."""
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        _check(emissions, mask, self.num_tags)
        return mask

    def _prepare(self, emissions: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        mask = self._checked_mask(emissions, mask)
        em = emissions.to(self._compute_dtype(emissions))
        em = em.masked_fill(~mask.unsqueeze(2), 0.0)
        return em, mask

    # -- API ------------------------------------------------------------------------------

    def log_partition(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log Z [B] over all (allowed) paths; 0 for empty sequences."""
        return self._objective(emissions, mask, None)

    def _objective(self, emissions: Tensor, mask: Optional[Tensor], tags: Optional[Tensor]) -> Tensor:
        mask = self._checked_mask(emissions, mask)
        B, T, K = emissions.shape
        if tags is not None and tags.shape != (B, T):
            raise ValueError(f"tags must be [B, T] = {(B, T)}, got {tuple(tags.shape)}")
        if T == 0:
            return emissions.new_zeros(B, dtype=self._compute_dtype(emissions))
        return CRFObjective.apply(
            emissions,
            self.transitions,
            self.start_transitions,
            self.end_transitions,
            self.allowed,
            self.allowed_start,
            self.allowed_end,
            mask,
            None if tags is None else tags.long(),
        )

    def score(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None, check: bool = True) -> Tensor:
        """Score [B] of the tag paths ``tags`` [B, T] (long; values at padding ignored).
        With ``check`` a tag out of range, or a path through a disallowed
        transition, first or last tag, raises ValueError (one host sync)."""
        em, mask = self._prepare(emissions, mask)
        return self._score(em, tags, mask, self._params(em.dtype), check)

    def _score(self, em: Tensor, tags: Tensor, mask: Tensor, params, check: bool) -> Tensor:
        B, T, K = em.shape
        if tags.shape != (B, T):
            raise ValueError(f"tags must be [B, T] = {(B, T)}, got {tuple(tags.shape)}")
        if T == 0:
            return em.new_zeros(B)
        trans, start, end = params
        tags = tags.long().masked_fill(~mask, 0)
        out_of_range = (tags < 0) | (tags >= K)
        tags = tags.clamp(0, K - 1)
        lengths = mask.sum(dim=1)
        nonempty = lengths > 0
        s = em.gather(2, tags.unsqueeze(2)).squeeze(2).sum(1)  # padding emissions are 0
        s = s + torch.where(nonempty, start[tags[:, 0]], 0.0)
        if T > 1:
            s = s + torch.where(mask[:, 1:], trans[tags[:, :-1], tags[:, 1:]], 0.0).sum(1)
        last_tag = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        s = s + torch.where(nonempty, end[last_tag], 0.0)
        if check:
            bad_range, bad_path = torch.stack([out_of_range.any(1), torch.isinf(s)]).cpu().unbind(0)  # the one sync
            raise_for_bad_gold(bad_range, bad_path, K)
        return s

    def nll(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood [B] of the gold paths ``tags`` [B, T]: log Z - score.
        A tag out of range, or a gold path through a disallowed transition,
        first or last tag, raises ValueError."""
        return self._objective(emissions, mask, tags)

    def partial_nll(self, emissions: Tensor, allowed_tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """NLL [B] of partially annotated sequences: ``allowed_tags`` [B, T, K] bool
        marks the tags the annotation admits at each position (all K where the
        gold tag is unknown). Equals `nll` when exactly one tag is allowed everywhere."""
        em, mask = self._prepare(emissions, mask)
        if allowed_tags.shape != em.shape:
            raise ValueError(f"allowed_tags must be [B, T, K] = {tuple(em.shape)}, got {tuple(allowed_tags.shape)}")
        clamped = emissions.masked_fill(~allowed_tags.bool(), NEG_INF)
        log_z_gold = self.log_partition(clamped, mask)
        if bool(torch.isinf(log_z_gold).any()):
            bad = torch.nonzero(torch.isinf(log_z_gold)).flatten().tolist()
            raise ValueError(f"the annotation of sequence(s) {bad} admits no path the CRF's constraints allow")
        return self.log_partition(emissions, mask) - log_z_gold

    def marginals(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Posterior probability [B, T, K] of each tag at each position (0 on
        padding): the gradient of log Z w.r.t. the emissions."""
        with torch.enable_grad():
            em = emissions.detach().to(self._compute_dtype(emissions)).requires_grad_(True)
            if em.size(1) == 0:
                return em.detach().new_zeros(em.shape)
            (marg,) = torch.autograd.grad(self.log_partition(em, mask).sum(), em)
        return marg

    def viterbi(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Best path per sequence: (scores [B], paths [B, T] long, -1 past each length).
        Empty sequences score 0. Ties go to the lower tag index.

        See viterbi.py: `viterbi_meet_in_middle` (on GPU, and for small batches
        on CPU) and `viterbi_stepwise` (large batches on CPU, where storing every
        step's candidate scores costs more memory traffic than it saves). No
        Python loop runs per sequence and no host sync happens."""
        mask = self._checked_mask(emissions, mask)
        with torch.inference_mode():
            dtype = self._compute_dtype(emissions)
            scores, paths = viterbi.viterbi(emissions.to(dtype), mask, *self._params(dtype))
        return scores.clone(), paths.clone()  # ordinary tensors again, usable with autograd

    @torch.no_grad()
    def nbest(self, emissions: Tensor, mask: Optional[Tensor] = None, k: int = 5) -> Tuple[Tensor, Tensor]:
        """The k best paths, best first: (scores [B, k], paths [B, k, T]), paths -1
        past each length. Where fewer than k allowed paths exist the rest score
        -inf and their paths are -1 (see `viterbi.nbest`)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        em, mask = self._prepare(emissions, mask)
        return viterbi.nbest(em, mask, *self._params(em.dtype), k)

    # -- entities --------------------------------------------------------------------------

    def span_terms(
        self,
        emissions: Tensor,
        mask: Optional[Tensor] = None,
        temperature: float = 1.0,
        ents: Optional[EntityTags] = None,
    ) -> SpanTerms:
        """The forward-backward quantities the entity methods share (float64,
        on the emissions' device). ``temperature`` divides the emissions and
        the transition, start and end scores (constraints stay -inf)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        em, mask = self._prepare(emissions, mask)
        em = em.detach().to(torch.float64) / temperature
        trans, start, end = (p.detach() / temperature for p in self._params(torch.float64))
        return SpanTerms(em, trans, start, end, torch.add(mask.sum(dim=1), -1), self._entity_tags(ents))

    @torch.no_grad()
    def entity_probabilities(
        self,
        emissions: Tensor,
        spans: Tensor,
        mask: Optional[Tensor] = None,
        temperature: float = 1.0,
        terms: Optional[SpanTerms] = None,
        ents: Optional[EntityTags] = None,
    ) -> Tensor:
        """Exact posterior probability [N] (float64) that each entity ``spans``
        [N, 4] = (sequence, start, end exclusive, label index) is in the tag
        path, under the constrained CRF. Spans out of range raise ValueError.
        ``terms`` (from `span_terms`) saves recomputing them."""
        terms = terms or self.span_terms(emissions, mask, temperature, ents)
        return entities.entity_probabilities(terms, spans)

    @torch.no_grad()
    def entity_candidates(
        self,
        emissions: Tensor,
        mask: Optional[Tensor] = None,
        threshold: float = 0.1,
        max_length: Optional[int] = None,
        temperature: float = 1.0,
        terms: Optional[SpanTerms] = None,
        ents: Optional[EntityTags] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Every entity whose posterior probability is at least ``threshold``:
        (spans [N, 4] long = (sequence, start, end exclusive, label index),
        probabilities [N] float64), sorted by sequence, start, end, label; no
        span at or above the threshold is missed, whatever its length (see
        `entities.entity_candidates`). ``max_length`` caps the lengths (None:
        no cap); threshold 0 lists every possible span."""
        terms = terms or self.span_terms(emissions, mask, temperature, ents)
        return entities.entity_candidates(terms, threshold, max_length)

    @torch.no_grad()
    def path_entities(self, paths: Tensor, ents: Optional[EntityTags] = None) -> Tensor:
        """The entities [N, 4] = (sequence, start, end exclusive, label index)
        of valid tag paths [B, T] (-1 past each length), sorted; decoded on
        the paths' device with no Python loop over sequences or positions."""
        return entities.path_entities(paths, self._entity_tags(ents), self.num_tags)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The NLL [B] (so ``crf(emissions, tags, mask).sum()`` is a loss)."""
        return self.nll(emissions, tags, mask)
