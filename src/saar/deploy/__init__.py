"""Kubernetes packaging: ``saar inject``, the admission webhook and the sidecar's probe.

Kept free of imports so that ``python -m saar.deploy.probe`` (run by kubelet every few
seconds) loads nothing it does not need.
"""

__all__: list[str] = []
