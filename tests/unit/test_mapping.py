"""app/destinations/mapping.py: `$.path` references read from envelopes, tolerant of odd shapes."""

from __future__ import annotations

from collections import OrderedDict

from app.destinations.mapping import get_path, resolve, resolve_present

DOC = {"a": {"b": [{"c": 1}, {"c": 2}], "0": "zero", "n": None, "e": ""},
       "m": OrderedDict(x={"y": "deep"}), "s": "text"}


def test_paths_read_dicts_lists_and_other_mappings():
    assert get_path(DOC, "a.b.1.c") == 2
    assert get_path(DOC, "a.b.-1.c") == 2
    assert get_path(DOC, "a.b.0") == {"c": 1}
    assert get_path(DOC, "a.0") == "zero"  # a digit is a key in a mapping
    assert get_path(DOC, "m.x.y") == "deep"


def test_missing_steps_give_the_default():
    assert get_path(DOC, "a.b.2.c") is None
    assert get_path(DOC, "a.b.-3", "d") == "d"
    assert get_path(DOC, "a.b.x", "d") == "d"  # not an index
    assert get_path(DOC, "s.x", "d") == "d"  # text has no fields
    assert get_path(DOC, "a.n") is None
    assert get_path(DOC, "a.n.x", "d") == "d"
    assert get_path(None, "a", "d") == "d"
    assert get_path(DOC, "", "d") == "d"


def test_the_same_path_reads_differently_shaped_documents():
    assert get_path({"k": [5, 6]}, "k.1") == 6
    assert get_path({"k": {"1": 7}}, "k.1") == 7


def test_resolve_and_resolve_present():
    spec = {"x": "$.a.b.0.c", "lit": "plain", "deep": {"y": ["$.s", 3]}, "gone": "$.nope",
            "empty": "$.a.e"}
    assert resolve(spec, DOC) == {"x": 1, "lit": "plain", "deep": {"y": ["text", 3]},
                                  "gone": None, "empty": ""}
    assert resolve_present(spec, DOC) == {"x": 1, "lit": "plain", "deep": {"y": ["text", 3]}}
