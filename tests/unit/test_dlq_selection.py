"""Which dead letters `relay dlq redrive` sends back: those that may have reached the destination
only when --reason names them."""

from app.replay import AMBIGUOUS_PREFIX, redrive_selection


def dead_letter(destination: str, reason: str) -> dict:
    return {"reason": reason, "delivery": {"destination": destination, "delivery_id": reason}}


RECORDS = [dead_letter("braze", "http_400"), dead_letter("braze", "ambiguous_after_crash"),
           dead_letter("insider", "ambiguous_no_response"), dead_letter("insider", "http_500")]


def reasons(chosen: list[dict]) -> list[str]:
    return [r["reason"] for r in chosen]


def test_a_redrive_of_everything_holds_back_what_may_have_been_delivered():
    assert reasons(redrive_selection(RECORDS, "deliveries.dlq", None, None)) == [
        "http_400", "http_500"]
    assert reasons(redrive_selection(RECORDS, "deliveries.dlq", "braze", None)) == ["http_400"]


def test_ambiguous_dead_letters_are_redriven_when_named():
    assert reasons(redrive_selection(RECORDS, "deliveries.dlq", None, AMBIGUOUS_PREFIX)) == [
        "ambiguous_after_crash", "ambiguous_no_response"]
    assert reasons(redrive_selection(RECORDS, "deliveries.dlq", "insider",
                                     "ambiguous_no_response")) == ["ambiguous_no_response"]


def test_ingress_dead_letters_are_not_held_back():
    ingress = [{"source": "air", "reason_code": "ambiguous_unify_key"}]
    assert redrive_selection(ingress, "ingress.dlq", None, None) == ingress
