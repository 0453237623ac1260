"""Keep the cyclic garbage collector off the worker's long-lived heap.

Python's full (generation 2) collection walks every tracked object. In a worker that is every
object of Faust, aiokafka, aiohttp and the relay, created at start-up and alive until the end:
with the RocksDB store each full collection took 55-67 ms, 16-17 of them 1.25-1.31 s of one
bench run, each a pause of every stage at once. `gc.freeze()` moves what exists into a permanent
generation no collection walks; what is allocated later is collected as before (full
collections after the freeze: 8-40 ms). Freezing after each rebalance, once table recovery is
done, takes in what start-up and recovery built. Frozen objects are still freed by reference
counting; only a reference cycle among them would outlive its use, which is why this is not
repeated on a timer: objects in flight at that moment would be frozen too.

The young generation is collected every YOUNG_THRESHOLD allocations instead of Python's 700.
A worker allocates millions of short-lived dicts and lists (parsed records, envelopes,
deliveries), nearly all freed by reference counting before any collection could matter, yet at
700 the collector ran ~2,800 times in a 20,000-event `relay bench` run: 1.45 s of CPU, about a
tenth of the worker's. At 20,000 it ran 40 times (0.28 s); the resident set did not move
(240 MB against 238). The older generations wait longer too, so full collections stay rare.
"""

from __future__ import annotations

import gc
from typing import Any

import faust

from app import metrics

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (50, 50)


def freeze_long_lived() -> int:
    """Collect what is garbage now, freeze the rest; the number of frozen objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_less_often() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def install(app: faust.App) -> None:
    metrics.GC_FROZEN.set_function(gc.get_freeze_count)
    collect_less_often()

    @app.on_rebalance_complete.connect
    async def freeze_after_rebalance(sender: Any, **_: Any) -> None:
        freeze_long_lived()
