# syntax=docker/dockerfile:1
# saar image: the ext_proc sidecar (`saar serve`), `saar webhook` and the exec probe.
#
#   docker build -t registry.example.com/saar:0.1.0 .
#
# Two stages: the build stage installs the package into a virtualenv exactly as the README
# does (`pip install .`); the runtime stage copies only that virtualenv (no pip cache, no
# sources) and runs as an unprivileged user, ready for readOnlyRootFilesystem.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/saar
ENV PATH=/opt/saar/bin:$PATH
WORKDIR /src
# Metadata first, sources second: the dependency layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .

FROM python:3.11-slim
# No .pyc writes (read-only root filesystem), unbuffered JSON logs for `kubectl logs`.
ENV PATH=/opt/saar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# UID/GID 10001 match runAsUser/runAsGroup in deploy/ and `saar inject`.
RUN groupadd --system --gid 10001 saar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin saar
COPY --from=build /opt/saar /opt/saar
# Working directory for relative paths (replay.path: run/replay.sqlite3); Kubernetes mounts
# an emptyDir here because the root filesystem is read-only.
WORKDIR /var/lib/saar
RUN chown 10001:10001 /var/lib/saar
USER 10001:10001
# Prometheus metrics (server.metrics_address); the ext_proc socket lives on a shared emptyDir.
EXPOSE 9464
ENTRYPOINT ["saar"]
CMD ["serve", "--config", "/etc/saar/config.yaml"]
