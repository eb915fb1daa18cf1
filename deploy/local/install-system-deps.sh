#!/usr/bin/env bash
# System packages the tests and the local stack need, on Debian/Ubuntu:
#   prometheus, promtool  (Debian package "prometheus": tests/deploy scrape real processes with it)
#   java 17+              (the pinned Kafka broker runs from jars)
#   mvn                   (fetches the pinned Kafka jars)
# Installs what is missing with apt-get when run as root; otherwise prints the exact command and
# exits 1. Idempotent and quick (no apt-get at all) when everything is present.
#
# Usage: deploy/local/install-system-deps.sh [--check]
#   --check   never install; exit 1 and print the command if something is missing.
set -euo pipefail

check_only=0
case "${1:-}" in
  "") ;;
  --check) check_only=1 ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

missing=()   # Debian packages to install
problems=()  # what is missing, in words

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
  problems+=("prometheus/promtool not found")
fi

java_major() {
  # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' (or "1.8.0_392" for Java 8).
  local line version
  line=$(java -version 2>&1 | head -n 1) || return 1
  version=$(printf '%s\n' "$line" | sed -n 's/.*version "\([^"]*\)".*/\1/p')
  [[ -n "$version" ]] || return 1
  if [[ "$version" == 1.* ]]; then version=${version#1.}; fi
  printf '%s\n' "${version%%[.+-]*}"
}

if ! command -v java >/dev/null 2>&1; then
  missing+=(openjdk-17-jre-headless)
  problems+=("java not found (need 17+)")
else
  major=$(java_major || echo 0)
  if (( major < 17 )); then
    missing+=(openjdk-17-jre-headless)
    problems+=("java $major found, need 17+ (after installing, select it: update-alternatives --config java)")
  fi
fi

if ! command -v mvn >/dev/null 2>&1; then
  missing+=(maven)
  problems+=("mvn not found")
fi

if (( ${#missing[@]} == 0 )); then
  echo "system deps ok: $(prometheus --version 2>&1 | head -n 1 | cut -d' ' -f1-3), java $(java_major), $(mvn -v 2>/dev/null | head -n 1 | sed 's/\x1b\[[0-9;]*m//g' | cut -d' ' -f1-3)"
  exit 0
fi

command_line="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
printf 'missing: %s\n' "${problems[@]}" >&2

if (( check_only )) || [[ "$(id -u)" != "0" ]]; then
  echo "run as root:" >&2
  echo "  sudo sh -c '$command_line'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${missing[*]} with this system's package manager" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
apt-get update -qq
# The package's postinst would start a prometheus service; containers usually forbid it (policy-rc.d),
# and the tests start their own server on a free port anyway.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
exec bash "$0" --check
