"""A linear-chain CRF in pure PyTorch: exact, batched, constrained (no spaCy imports).

- `linear_chain.LinearChainCRF`: the module (parameters, constraints, the API);
- `forward_backward`: the one forward-backward, shared by the loss, the
  marginals and the entity probabilities;
- `objective`: the NLL / log Z with its hand-written backward;
- `viterbi`: the best path (two decoders) and the k best;
- `entities`: exact entity probabilities and candidates.
"""

from .entities import EntityTags, SpanTerms
from .forward_backward import NEG_INF
from .linear_chain import LinearChainCRF, entity_tags, transition_constraints

__all__ = ["LinearChainCRF", "EntityTags", "SpanTerms", "NEG_INF", "entity_tags", "transition_constraints"]
