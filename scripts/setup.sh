#!/usr/bin/env bash
# Installs what lomo needs on Debian or Ubuntu, and only what is missing:
#   scripts/setup.sh demo   a Vulkan driver (Mesa's CPU adapter works everywhere)
#   scripts/setup.sh test   the same, plus the Khronos Vulkan validation layers (the Go tests
#                           run under them), Chromium and playwright-core for the browser tests
set -euo pipefail
mode=${1:-demo}
cd "$(dirname "$0")/.."

need=()
for p in mesa-vulkan-drivers libvulkan1; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "$mode" = test ]; then
	for p in vulkan-validationlayers chromium; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
fi
if [ ${#need[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null; then
		echo "setup: install a Vulkan driver (and for tests the Vulkan validation layers and Chromium) for your system: ${need[*]}" >&2
		exit 1
	fi
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "setup: installing ${need[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$mode" = test ] && [ ! -d e2e/node_modules/playwright-core ]; then
	(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
