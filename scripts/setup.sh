#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh machine: a virtualenv with the project and its dev
# extras, and the Apache Kafka broker jars (Maven Central, cached outside the clone). Idempotent: re-runs
# only reinstall when pyproject.toml changed.
# `--demo`: only what the demo needs (the training, serving and console extras and the broker jars; no test tools,
# Prometheus or container engine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS="dev,training,serving,console"
DEMO=0
if [ "${1:-}" = "--demo" ]; then
  EXTRAS="training,serving,console"
  DEMO=1
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11+ is required (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
full_stamp="$stamp-dev,training,serving,console"
if [ ! -f "$stamp-$EXTRAS" ] && [ ! -f "$full_stamp" ]; then
  echo "setup: installing the project with its $EXTRAS extras into .venv (first run downloads TensorFlow)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$stamp-$EXTRAS"
fi

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Java 17 and Maven from Debian packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
fi
if [ "$DEMO" = 1 ]; then
  command -v mvn >/dev/null && .venv/bin/python deploy/kafka/local_kafka.py fetch >/dev/null
  exit 0
fi
# Prometheus and promtool (Debian package) for the rule tests and the real-scrape test.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing prometheus (and promtool) from Debian packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "setup: prometheus/promtool missing and cannot apt-get install them (not root?)" >&2
  fi
fi
# A container engine for the image tests: podman and runc (rootful podman needs no daemon), debootstrap for a
# base image where no registry answers. Skipped where a Docker engine answers.
if ! command -v podman >/dev/null && ! docker info >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing podman, runc and debootstrap from Debian packages (container tests)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  else
    echo "setup: no container engine and cannot apt-get install podman (not root?); the container tests will fail" >&2
  fi
fi
if command -v podman >/dev/null && ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc debootstrap >/dev/null
fi
# Chromium (Debian package) for the console's browser test; Playwright drives it (no browser download).
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium from Debian packages (the console's browser test)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium missing and cannot apt-get install it (not root?); the console's browser test will fail" >&2
  fi
fi
if command -v mvn >/dev/null; then
  .venv/bin/python deploy/kafka/local_kafka.py fetch >/dev/null
fi
