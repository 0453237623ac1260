"""The relay's Faust agents, one module per stage; each exposes `install(relay)`."""
