import numpy
import pytest

from conll_crf.pipeline.sorted_keys import find_sorted


def test_find_sorted_marks_present_and_absent_keys_in_any_shape():
    keys = numpy.array([3, 10, 2**63 + 5, 2**64 - 1], dtype="uint64")
    values = numpy.array([[10, 0], [11, 2**63 + 5], [2**64 - 1, 2**64 - 2]], dtype="uint64")
    at, found = find_sorted(numpy, keys, values)
    assert at.shape == found.shape == values.shape
    assert found.tolist() == [[True, False], [False, True], [True, False]]
    # where found, `at` is the key's row; elsewhere it is still a valid index into keys
    assert (keys[at][found] == values[found]).all()
    assert at.min() >= 0 and at.max() < len(keys)


def test_find_sorted_agrees_with_a_set_on_random_64_bit_keys():
    rng = numpy.random.default_rng(0)
    keys = numpy.unique(rng.integers(0, 2**64 - 1, size=500, dtype="uint64"))
    values = numpy.concatenate([keys[::3], rng.integers(0, 2**64 - 1, size=300, dtype="uint64")])
    at, found = find_sorted(numpy, keys, values)
    assert found.tolist() == [v in set(keys.tolist()) for v in values.tolist()]
    assert (at[found] == numpy.searchsorted(keys, values[found])).all()


def test_find_sorted_refuses_an_empty_table():
    with pytest.raises(ValueError, match="no keys"):
        find_sorted(numpy, numpy.zeros(0, dtype="uint64"), numpy.array([1], dtype="uint64"))
