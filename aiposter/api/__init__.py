"""The admin HTTP API (FastAPI): a thin shell over :mod:`aiposter.services`."""
