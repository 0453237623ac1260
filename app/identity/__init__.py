"""The identity graph: typed identifiers, compact profiles and their merge rules, and the
decisions the identifier index takes (pure; the Faust stages are app/agents/identity.py and
app/agents/route.py). Design: docs/identity.md."""
