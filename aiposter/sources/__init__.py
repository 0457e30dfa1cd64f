"""Sources: where images come from. One module per service, each implementing
:class:`aiposter.core.ports.Source` and exposing ``build(deps)``; registered in :mod:`aiposter.core.registry`."""
