"""Loopback fakes of external services, shared by the tests (one module per service)."""
