#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make docs`: check (and optionally render) Documentation/.
#
#   scripts/docs.sh [--out DIR]
#
#   --out DIR   also keep the HTML (links between the documents point to the .html files)
#
# Checks, each an ok/not ok line:
#   - every Documentation/*.rst renders with docutils' rst2html, any warning being an error
#     (--halt=warning); plain docutils, so no Sphinx-only construct can creep in;
#   - index.rst links every other document, and every link to a local file resolves;
#   - Documentation/ABI/*/*: every entry has What, Date, KernelVersion, Contact and
#     Description, in the kernel's ABI format; and, when the kernel source is in the cache,
#     the kernel's own parser (tools/docs/get_abi.py) reads the files without a warning.
# Exit status 0 if every check passed, 1 otherwise.
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

out=
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	*) sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
command -v rst2html >/dev/null || die "rst2html not found (apt-get install python3-docutils)"

doc=$TOP/Documentation
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=scripts/ktap.sh
. "$TOP/scripts/ktap.sh"
for f in "$doc"/*.rst; do
	name=$(basename "$f" .rst)
	if rst2html --halt=warning --report=2 --no-datestamp --exit-status=2 \
		"$f" "$tmp/$name.html" 2> "$tmp/$name.log"; then
		ok "$name.rst renders without warnings"
	else
		not_ok "$name.rst renders without warnings" "$tmp/$name.log"
	fi
done

# Links: `text <target>`_ pointing into the tree.
: > "$tmp/links.log"
for f in "$doc"/*.rst; do
	grep -oE '<[^<>[:space:]]+>`__?' "$f" | sed -E 's/^<(.*)>`_+$/\1/' | while read -r target; do
		case "$target" in *://* | mailto:*) continue ;; esac
		[ -e "$doc/$target" ] || echo "$(basename "$f"): link to missing $target" >> "$tmp/links.log"
	done
done
for f in "$doc"/*.rst; do
	[ "$(basename "$f")" = index.rst ] && continue
	grep -q "<$(basename "$f")>" "$doc/index.rst" ||
		echo "index.rst does not link $(basename "$f")" >> "$tmp/links.log"
done
if [ -s "$tmp/links.log" ]; then not_ok "links between documents resolve" "$tmp/links.log"
else ok "links between documents resolve"; fi

# ABI files: the format of Documentation/ABI/README in the kernel.
: > "$tmp/abi.log"
abi_files=("$doc"/ABI/*/*)
for f in "${abi_files[@]}"; do
	[ -f "$f" ] || continue
	awk -v file="${f#"$TOP"/}" '
	function check() {
		if (!what) return
		for (t in need) if (!(t in seen)) printf "%s:%d: entry without %s:\n", file, start, t
		delete seen
	}
	BEGIN { need["What"]; need["Date"]; need["KernelVersion"]; need["Contact"]; need["Description"] }
	/^What:/ { check(); what = 1; start = NR }
	/^[A-Za-z]+:/ {
		tag = $0; sub(/:.*/, "", tag)
		if (tag in need || tag == "Users") seen[tag] = 1
		else if (what) printf "%s:%d: unknown tag %s\n", file, NR, tag
		next
	}
	/^[^ \t]/ && NF { printf "%s:%d: text outside an indented description\n", file, NR }
	END { check(); if (!what) printf "%s: no What: entry\n", file }
	' "$f" >> "$tmp/abi.log"
done
if [ -s "$tmp/abi.log" ]; then not_ok "ABI files have the kernel's ABI format" "$tmp/abi.log"
else ok "ABI files have the kernel's ABI format"; fi

# The kernel's own ABI parser, from the cached kernel source (never downloaded from here).
get_abi=$(find "$CACHE_DIR/src" -maxdepth 4 -path '*/tools/docs/get_abi.py' 2>/dev/null | head -n1)
if [ -z "$get_abi" ]; then
	skip "kernel ABI parser reads the ABI files" "no kernel source in $CACHE_DIR/src"
else
	mkdir -p "$tmp/abi/Documentation"
	cp -r "$doc/ABI" "$tmp/abi/Documentation/"
	if python3 "$get_abi" --dir "$tmp/abi/Documentation/ABI" rest --raw > "$tmp/abi.rst" 2> "$tmp/get_abi.log" &&
		[ ! -s "$tmp/get_abi.log" ] && grep -q 'blktap' "$tmp/abi.rst"; then
		ok "kernel ABI parser reads the ABI files without warnings"
	else
		not_ok "kernel ABI parser reads the ABI files without warnings" "$tmp/get_abi.log"
	fi
fi

if [ -n "$out" ]; then
	mkdir -p "$out"
	for h in "$tmp"/*.html; do
		sed -E 's/href="([A-Za-z0-9_.-]+)\.rst(#[^"]*)?"/href="\1.html\2"/g' "$h" > "$out/$(basename "$h")"
	done
	mkdir -p "$out/ABI"
	cp -r "$doc/ABI/." "$out/ABI/"
	echo "# HTML in $out"
fi
ktap_finish "# docs"
