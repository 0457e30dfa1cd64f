"""Loopback fakes of external services shared by several test packages (import as ``fakes.drive``)."""
