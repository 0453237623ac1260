"""app/heap.py: what exists is frozen, and the count says so."""

from __future__ import annotations

import gc

from app.heap import freeze_long_lived


def test_freezing_moves_live_objects_out_of_the_collectors_reach():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    kept = [{"n": n} for n in range(1000)]
    try:
        frozen = freeze_long_lived()
        assert frozen == gc.get_freeze_count()
        assert frozen >= len(kept)
        walked = {id(obj) for generation in range(3) for obj in gc.get_objects(generation)}
        assert not any(id(obj) in walked for obj in kept)
    finally:
        gc.unfreeze()


def test_a_worker_collects_the_young_generation_less_often():
    from app.heap import YOUNG_THRESHOLD, collect_less_often

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # Python's default
        collect_less_often()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
