"""Loopback fakes of external services, one module per service, shared by the tests (``fakes.drive``,
``fakes.meta``)."""
