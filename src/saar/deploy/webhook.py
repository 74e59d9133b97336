"""``saar webhook``: a mutating admission webhook that injects the saar sidecar into Pods.

Theory of operation. The API server POSTs an ``admission.k8s.io/v1`` ``AdmissionReview`` to
``/mutate`` for every Pod CREATE matching the MutatingWebhookConfiguration's
``objectSelector`` (label ``saar.io/inject: "true"``). The handler runs the very same
``inject_pod_template`` as ``saar inject`` and answers with the JSON Patch from the Pod it got
to the injected Pod (``saar.deploy.patch.json_patch``), base64-encoded. It never denies a
Pod: a Pod it cannot inject (no Envoy container) is admitted unchanged with a warning, in
line with ``failurePolicy: Ignore`` and saar's fail-open data path (docs/kubernetes.md).

A webhook sees only the Pod, not the ConfigMap holding Envoy's bootstrap, so the Pod's
Envoy must already run a bootstrap with saar's filter, route and cluster (``saar inject`` on
the ConfigMap, or envoy/kubernetes.yaml).

TLS: the API server only calls webhooks over HTTPS. The certificate and key come from files
(a Secret written by cert-manager); they are re-read when they change, because cert-manager
renews the certificate in place and the kubelet updates the mounted files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from saar.deploy.inject import INJECT_LABEL, InjectError, InjectOptions, inject_pod_template
from saar.deploy.patch import json_patch

__all__ = ["WebhookOptions", "build_app", "mutate", "review_response", "run_webhook", "tls_context"]

_API_VERSION = "admission.k8s.io/v1"
# An AdmissionReview carries one Pod; anything near this is not a Pod.
_MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Where the webhook listens and what it injects."""

    inject: InjectOptions
    host: str = "0.0.0.0"  # the API server dials the pod IP
    port: int = 8443
    cert_file: str | None = None
    key_file: str | None = None
    """``None`` for both serves plain HTTP (tests and local runs only)."""
    cert_check_interval_s: float = 30.0


def review_response(
    uid: str, patch: list[dict[str, Any]] | None, warnings: list[str] | None = None
) -> dict[str, Any]:
    """An AdmissionReview response that admits the object, with an optional JSON Patch."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": _API_VERSION, "kind": "AdmissionReview", "response": response}


def mutate(review: Any, options: InjectOptions) -> dict[str, Any]:
    """Answer one AdmissionReview request (raises ValueError when it is not one)."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ValueError("body is not an AdmissionReview")
    if review.get("apiVersion") != _API_VERSION:
        raise ValueError(f"unsupported AdmissionReview version {review.get('apiVersion')!r}")
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise ValueError("AdmissionReview has no request.uid")
    uid = request["uid"]
    pod = request.get("object")
    kind = (request.get("kind") or {}).get("kind")
    if kind != "Pod" or not isinstance(pod, dict):
        return review_response(uid, None)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    # The objectSelector already filters; checking again keeps a misconfigured webhook harmless.
    if labels.get(INJECT_LABEL) != "true":
        return review_response(uid, None)
    name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get(
        "generateName", "?"
    )
    try:
        injected = inject_pod_template(pod, options, where=f"Pod/{name}")
    except InjectError as exc:
        return review_response(uid, None, [f"saar sidecar not injected: {exc}"])
    return review_response(uid, json_patch(pod, injected))


def build_app(options: InjectOptions) -> web.Application:
    """The aiohttp application: ``POST /mutate`` and ``GET /healthz``."""

    async def handle_mutate(request: web.Request) -> web.Response:
        try:
            review = await request.json(loads=json.loads)
            return web.json_response(mutate(review, options))
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def handle_healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post("/mutate", handle_mutate)
    app.router.add_get("/healthz", handle_healthz)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) for the given PEM certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _stamp(*paths: str) -> tuple[float, ...]:
    stamps: list[float] = []
    for path in paths:
        try:
            stamps.append(os.stat(path).st_mtime)
        except OSError:
            stamps.append(-1.0)
    return tuple(stamps)


async def _reload_certificates(context: ssl.SSLContext, cert: str, key: str, every: float) -> None:
    """Load a renewed certificate into the live context (new handshakes use it)."""
    last = _stamp(cert, key)
    while True:
        await asyncio.sleep(every)
        current = _stamp(cert, key)
        if current != last:
            # A half-written pair fails to load; keep the old one and try on the next tick.
            with contextlib.suppress(OSError, ssl.SSLError):
                context.load_cert_chain(cert, key)
                last = current


async def run_webhook(options: WebhookOptions, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; then finish in-flight reviews and return."""
    context: ssl.SSLContext | None = None
    if options.cert_file is not None and options.key_file is not None:
        context = tls_context(options.cert_file, options.key_file)
    runner = web.AppRunner(build_app(options.inject))
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, ssl_context=context)
    await site.start()
    watcher: asyncio.Task[None] | None = None
    if context is not None and options.cert_file and options.key_file:
        watcher = asyncio.create_task(
            _reload_certificates(
                context, options.cert_file, options.key_file, options.cert_check_interval_s
            )
        )
    print(f"saar webhook ready on {options.host}:{options.port}", flush=True)
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()
