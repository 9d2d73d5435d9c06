"""Lookup in a sorted array of uint64 keys, on the array's device.

The word table's keys (stacked_vectors.py) and the known words
(word_dropout.py) are sorted uint64 arrays saved with the weights. A binary
search over them with `xp.searchsorted` finds a whole batch's words on the
device: no host round trip per batch and no Python dict of hundreds of
thousands of keys."""

from typing import Any, Tuple


def find_sorted(xp: Any, keys: Any, values: Any) -> Tuple[Any, Any]:
    """(at, found) for `values` (an integer array of any shape, keys' dtype): the index of each value in the
    sorted, non-empty `keys`, and whether it is there. Where it is not, `at` is still a valid index (the
    insertion point, clipped to the last key), so `table[at]` can be gathered and masked with `found`."""
    if not len(keys):
        raise ValueError("find_sorted: no keys to search (an empty table has no rows to gather)")
    # as the keys' dtype: numpy would compare uint64 keys with int64 values as float64, and 64-bit hashes that
    # differ below 2**-53 of their size would match
    values = xp.asarray(values, dtype=keys.dtype)
    at = xp.minimum(xp.searchsorted(keys, values), len(keys) - 1)
    return at, keys[at] == values
