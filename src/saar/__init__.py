"""saar: a session-aware model router for LLM agent traffic, run as an Envoy ext_proc sidecar."""

__all__ = ["__version__"]

__version__ = "0.1.0"
