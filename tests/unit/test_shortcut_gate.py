"""When ingress may resolve identities itself (app/agents/shortcut.py): pure bookkeeping."""

from app.agents.shortcut import Gate
from app.partitioner import kafka_hash


def owning(*partitions: int) -> Gate:
    """A gate of 4 partitions, `partitions` of them this worker's."""
    gate = Gate(4)
    gate.assign(set(partitions))
    return gate


def opened(partition: int = 1, offset: int = 10) -> Gate:
    gate = owning(0, 1, 2, 3)
    generation = gate.sending(partition)
    gate.acked(generation, partition, partition, offset)
    gate.processed(partition, offset)
    return gate


def test_closed_until_the_identity_agent_passed_our_own_envelope():
    gate = owning(1)
    assert not gate.allows(1)
    generation = gate.sending(1)
    gate.processed(1, 50)  # someone else's record, while ours is not yet appended
    assert not gate.allows(1)
    gate.acked(generation, 1, 1, 51)
    assert not gate.allows(1)
    gate.processed(1, 51)
    assert gate.allows(1)


def test_processed_before_the_acknowledgement_arrives_opens_on_the_ack():
    gate = owning(2)
    generation = gate.sending(2)
    gate.processed(2, 7)
    gate.acked(generation, 2, 2, 7)
    assert gate.allows(2)


def test_an_envelope_still_unacknowledged_keeps_it_closed():
    gate = owning(1)
    first, second = gate.sending(1), gate.sending(1)
    gate.acked(first, 1, 1, 3)
    gate.processed(1, 3)
    assert not gate.allows(1)
    gate.acked(second, 1, 1, 4)
    assert not gate.allows(1)
    gate.processed(1, 4)
    assert gate.allows(1)


def test_a_partition_this_worker_does_not_own_never_opens():
    gate = owning(0)
    generation = gate.sending(3)
    gate.acked(generation, 3, 3, 0)
    gate.processed(3, 5)
    assert not gate.allows(3)


def test_a_rebalance_closes_everything_and_old_acknowledgements_prove_nothing():
    gate = owning(1)
    old = gate.sending(1)
    gate.reset()
    gate.assign({1})
    gate.acked(old, 1, 1, 9)  # sent before the rebalance: another worker may have appended since
    gate.processed(1, 20)
    assert not gate.allows(1)
    new = gate.sending(1)
    gate.acked(new, 1, 1, 21)
    gate.processed(1, 21)
    assert gate.allows(1)

    gate = opened()
    gate.reset()
    gate.assign({0, 1, 2, 3})
    assert not gate.allows(1)


def test_a_failed_send_keeps_the_partition_closed_until_a_rebalance():
    gate = owning(1)
    generation = gate.sending(1)
    gate.acked(generation, 1, None, None)
    gate.processed(1, 1000)
    assert not gate.allows(1)


def test_a_partition_count_other_than_the_topics_turns_it_off():
    gate = opened(partition=1)
    generation = gate.sending(2)
    gate.acked(generation, 2, 3, 0)  # the broker put it elsewhere: our count is wrong
    assert gate.broken
    assert not gate.allows(1)
    gate.processed(3, 0)
    assert not gate.allows(3)


def test_partition_of_is_kafkas_default_partitioner():
    gate = Gate(12)
    for key in (b"customer_id:C1", b"email:a@b.c", b""):
        assert gate.partition_of(key) == kafka_hash(key) % 12


def test_worth_waiting_only_for_envelopes_already_sent_to_an_owned_partition():
    gate = owning(1)
    assert not gate.catching_up(1)  # nothing sent yet: the first one must take the topic
    generation = gate.sending(1)
    assert gate.catching_up(1)
    gate.acked(generation, 1, 1, 4)
    assert gate.catching_up(1)
    assert not gate.catching_up(2)  # another worker's partition never opens here
    failed = gate.sending(1)
    gate.acked(failed, 1, None, None)
    assert not gate.catching_up(1)


def test_a_record_sent_through_the_topic_while_open_closes_it_until_processed():
    """Work run here must not overtake a record this worker still sent through the topic (the
    route stage's merges and redirects, or a record whose partition was busy)."""
    gate = opened(1, offset=10)
    assert gate.allows(1)
    generation = gate.sending(1)
    assert not gate.allows(1)
    gate.acked(generation, 1, 1, 11)
    assert not gate.allows(1)
    gate.processed(1, 11)
    assert gate.allows(1)
    assert gate.allows(1) and not opened(2).allows(1)  # the other partitions are unaffected
