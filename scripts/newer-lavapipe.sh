#!/usr/bin/env bash
# Runs the gpu and wgsl tests a second time, on a newer lavapipe than the system's: Mesa from
# Debian trixie-backports with trixie's own C library and loader beside it, unpacked into a
# private folder (nothing is installed; the system keeps its Mesa). It is another compiler of
# lomo's kernels, and an adapter that offers cooperative matrices, which wgpu-native 29 cannot
# enable (lomo must still open a device there).
#
#   scripts/newer-lavapipe.sh            set up once (about 65 MB of packages), then run the tests
#
# LOMO_NEWER_MESA names the folder (default ~/.cache/lomo/mesa-trixie-backports). Where the
# packages cannot be had (no apt-get, no network), it says so and exits 0: the tests on the
# system's lavapipe still ran; a test that fails here fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${LOMO_NEWER_MESA:-$HOME/.cache/lomo/mesa-trixie-backports}
lib=$dir/root/usr/lib/x86_64-linux-gnu
skip() {
	echo "newer-lavapipe: skipped: $*" >&2
	exit 0
}

setup() {
	command -v apt-get >/dev/null || skip "no apt-get"
	[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || skip "not an amd64 Debian"
	# The system's Debian archive, as its sources name it.
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$uri" ] || skip "no Debian archive in the apt sources"
	rm -rf "$dir"
	mkdir -p "$dir/lists/partial" "$dir/debs"
	printf 'deb %s trixie main\ndeb %s trixie-backports main\n' "$uri" "$uri" >"$dir/sources.list"
	o=(-qq -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$dir/lists"
		-oDir::Etc::SourceList="$dir/sources.list" -oDir::Etc::SourceParts=/dev/null -oDir::State::Status=/dev/null
		-oAPT::Sandbox::User=root -t trixie-backports)
	apt-get "${o[@]}" update || skip "the trixie package lists could not be had"
	# Mesa's Vulkan drivers and the Vulkan loader, with everything they need down to the C
	# library: all of it from trixie, so that none of the system's older libraries is mixed in.
	mapfile -t pkgs < <(apt-cache "${o[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances mesa-vulkan-drivers libvulkan1 | grep -v '^[ <]' | sort -u)
	[ ${#pkgs[@]} -gt 10 ] || skip "apt found no dependency closure for trixie-backports' Mesa"
	(cd "$dir/debs" && apt-get "${o[@]}" download "${pkgs[@]}") || skip "the packages could not be downloaded"
	for f in "$dir"/debs/*.deb; do dpkg -x "$f" "$dir/root"; done
	rm -rf "$dir/debs" "$dir/lists"
	printf '{"file_format_version":"1.0.1","ICD":{"library_path":"%s","api_version":"1.4"}}\n' \
		"$lib/libvulkan_lvp.so" >"$dir/lvp_icd.json"
}

[ -x "$lib/ld-linux-x86-64.so.2" ] && [ -f "$dir/lvp_icd.json" ] || setup
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
# Every test binary runs under trixie's loader and libraries, with lavapipe as the only driver.
run() { VK_DRIVER_FILES=$dir/lvp_icd.json "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$@"; }
go build -o "$bin/lomo" ./cmd/native
run "$bin/lomo" devices | sed -n 1,4p >&2
for p in gpu wgsl; do
	go test -c -o "$bin/$p.test" "./$p"
	echo "newer-lavapipe: $p" >&2
	(cd "$p" && run "$bin/$p.test" -test.count=1 -test.timeout=15m)
done
