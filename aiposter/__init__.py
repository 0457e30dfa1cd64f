"""ai-poster: watch folders, caption images with an LLM, publish to social accounts."""

__version__ = "0.1.0"
