# syntax=docker/dockerfile:1
# cc-executor: the WebSocket service that runs and streams supervised processes.
#
#   docker build -t cc-executor .
#   docker build -t cc-executor --build-arg INSTALL_CLAUDE=true .   # with the Claude Code CLI
#   docker run --rm -p 127.0.0.1:8003:8003 -e CC_EXECUTOR_TOKEN=secret cc-executor
#
# Stages: `build` makes a virtualenv with the project, `runtime` (the default
# target) copies it onto a clean slim image, `stress` adds the Locust harness
# (used by docker-compose.yml for the master and the workers).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/cc-executor
ENV PATH=/opt/cc-executor/bin:$PATH
WORKDIR /src
# Metadata first, so that a code change does not rebuild the dependency layer.
COPY pyproject.toml README.md ./
COPY service/__init__.py service/__init__.py
COPY stress stress
RUN pip install --no-cache-dir . && pip uninstall --yes cc-executor
COPY service service
RUN pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
# pv is what the flood scenario of the stress harness runs (yes | pv -qL RATE).
# INSTALL_CLAUDE=true also installs Node.js and the Claude Code CLI, for real
# agent runs (agent.execute); without it the image runs plain commands only.
ARG INSTALL_CLAUDE=false
ARG CLAUDE_CODE_VERSION=2.1.331
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's packages follow the release's security updates; pinning their exact
# versions would only break the build when an update lands.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pv \
    && if [ "$INSTALL_CLAUDE" = "true" ]; then \
        apt-get install -y --no-install-recommends nodejs npm git ca-certificates \
        && npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
        && npm cache clean --force \
        && apt-get purge -y npm && apt-get autoremove -y; \
    fi \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 executor \
    && useradd --system --uid 10001 --gid executor --create-home \
       --home-dir /home/executor --shell /usr/sbin/nologin executor \
    && mkdir -p /data /workspace \
    && chown executor:executor /data /workspace
COPY --from=build /opt/cc-executor /opt/cc-executor
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/cc-executor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/executor \
    CC_EXECUTOR_HOST=0.0.0.0 \
    CC_EXECUTOR_PORT=8003 \
    CC_EXECUTOR_DATA_DIR=/data \
    CC_EXECUTOR_PROJECT_ROOTS=/workspace
USER 10001:10001
WORKDIR /workspace
VOLUME ["/data"]
EXPOSE 8003
# /healthz is open without the token; python because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CC_EXECUTOR_PORT', '8003'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["cc-executor", "serve"]

FROM runtime AS stress
# The Locust harness (stress/) with the pinned dev tools of pyproject.toml.
USER 0
COPY pyproject.toml README.md /opt/src/
COPY service /opt/src/service
COPY stress /opt/src/stress
RUN pip install --no-cache-dir "/opt/src[dev]"
USER 10001:10001
WORKDIR /opt/src
ENTRYPOINT []
CMD ["locust", "-f", "stress/locustfile.py"]
