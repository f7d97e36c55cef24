"""A local Cloud Tasks v2: the gRPC API, dispatch with the real retry and rate semantics, OIDC tokens,
and SQLite persistence. Start it with `python -m tasklane.emulator` or `tasklane.emulator.server.EmulatorServer`."""
