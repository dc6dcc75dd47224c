#!/bin/sh
# Installs the Debian packages lambda-stack builds, tests and demos with; does nothing when
# all are present. Runs as root, or through sudo.
set -eu
PKGS="build-essential pkg-config libmicrohttpd-dev librdkafka-dev libjansson-dev libcriterion-dev
libsqlite3-dev sqlite3 libinih-dev uthash-dev libxxhash-dev libcsv-dev libcurl4-openssl-dev libsystemd-dev
kcat wrk curl chromium clang-format prometheus clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
