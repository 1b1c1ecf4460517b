#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: fio on blktap-rs vs ublk, null_blk and loop, and the real tapdisk through blktap-rs
# vs through the kernel's NBD client, in one boot of the perf kernel.
#
#   scripts/bench.sh [--smoke] [--reps N] [--runtime S] [--ramp S] [--targets "T..."]
#                    [--jobs "J..."] [--out DIR] [--no-doc] [--no-chart] [--kdir DIR]
#                    [--pin split|same|none] [--smp N] [--icount SHIFT] [--profile] [--verbose]
#                    [--load quiet|vm[:N]]
#
#   --smoke       blktap-null and nullb, one job (randread-4k-qd32), 3 s, 1 repetition (~40 s
#                 once everything is built); never touches Documentation/
#   --reps N      repetitions of the whole matrix (default 3); the report gives the median and
#                 the min-max spread of the repetitions
#   --runtime S   measured seconds per fio job (default 3), after --ramp S (default 1)
#   --targets     subset/order of: blktap-null ublk-null nullb blktap-file loop ublk-loop
#                 tapdisk-blktap tapdisk-nbd (the tapdisk-* targets are skipped, with the reason,
#                 when scripts/build-tapdisk.sh has no tapdisk to give, or, for tapdisk-nbd, when
#                 the kernel has no nbd.ko or the host no nbd-client); blktap-file-sync and
#                 blktap-file-uring (blktapd --io sync, --io uring; blktap-file is --io auto,
#                 which is sync on the tmpfs image) are run only when named, and so are
#                 blktap-ext4-sync and blktap-ext4-uring (the image on ext4 on a loop device
#                 over a tmpfs file: a file system that starts I/O without blocking).
#                 blktap-null-large, blktap-null-lowlat and blktap-file-large are blktapd
#                 with the features negotiated (--features large, large,low-latency, and
#                 all,large: a 1 MiB I/O is one ring request). Run only when named:
#                 blktap-null-deep (--features large,deep --ring-slots 128) and
#                 ublk-null-deep (rublk at depth 128 instead of 32), for the QD128 jobs
#   --jobs        subset/order of: randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1
#                 randwrite-4k-qd32 randrw70-4k-qd32 read-44k-qd32 write-44k-qd32 read-1m-qd8
#                 write-1m-qd8; and, only when named, randread-4k-qd128 randwrite-4k-qd128
#   --out DIR     results directory (default results/bench/<date>-<time>; results/bench/latest
#                 points at the newest)
#   --no-doc      do not rewrite the results section of Documentation/benchmarks.rst and
#                 Documentation/benchmarks.png (a full run with default targets and jobs does)
#   --no-chart    no PNG
#   --kdir DIR    kernel build tree (default: BENCH_KDIR, else the perf flavour, built if needed)
#   --pin MODE    same (default): fio and the user-space servers on vCPU 0 (kernel threads may
#                 use vCPU 1); split: fio on vCPU 1, servers on vCPU 0 (under TCG this measures
#                 mostly how fast the host wakes a halted vCPU); none: no pinning
#   --smp N       vCPUs (default 2)
#   --cpu MODEL   QEMU -cpu (default max,erms=off: with ERMS the kernel copies to and from user
#                 memory with rep movsb, which TCG emulates byte by byte, 5-10x slower than
#                 the memcpy of kernel-to-kernel copies; that skews every user-copy path)
#   --icount S    deterministic QEMU mode: guest time = 2^S ns per instruction (experimental)
#   --profile     sample the guest's CPUs with perf (linux-perf, installed if missing) during
#                 each run's measured window; results/.../profile/<target>/<job>/<rep>.txt say
#                 where the time went per task, object and symbol. Sampling perturbs the
#                 figures: such runs never touch Documentation/
#   --verbose     stream the VM console (default: only the per-run summary lines)
#   --load MODE   quiet (default): nothing else is started; vm[:N]: a second QEMU TCG VM whose
#                 N vCPUs (default 1) spin for the whole run, as other guests load a busy dom0
#                 (each vCPU thread takes one host core). Such runs never touch Documentation/
#
# What it does, on the host:
#   1. the perf kernel (scripts/build-kernel.sh perf) and its null_blk.ko, ublk_drv.ko and nbd.ko;
#   2. blktap.ko for that kernel, built in a scratch copy of the sources
#      ($CACHE_DIR/bench-src/<kernel>/), so the tree's own blktap.ko (debug kernel) is untouched;
#   3. the tools (cargo, release), and rublk, a ublk server from crates.io, installed once into
#      $CACHE_DIR/rublk (static binary, pinned version and lock file); for the tapdisk-* targets,
#      tapdisk 3.55.5 (scripts/build-tapdisk.sh, cached) and Debian's nbd-client (installed if
#      missing);
#   4. one VM: QEMU TCG, 2 vCPUs (see --pin), 3 GiB, running scripts/bench-guest.sh; fio's
#      JSON leaves the guest on a second serial port (a file on the host);
#   5. scripts/bench-report.py: raw JSON, summary, rst table and PNG chart in the results
#      directory, and the results section of Documentation/benchmarks.rst.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() { sed -n '4,60p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

RUBLK_VERSION=0.2.15
# blktap-null-large, blktap-null-lowlat and blktap-file-large: the features negotiated (large
# requests, low latency; the file target with flush, FUA, discard and write-zeroes too).
ALL_TARGETS="blktap-null blktap-null-large blktap-null-lowlat ublk-null nullb blktap-file blktap-file-large loop ublk-loop tapdisk-blktap tapdisk-nbd"
# Run only when named: blktapd's file backend on either I/O path, on tmpfs and on ext4.
EXTRA_TARGETS="blktap-file-sync blktap-file-uring blktap-ext4-sync blktap-ext4-uring blktap-null-deep ublk-null-deep"
ALL_JOBS="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 randrw70-4k-qd32 read-44k-qd32 write-44k-qd32 read-1m-qd8 write-1m-qd8"
# Run only when named: depth 128, for the deep targets.
EXTRA_JOBS="randread-4k-qd128 randwrite-4k-qd128"
smoke=0 reps=3 runtime=3 ramp=1 targets=$ALL_TARGETS jobs=$ALL_JOBS out='' doc=1 chart=1
kdir=${BENCH_KDIR:-} pin=same verbose=0 icount='' smp=2 cpu=max,erms=off profile=0 load=quiet
while [ $# -gt 0 ]; do
	case "$1" in
	--smoke) smoke=1; shift ;;
	--reps) reps=${2:?}; shift 2 ;;
	--runtime) runtime=${2:?}; shift 2 ;;
	--ramp) ramp=${2:?}; shift 2 ;;
	--targets) targets=${2:?}; shift 2 ;;
	--jobs) jobs=${2:?}; shift 2 ;;
	--out) out=${2:?}; shift 2 ;;
	--no-doc) doc=0; shift ;;
	--no-chart) chart=0; shift ;;
	--kdir) kdir=${2:?}; shift 2 ;;
	--pin) pin=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--cpu) cpu=${2:?}; shift 2 ;;
	--verbose) verbose=1; shift ;;
	--profile) profile=1; shift ;;
	--icount) icount=${2:?}; shift 2 ;;
	--load) load=${2:?}; shift 2 ;;
	-h|--help) usage ;;
	*) printf 'bench: unknown argument %s\n' "$1" >&2; usage ;;
	esac
done
if [ "$smoke" = 1 ]; then
	targets="blktap-null nullb" jobs=randread-4k-qd32 reps=1 runtime=3 ramp=1 doc=0 chart=0
fi
# Only a full default matrix may replace the published numbers.
[ "$targets" = "$ALL_TARGETS" ] && [ "$jobs" = "$ALL_JOBS" ] && [ "$pin" = same ] &&
	[ "$smp" = 2 ] && [ "$cpu" = max,erms=off ] && [ -z "$icount" ] && [ "$profile" = 0 ] &&
	[ "$load" = quiet ] || doc=0
case "$load" in
quiet) load_vcpus=0 ;;
vm) load_vcpus=1 ;;
vm:[1-9]|vm:[1-9][0-9]) load_vcpus=${load#vm:} ;;
*) die "--load takes quiet, vm or vm:N" ;;
esac
for v in "$reps" "$runtime" "$ramp"; do
	case "$v" in ''|*[!0-9]*) die "--reps, --runtime and --ramp take whole numbers" ;; esac
done
for t in $targets; do
	case " $ALL_TARGETS $EXTRA_TARGETS " in *" $t "*) ;; *) die "unknown target $t (known: $ALL_TARGETS $EXTRA_TARGETS)" ;; esac
done
wants() { case " $targets " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# A target whose prerequisites are missing is dropped from the run, and the reason is printed
# and kept in host.txt (the report's Run section shows it). The full matrix still replaces the
# published results then: the other targets' figures are as good as ever.
skipped=
skip_target() { # skip_target TARGET REASON
	wants "$1" || return 0
	targets=$(echo " $targets " | sed "s/ $1 / /; s/^ *//; s/ *\$//")
	log "bench: skipping $1: $2"
	skipped="${skipped:+$skipped; }$1: $2"
}

t_begin=$(date +%s)
load_begin=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. kernel --------------------------------------------------------------------------------
if [ -z "$kdir" ] && [ "$smoke" = 1 ]; then
	# The smoke test checks the harness, not numbers: never wait for a kernel build, take the
	# newest finished perf build, else the debug one.
	# shellcheck disable=SC2012 # cache paths are ours
	stamp=$(ls -1t "$CACHE_DIR"/build/perf-*/.blktap-built "$CACHE_DIR"/build/debug-*/.blktap-built 2>/dev/null |
		head -n1 || true)
	[ -z "$stamp" ] || kdir=$(dirname "$stamp")
fi
[ -n "$kdir" ] || kdir=$("$TOP/scripts/build-kernel.sh" perf)
[ -f "$kdir/arch/x86/boot/bzImage" ] || die "no bzImage in $kdir"
if grep -qE '^CONFIG_(KASAN|PROVE_LOCKING)=y' "$kdir/.config"; then
	log "bench: WARNING: $kdir is a debug kernel (KASAN/lockdep): the numbers mean little"
fi
null_ko=$kdir/drivers/block/null_blk/null_blk.ko
ublk_ko=$kdir/drivers/block/ublk_drv.ko
for f in "$null_ko" "$ublk_ko"; do
	[ -f "$f" ] || die "$f missing: the bench kernel needs CONFIG_BLK_DEV_NULL_BLK=m and CONFIG_BLK_DEV_UBLK=m"
done
# tapdisk-nbd: the kernel's NBD client, talking to tapdisk over a unix socket.
nbd_ko=$kdir/drivers/block/nbd.ko
if [ ! -f "$nbd_ko" ]; then
	skip_target tapdisk-nbd "$nbd_ko missing: the bench kernel needs CONFIG_BLK_DEV_NBD=m"
elif ! grep -q '^CONFIG_UNIX=y' "$kdir/.config"; then
	skip_target tapdisk-nbd "the bench kernel has no CONFIG_UNIX (tapdisk's NBD server is a unix socket)"
fi

# --- 2. blktap.ko for that kernel, in a scratch copy -------------------------------------------
src=$CACHE_DIR/bench-src/$(basename "$kdir")
mkdir -p "$src"
exec 8>"$src.lock"
flock 8 # one build in the scratch copy at a time
# Sources only (the tree's build products belong to another kernel); --delete keeps the
# scratch copy's own build products because they are excluded.
rsync -a --delete --exclude .git --exclude /tools --exclude /results --exclude /Documentation \
	--exclude '*.o' --exclude '*.ko' --exclude '*.mod' --exclude '*.mod.c' --exclude '.*.cmd' \
	--exclude '*.rmeta' --exclude modules.order --exclude Module.symvers --exclude '*.d' \
	"$TOP/" "$src/"
llvm=()
if grep -q '^CONFIG_CC_IS_CLANG=y' "$kdir/include/config/auto.conf"; then
	ver=$(sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9]\{4\}$/\1/p' "$kdir/include/config/auto.conf")
	if command -v "clang-$ver" >/dev/null; then llvm=(LLVM="-$ver"); else llvm=(LLVM=1); fi
fi
log "bench: building blktap.ko for $(basename "$kdir") in $src"
make -s -C "$kdir" M="$src" "${llvm[@]}" modules >"$src/build.log" 2>&1 ||
	{ tail -n 30 "$src/build.log"; die "module build failed (log: $src/build.log)"; }
blktap_ko=$src/drivers/block/blktap/blktap.ko
flock -u 8

# --- 3. tools and rublk ---------------------------------------------------------------------
log "bench: building the tools"
(cd "$TOP/tools" && cargo build --release --target x86_64-unknown-linux-gnu -q)
rel=$TOP/tools/target/x86_64-unknown-linux-gnu/release
rublk_root=$CACHE_DIR/rublk
rublk=$rublk_root/bin/rublk
case " $targets " in *" ublk-"*) need_rublk=1 ;; *) need_rublk=0 ;; esac
if [ "$need_rublk" = 1 ] && ! { [ -x "$rublk" ] && "$rublk" --version 2>/dev/null | grep -qF "$RUBLK_VERSION"; }; then
	# Statically linked (the guest is a busybox initramfs), with the crate's own Cargo.lock.
	log "bench: installing rublk $RUBLK_VERSION from crates.io into $rublk_root (about 6 minutes)"
	RUSTFLAGS="-C target-feature=+crt-static" cargo install rublk --version "$RUBLK_VERSION" \
		--locked --force --root "$rublk_root" --target x86_64-unknown-linux-gnu -q ||
		die "cargo install rublk failed"
fi
# The real tapdisk (static binaries, built once into the cache). Exit status 3 means no source
# or a failed build, with the reason in SKIP-REASON: the tapdisk targets are skipped then.
tapdisk_opts=(--tapdisk no)
tapdisk_dir=
if wants tapdisk-blktap || wants tapdisk-nbd; then
	td_rc=0
	tapdisk_dir=$("$TOP/scripts/build-tapdisk.sh") || td_rc=$?
	if [ "$td_rc" = 0 ]; then
		tapdisk_opts=(--tapdisk "$tapdisk_dir")
	elif [ "$td_rc" = 3 ]; then
		reason=$(cat "$CACHE_DIR/tapdisk/SKIP-REASON" 2>/dev/null || echo "scripts/build-tapdisk.sh has no tapdisk")
		skip_target tapdisk-blktap "$reason"
		skip_target tapdisk-nbd "$reason"
	else
		die "scripts/build-tapdisk.sh failed (rc=$td_rc)"
	fi
fi
[ -n "$targets" ] || die "no target left to run"
# util-linux losetup (busybox's cannot set --direct-io); optional.
losetup_bin=$(PATH=/usr/sbin:/sbin:$PATH command -v losetup || true)
bins=(--bin "$rel/blktapd" --bin "$rel/blktap-ctl")
[ "$need_rublk" = 0 ] || bins+=(--bin "$rublk")
if wants tapdisk-nbd; then
	# Debian's nbd-client (dynamic: mkinitramfs copies its libraries; Debian's busybox has no
	# nbd-client applet): it connects over a unix socket (-unix) and hands the socket to nbd.ko
	# through netlink, then exits.
	if [ ! -x /usr/sbin/nbd-client ]; then
		log "bench: installing nbd-client for tapdisk-nbd"
		sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
			nbd-client >/dev/null || log "bench: apt-get install nbd-client failed"
	fi
	if [ -x /usr/sbin/nbd-client ]; then
		bins+=(--bin /usr/sbin/nbd-client)
	else
		skip_target tapdisk-nbd "no /usr/sbin/nbd-client on the host (apt-get install nbd-client)"
	fi
fi
case "$(readlink -f "${losetup_bin:-/nonexistent}")" in
*busybox*|"") log "bench: no util-linux losetup: loop runs without --direct-io" ;;
*) bins+=(--bin "$losetup_bin") ;;
esac

if [ "$profile" = 1 ]; then
	# Debian's linux-perf puts the real binary at /usr/bin/perf (diverting the version wrapper).
	if ! head -c 4 /usr/bin/perf 2>/dev/null | grep -q ELF; then
		log "bench: installing linux-perf for --profile"
		sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
			linux-perf >/dev/null || die "apt-get install linux-perf failed"
	fi
	bins+=(--bin /usr/bin/perf)
fi

# --- 4. the VM --------------------------------------------------------------------------------
# The guest has no ACPI, hence no HPET or PM timer to calibrate its TSC against: it falls back
# to the jiffies clocksource (4 ms resolution, useless for latencies). Under TCG the guest's TSC
# is the host's (QEMU returns the host's rdtsc), so tell the guest the host's TSC frequency.
tsc_khz() {
	local bin=$CACHE_DIR/bench-tools/tsc-khz
	if [ ! -x "$bin" ]; then
		mkdir -p "$(dirname "$bin")"
		cat > "$bin.c" <<'EOF'
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>
/* TSC ticks per millisecond of CLOCK_MONOTONIC_RAW, over 200 ms. */
int main(void)
{
	struct timespec a, b, d = { 0, 200000000 };
	unsigned long long t0, t1;

	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	t0 = __rdtsc();
	nanosleep(&d, NULL);
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	t1 = __rdtsc();
	printf("%.0f\n", (t1 - t0) * 1e6 / ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)));
	return 0;
}
EOF
		cc -O2 -o "$bin" "$bin.c" 2>/dev/null || return 1
	fi
	grep -qw constant_tsc /proc/cpuinfo || return 1
	"$bin"
}
append=
icount_opts=()
if [ -n "$icount" ]; then
	# Deterministic mode: virtual time advances 2^SHIFT ns per guest instruction, whatever the
	# host does; the guest TSC then counts virtual ns (1 GHz). Single-threaded TCG.
	append="tsc_early_khz=1000000 tsc=reliable"
	icount_opts=(--qemu-opt -icount --qemu-opt "shift=$icount,sleep=off,align=off")
elif [ "${BENCH_TSC:-1}" = 1 ] && khz=$(tsc_khz) && [ -n "$khz" ] && [ "$khz" -gt 100000 ]; then
	append="tsc_early_khz=$khz tsc=reliable"
else
	log "bench: WARNING: host TSC frequency unknown: the guest clock has 4 ms resolution, latencies are meaningless"
fi

[ -n "$out" ] || out=$TOP/results/bench/$(date +%Y%m%d-%H%M%S)$([ "$smoke" = 0 ] || echo -smoke)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/blktap-bench.XXXXXX")
sampler=
trap '[ -z "$sampler" ] || kill "$sampler" 2>/dev/null; rm -rf "$work"' EXIT
stage=$work/guest
mkdir -p "$stage"
cp "$TOP/scripts/bench-guest.sh" "$stage/"
n_targets=$(echo "$targets" | wc -w) n_jobs=$(echo "$jobs" | wc -w)
n_runs=$((reps * n_targets * n_jobs))
# Budget: fio start-up, accounting and output cost about 1.5 s per run under TCG; boot and
# setup about 40 s.
est=$((n_runs * (2 * (runtime + ramp) + 3) / 2 + 40))
guest_timeout=$((est * 2 + 120))
cat > "$stage/bench.conf" <<EOF
TARGETS="$targets"
JOBS="$jobs"
REPS=$reps
RUNTIME=$runtime
RAMP=$ramp
SIZE=1g
IMG_MB=1024
PIN=$pin
PROFILE=$profile
EOF
# vm-init reads the per-test timeout from this header.
printf '#!/bin/sh\n# timeout: %s\nexec sh /tests/bench-guest.sh /tests/bench.conf\n' \
	"$guest_timeout" > "$work/bench.sh"
log "bench: $n_runs fio runs ($reps x $n_targets targets x $n_jobs jobs, ${ramp}+${runtime} s each): about $(( (est + 59) / 60 )) min in the VM"
log "bench: results in $out"

# Host load during the run: the VM shares the host's cores with whatever else runs.
( while :; do cut -d' ' -f1 /proc/loadavg; sleep 15; done ) > "$work/load.txt" &
sampler=$!

# --load vm:N: a second VM that only burns its vCPUs, started first and stopped after the run.
# It has a session of its own (setsid): vm-run.sh runs QEMU under timeout(1), which makes a
# process group of its own, so what ends them all is a signal to every process of the session.
loader=
stop_loader() {
	[ -n "$loader" ] || return 0
	pkill -s "$loader" 2>/dev/null || true
	wait "$loader" 2>/dev/null || true
	loader=
}
trap '[ -z "$sampler" ] || kill "$sampler" 2>/dev/null; stop_loader; rm -rf "$work"' EXIT
if [ "$load_vcpus" -gt 0 ]; then
	mkdir -p "$work/load"
	# One busy loop per vCPU until QEMU is killed (the timeout is only a backstop).
	printf '#!/bin/sh\n# timeout: %s\nn=$(grep -c ^processor /proc/cpuinfo); i=0\nwhile [ "$i" -lt "$n" ]; do (while :; do :; done) & i=$((i + 1)); done\nwait\n' \
		"$((guest_timeout + 300))" > "$work/load/burn.sh"
	setsid "$TOP/scripts/vm-run.sh" --kdir "$kdir" --module "$blktap_ko" --run "$work/load/burn.sh" \
		--tests-dir "$work/load" --fio no --tapdisk no --openxt no --tapdisk-oxt no \
		--mem 256M --smp "$load_vcpus" \
		--qemu-opt -smp --qemu-opt "$load_vcpus,sockets=$load_vcpus,cores=1,threads=1" \
		--timeout "$((guest_timeout + 420))" --results "$work/load/vm" --quiet \
		> "$work/load/vm-run.txt" 2>&1 &
	loader=$!
	log "bench: load: a second VM with $load_vcpus spinning vCPU(s) (pid $loader)"
	sleep 20 # its boot is over before the measured VM starts
fi

mods=(--module "$blktap_ko" --module "$null_ko" --module "$ublk_ko")
! wants tapdisk-nbd || mods+=(--module "$nbd_ko")
vm=(--kdir "$kdir" "${mods[@]}" "${bins[@]}" "${tapdisk_opts[@]}"
	--run "$work/bench.sh" --tests-dir "$stage" --fio yes --mem 3G --smp "$smp" --append "$append"
	--timeout $((guest_timeout + 120)) --results "$work/vm"
	# Without ACPI the guest learns its CPUs from SeaBIOS's MP table, which lists one CPU per
	# package: QEMU's default topology for -smp 2 (1 socket, 2 cores) gives a 1-CPU guest.
	--qemu-opt -smp --qemu-opt "$smp,sockets=$smp,cores=1,threads=1" "${icount_opts[@]}"
	--qemu-opt -cpu --qemu-opt "$cpu"
	# ttyS0 stays the console (an explicit -serial replaces -nographic's); ttyS1 is the data.
	--qemu-opt -serial --qemu-opt mon:stdio --qemu-opt -serial --qemu-opt "file:$work/data.txt")
vm_rc=0
if [ "$verbose" = 1 ]; then
	"$TOP/scripts/vm-run.sh" "${vm[@]}" > "$work/vm-run.txt" || vm_rc=$?
else
	# Only our own progress lines ("# bench: ...") from the console.
	"$TOP/scripts/vm-run.sh" "${vm[@]}" --quiet > "$work/vm-run.txt" &
	vmpid=$!
	# tail --pid ends with the VM, and the pipeline with it.
	tail --pid="$vmpid" -n +1 -F "$work/vm/console.log" 2>/dev/null |
		grep --line-buffered -aE '^# bench: ' | sed -u 's/^# //' >&2 &
	tailpid=$!
	wait "$vmpid" || vm_rc=$?
	wait "$tailpid" || true
fi
kill "$sampler" 2>/dev/null || true
sampler=
stop_loader
cat "$work/vm-run.txt" >&2
cp "$work/vm/console.log" "$out/console.log" 2>/dev/null || true
cp "$work/data.txt" "$out/data.txt" 2>/dev/null || true

t_end=$(date +%s)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
cat > "$out/host.txt" <<EOF
date: $(date -u +%Y-%m-%dT%H:%MZ)
host_cpu: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1) x $(nproc)
qemu: $(qemu-system-x86_64 --version | head -n1)
kernel_tree: $kdir
vm: TCG, -smp $smp ($smp sockets), -m 3G, -cpu $cpu, guest clock: ${append:-jiffies}
load_begin: $load_begin
load_end: $load_end
load_samples: $(tr '\n' ' ' < "$work/load.txt")
load_vm: $([ "$load_vcpus" -gt 0 ] && echo "a second TCG VM with $load_vcpus spinning vCPU(s) for the whole run" || echo none)
total_s: $((t_end - t_begin))
tapdisk: ${tapdisk_dir:-none}
skipped: ${skipped:-none}
EOF

# --- 5. report ------------------------------------------------------------------------------
report=(python3 "$TOP/scripts/bench-report.py" --data "$out/data.txt" --host "$out/host.txt"
	--out "$out")
if [ "$chart" = 1 ]; then
	py=python3
	if ! python3 -c 'import matplotlib' 2>/dev/null; then
		venv=$CACHE_DIR/bench-venv
		if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
			log "bench: installing matplotlib into $venv"
			{ python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib; } >&2 ||
				log "bench: could not install matplotlib"
		fi
		! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null || py=$venv/bin/python
	fi
	report[0]=$py
	report+=(--png "$out/chart.png")
fi
if [ "$doc" = 1 ] && [ "$vm_rc" = 0 ]; then
	report+=(--doc "$TOP/Documentation/benchmarks.rst")
	[ "$chart" = 0 ] || report+=(--doc-png "$TOP/Documentation/benchmarks.png")
fi
[ "$smoke" = 0 ] || report+=(--brief)
report_rc=0
"${report[@]}" || report_rc=$?
[ "$smoke" = 1 ] || ln -sfn "$(basename "$out")" "$(dirname "$out")/latest" 2>/dev/null || true
echo "bench: total $((t_end - t_begin)) s; host load ${load_begin%% *} -> ${load_end%% *}; results in $out"
[ "$vm_rc" = 0 ] || { echo "bench: the VM run failed (vm-run rc=$vm_rc)"; exit 1; }
[ "$report_rc" = 0 ] || { echo "bench: the report failed"; exit 1; }
echo "bench: OK"
