#!/usr/bin/env bash
# Install the Debian 12 packages fleetgate builds and tests with, when any
# is missing. Needs root (or sudo) only when something must be installed.
set -euo pipefail

pkgs=(build-essential pkg-config mosquitto mosquitto-dev libmosquitto-dev
	mosquitto-clients libssl-dev libpq-dev libcjson-dev libhiredis-dev
	check postgresql redis-server openssl python3 valgrind clang-format)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || {
		echo "deps: missing packages ${missing[*]} and not root" >&2
		exit 1
	}
	sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Packages' maintainer scripts must not start servers: the tests start
# their own, on free loopback ports.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
	$sudo chmod +x "$policy"
	made_policy=1
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ "$made_policy" = 1 ]; then
	$sudo rm -f "$policy"
fi
