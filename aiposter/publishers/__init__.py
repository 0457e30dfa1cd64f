"""Publishers: send a captioned image to one destination. One module per platform, each implementing
:class:`aiposter.core.ports.Publisher` and exposing ``build(deps)``; registered in
:mod:`aiposter.core.registry`. :mod:`aiposter.publishers.scripted` is a fake platform for tests."""
