#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make run`: build everything, boot the debug kernel in QEMU and run scripts/demo-guest.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$TOP"
kdir=${KDIR:-$("$TOP/scripts/build-kernel.sh" debug)}
export KDIR=$kdir
"$TOP/scripts/kmake.sh" modules >/dev/null
(cd tools && cargo build --release --target x86_64-unknown-linux-gnu -q)
rel=tools/target/x86_64-unknown-linux-gnu/release
exec "$TOP/scripts/vm-run.sh" --kdir "$kdir" --module drivers/block/blktap/blktap.ko \
	--bin "$rel/blktapd" --bin "$rel/blktap-ctl" --run "$TOP/scripts/demo-guest.sh" "$@"
