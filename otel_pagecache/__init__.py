"""Per-container page-cache observability for OpenTelemetry."""

__version__ = "0.1.0"
