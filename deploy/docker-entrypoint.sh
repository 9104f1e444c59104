#!/bin/sh
# Entry point of the cc-executor image. Inside a container the service binds
# 0.0.0.0 (the port is published by the host), so a token is mandatory:
# refuse to start without one rather than run commands for anyone.
set -eu
if [ "${1:-}" = "cc-executor" ] && [ "${CC_EXECUTOR_ALLOW_NO_TOKEN:-}" != "1" ]; then
  if [ -z "${CC_EXECUTOR_TOKEN:-}" ] && [ -z "${CC_EXECUTOR_TOKEN_FILE:-}" ]; then
    echo "cc-executor: set CC_EXECUTOR_TOKEN or CC_EXECUTOR_TOKEN_FILE:" \
      "the container listens on every interface" >&2
    exit 64
  fi
  if [ -n "${CC_EXECUTOR_TOKEN_FILE:-}" ] && [ ! -r "$CC_EXECUTOR_TOKEN_FILE" ]; then
    echo "cc-executor: token file $CC_EXECUTOR_TOKEN_FILE is not readable" >&2
    exit 64
  fi
fi
exec "$@"
