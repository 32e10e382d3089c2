#!/usr/bin/env bash
# Fetches Apache Kafka's broker (org.apache.kafka:kafka_2.13, the version pinned in deploy/kafka/pom.xml)
# and its runtime dependencies from Maven Central with Maven, into a cache folder, and checks every
# jar against deploy/kafka/artifacts.sha256. A second run finds the cache complete and downloads
# nothing. What uses the jars: the Apache Kafka test tier (tests/kafka/) and the benchmark
# (fatigue/kafka_cluster.py starts 1 or 3 KRaft nodes from them); operators may run a broker the
# same way: java -cp "$(bash deploy/fetch-kafka.sh --print-dir)/*" kafka.Kafka server.properties
#
# Usage: bash deploy/fetch-kafka.sh              # fetch (or find cached) and verify
#        bash deploy/fetch-kafka.sh --print-dir  # print the jar folder (fetched or not)
#        bash deploy/fetch-kafka.sh --lock       # re-pin: write artifacts.sha256 from a fresh resolve
# Needs: Java >= 17 (to run the broker) and Maven (`mvn`) reaching Maven Central.
# Cache: $FATIGUE_KAFKA_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/contact-fatigue/kafka; the jars
# land in <cache>/<version>/libs.
# Exit status: 0 fetched or cached; 1 could not (the reason on stderr, one line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
lock="$here/kafka/artifacts.sha256"
cache="${FATIGUE_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contact-fatigue/kafka}"
libs="$cache/$version/libs"
mode="${1:-fetch}"

fail() { echo "fetch-kafka: $*" >&2; exit 1; }

if [ "$mode" = "--print-dir" ]; then echo "$libs"; exit 0; fi
[ "$mode" = "fetch" ] || [ "$mode" = "--lock" ] || fail "unknown argument $mode (use --print-dir or --lock)"

# The jar set as pinned: "sha256  file" lines, sorted by file name.
verify() {  # $1: a folder of jars; fails naming the first difference
  local got want
  got="$(cd "$1" && sha256sum -- *.jar | sort -k2)"
  want="$(grep -v '^#' "$lock" | sort -k2)"
  [ "$got" = "$want" ] && return 0
  diff <(echo "$want") <(echo "$got") | head -5 >&2 || true
  return 1
}

if [ "$mode" = "fetch" ] && [ -f "$libs/.complete" ] && verify "$libs" 2>/dev/null; then
  echo "fetch-kafka: Apache Kafka $version cached in $libs"
  exit 0
fi

command -v mvn >/dev/null || fail "no mvn (Maven) on PATH: install it (Debian/Ubuntu: apt-get install -y maven)"
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' || true)"
[ -n "$java_major" ] || fail "no java on PATH: install Java 17 or later (Debian: apt-get install -y openjdk-17-jre-headless)"
[ "${java_major%%.*}" -ge 17 ] 2>/dev/null || fail "java $java_major found; Apache Kafka $version needs Java 17 or later"

mkdir -p "$cache/$version"
staging="$(mktemp -d "$cache/$version/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "fetch-kafka: resolving org.apache.kafka:kafka_2.13:$version and its runtime dependencies from Maven Central"
if ! mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
     -DincludeScope=runtime -DoutputDirectory="$staging" > "$staging.log" 2>&1; then
  tail -20 "$staging.log" >&2
  rm -f "$staging.log"
  fail "Maven could not resolve org.apache.kafka:kafka_2.13:$version (output above)"
fi
rm -f "$staging.log"

if [ "$mode" = "--lock" ]; then
  { echo "# Apache Kafka $version broker jars as resolved from Maven Central by deploy/fetch-kafka.sh (sha256sum)."
    (cd "$staging" && sha256sum -- *.jar | sort -k2); } > "$lock"
  echo "fetch-kafka: pinned $(grep -vc '^#' "$lock") jars in $lock"
fi
verify "$staging" || fail "the jars Maven resolved differ from $lock (above): refusing them; re-pin with --lock on purpose"
date -u +%FT%TZ > "$staging/.complete"
rm -rf "$libs"
mv "$staging" "$libs"
trap - EXIT
echo "fetch-kafka: Apache Kafka $version ready in $libs ($(ls "$libs" | wc -l) jars, verified)"
