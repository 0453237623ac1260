"""Which changelog partitions the fast loader takes over from Faust's recovery."""

from app.fast_recovery import partitions_to_load


def test_only_partitions_far_enough_behind_are_loaded():
    offsets = {"a": 10, "b": None, "c": 95, "d": -1}
    highs = {"a": 200, "b": 49, "c": 100, "d": -1}
    assert partitions_to_load(offsets, offsets, highs, min_behind=50) == {"a": 10, "b": -1}


def test_a_partition_without_a_highwater_is_left_to_faust():
    assert partitions_to_load(["x"], {"x": None}, {}, min_behind=1) == {}


def test_an_empty_changelog_is_never_loaded():
    assert partitions_to_load(["x"], {"x": -1}, {"x": -1}, min_behind=1) == {}
