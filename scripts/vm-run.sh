#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the test kernel in QEMU (TCG) with blktap.ko and run the selftests of tests/.
#
#   scripts/vm-run.sh [--kdir DIR] [--module PATH.ko]... [--bin PATH]... [--tests "a b c"|all]
#                     [--timeout SECS] [--test-timeout SECS] [--append "cmdline"] [--insmod]
#                     [--interactive | --run SCRIPT] [--log FILE] [--results DIR]
#                     [--tests-dir DIR] [--fio auto|yes|no] [--mem SIZE] [--smp N] [--kvm] [--qemu-opt ARG]...
#                     [--tapdisk DIR|auto|no] [--tapdisk-skip REASON]
#                     [--openxt DIR|auto|no] [--openxt-skip REASON]
#                     [--tapdisk-oxt DIR|auto|no] [--tapdisk-oxt-skip REASON] [--quiet] [--keep]
#
#   --kdir DIR          kernel build tree (default: $KDIR, else the newest finished debug build
#                       in the cache); boots DIR/arch/x86/boot/bzImage
#   --module PATH.ko    module to put in /lib/modules (repeatable; default: blktap.ko found in
#                       the source tree, if any)
#   --bin PATH          extra executable for /usr/bin, with its shared libraries (repeatable)
#   --tests LIST        test names, groups (e.g. "module") or "all" (default), space or comma
#                       separated; "" runs no test (boot-time check only)
#   --tests-dir DIR     where the tests come from (default: tests/ of the source tree)
#   --timeout SECS      global limit for the whole VM run (default 600); QEMU is killed after it
#   --test-timeout SECS default per-test limit inside the guest (default 120)
#   --append STR        extra kernel command line
#   --insmod            preload blktap.ko before the tests (blktap.insmod=1)
#   --interactive       boot to a shell on the console (Ctrl-A X quits QEMU); no checks
#   --run SCRIPT        run SCRIPT in the guest instead of the tests (the demo), with all checks
#   --log FILE          console log (default: RESULTS/console.log)
#   --results DIR       results directory (default: a new ${TMPDIR:-/tmp}/blktap-vm.XXXXXX)
#   --fio auto|yes|no   put fio (+85 MB of libraries, ~2 s more boot) in the guest; auto
#                       (default) does when a selected test or the --run script mentions "fio"
#                       (tests that use it say "require_cmd fio"), or with --interactive
#   --tapdisk DIR|auto|no  the real tapdisk/tap-ctl/vhd-util (static, from
#                       scripts/build-tapdisk.sh) in the guest; auto (default) builds or reuses
#                       them when a selected test or the --run script mentions tap-ctl, and
#                       otherwise passes the reason they are missing on to the tapdisk tests
#   --tapdisk-skip STR  no tapdisk; the tapdisk tests report SKIP with reason STR
#   --openxt DIR|auto|no  OpenXT's legacy tapdisk2/tap-ctl/vhd-util (static, from
#                       scripts/build-openxt.sh) in /opt/openxt/bin; auto (default) as for
#                       --tapdisk, for tests that say require_openxt
#   --openxt-skip STR   no OpenXT userspace; its tests report SKIP with reason STR
#   --tapdisk-oxt DIR|auto|no  tapdisk 3.55.5 with OpenXT's control name (scripts/build-tapdisk.sh
#                       --openxt-name) in /usr/libexec/blktap-oxt; auto as above, for tests that
#                       say require_tapdisk_oxt
#   --tapdisk-oxt-skip STR  no such tapdisk; its tests report SKIP with reason STR
#   --kvm               use KVM (also BLKTAP_KVM=1); TCG by default, KVM hangs on our CI hosts
#   --quiet             do not stream the console to stderr while the VM runs
#   --keep              keep the initramfs in the results directory
#
# Prints the KTAP results (with the output of failed tests), every kernel splat found in the
# console log with the test it happened in, and "vm: P passed, F failed, S skipped".
# Exit status 0 only if every selected test passed or skipped, the guest reported its result and
# the kernel log is clean; 1 otherwise; 2 for usage or setup errors.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() { sed -n '4,53p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
fatal() { printf 'vm: error: %s\n' "$*" >&2; exit 2; }

kdir=${KDIR:-}
modules=()
bins=()
tests=all
tests_dir=$TOP/tests
timeout=600
test_timeout=120
append=
insmod=0
mode=tests
run_script=
log=
results=
mem=1G
smp=2
kvm=${BLKTAP_KVM:-0}
qemu_opts=()
fio=auto
tapdisk=auto
tapdisk_skip=
openxt=auto
openxt_skip=
tapdisk_oxt=auto
tapdisk_oxt_skip=
quiet=0
keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--kdir) kdir=${2:?}; shift 2 ;;
	--module) modules+=("${2:?}"); shift 2 ;;
	--bin) bins+=("${2:?}"); shift 2 ;;
	--tests) tests=${2?}; shift 2 ;;
	--tests-dir) tests_dir=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--test-timeout) test_timeout=${2:?}; shift 2 ;;
	--append) append=${2?}; shift 2 ;;
	--insmod) insmod=1; shift ;;
	--interactive) mode=shell; shift ;;
	--run) mode=run; run_script=${2:?}; shift 2 ;;
	--log) log=${2:?}; shift 2 ;;
	--results) results=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--fio) fio=${2:?}; shift 2 ;;
	--tapdisk) tapdisk=${2:?}; shift 2 ;;
	--tapdisk-skip) tapdisk=no; tapdisk_skip=${2:?}; shift 2 ;;
	--openxt) openxt=${2:?}; shift 2 ;;
	--openxt-skip) openxt=no; openxt_skip=${2:?}; shift 2 ;;
	--tapdisk-oxt) tapdisk_oxt=${2:?}; shift 2 ;;
	--tapdisk-oxt-skip) tapdisk_oxt=no; tapdisk_oxt_skip=${2:?}; shift 2 ;;
	--kvm) kvm=1; shift ;;
	--qemu-opt) qemu_opts+=("${2:?}"); shift 2 ;;
	--quiet) quiet=1; shift ;;
	--keep) keep=1; shift ;;
	-h|--help) usage ;;
	*) printf 'vm: unknown argument %s\n' "$1" >&2; usage ;;
	esac
done

# --- inputs ---------------------------------------------------------------------------------
if [ -z "$kdir" ]; then
	# Never start a kernel build from here (one build at a time, and it takes minutes): take
	# the newest finished one.
	# shellcheck disable=SC2012 # cache paths are ours, no odd characters
	stamp=$(ls -1t "$CACHE_DIR"/build/debug-*/.blktap-built 2>/dev/null | head -n1 || true)
	[ -n "$stamp" ] || fatal "no kernel: pass --kdir or run scripts/build-kernel.sh debug first"
	kdir=$(dirname "$stamp")
fi
bzimage=$kdir/arch/x86/boot/bzImage
[ -f "$bzimage" ] || fatal "no bzImage in $kdir"
if [ ${#modules[@]} -eq 0 ]; then
	ko=$(find "$TOP" -name .git -prune -o -name blktap.ko -print 2>/dev/null | head -n1)
	if [ -n "$ko" ]; then modules=("$ko")
	else log "vm: no blktap.ko given or found: tests that need it will skip"; fi
fi
[ "$mode" != run ] || [ -f "$run_script" ] || fatal "no such script: $run_script"
[ -d "$tests_dir" ] || fatal "no such directory: $tests_dir"
case "$timeout$test_timeout" in *[!0-9]*) fatal "timeouts are whole seconds" ;; esac

# Does a selected test (or the --run script) mention the word $1 (fio, tap-ctl)? Mirrors the
# name resolution of vm-init.sh.
uses() {
	local files=() item
	shopt -s nullglob
	if [ "$mode" = run ]; then
		files=("$run_script")
	else
		for item in $(echo "$tests" | tr ',' ' '); do
			item=${item%.sh}
			if [ "$item" = all ]; then files+=("$tests_dir"/test_*.sh)
			else files+=("$tests_dir/$item.sh" "$tests_dir/test_$item.sh" "$tests_dir/test_${item}_"*.sh)
			fi
		done
	fi
	shopt -u nullglob
	[ ${#files[@]} -gt 0 ] && grep -qsw -- "$1" "${files[@]}"
}
case "$fio" in
yes) ;;
no) ;;
auto) if [ "$mode" = shell ] || uses fio; then fio=yes; else fio=no; fi ;;
*) fatal "--fio takes auto, yes or no" ;;
esac
# client OPTION SETTING SKIP WORD CACHE BUILD...: the mkinitramfs options for one prebuilt client
# userspace (--OPTION DIR or --OPTION-skip REASON) into client_opts. SETTING auto builds or reuses
# it with BUILD when a selected test mentions WORD (or for --interactive); a failed build passes
# on the reason it left in $CACHE_DIR/CACHE/SKIP-REASON.
client_opts=()
client() {
	local opt=$1 setting=$2 skip=$3 word=$4 cache=$5 dir
	shift 5
	case "$setting" in
	no) [ -z "$skip" ] || client_opts+=("--$opt-skip" "$skip") ;;
	auto)
		if [ "$mode" = shell ] || uses "$word"; then
			if dir=$("$@"); then client_opts+=("--$opt" "$dir")
			else client_opts+=("--$opt-skip" "$(cat "$CACHE_DIR/$cache/SKIP-REASON" 2>/dev/null ||
				echo "${*#"$TOP/"} failed")"); fi
		fi ;;
	*) client_opts+=("--$opt" "$setting") ;;
	esac
}
client tapdisk "$tapdisk" "$tapdisk_skip" tap-ctl tapdisk "$TOP/scripts/build-tapdisk.sh"
client openxt "$openxt" "$openxt_skip" require_openxt openxt "$TOP/scripts/build-openxt.sh"
client tapdisk-oxt "$tapdisk_oxt" "$tapdisk_oxt_skip" require_tapdisk_oxt tapdisk-oxt \
	"$TOP/scripts/build-tapdisk.sh" --openxt-name

if [ -z "$results" ]; then
	results=$(mktemp -d "${TMPDIR:-/tmp}/blktap-vm.XXXXXX")
else
	mkdir -p "$results"
fi
log=${log:-$results/console.log}
initrd=$results/initramfs.cpio.gz

# --- initramfs and command line -------------------------------------------------------------
mk=("$TOP/scripts/mkinitramfs.sh" "$initrd" --tests "$tests_dir")
for m in "${modules[@]}"; do mk+=(--module "$m"); done
for b in "${bins[@]}"; do mk+=(--bin "$b"); done
[ "$fio" = yes ] || mk+=(--no-fio)
mk+=("${client_opts[@]}")
[ "$mode" != run ] || mk+=(--file "$run_script:/demo/$(basename "$run_script")")
t0=$(date +%s.%N)
"${mk[@]}"
t1=$(date +%s.%N)

# printk.devkmsg=on: /dev/kmsg writes are rate limited by default, and a lost test marker would
# blame a splat on the wrong test. oops=panic: after an oops nothing that follows is trustworthy.
cmdline="console=ttyS0 panic=-1 oops=panic printk.devkmsg=on"
cmdline+=" blktap.timeout=$test_timeout"
case "$mode" in
shell) cmdline+=" blktap.shell=1" ;;
run) cmdline+=" blktap.run=/demo/$(basename "$run_script")" ;;
tests) cmdline+=" blktap.tests=$(echo "$tests" | tr -s ' ,' ',,' | sed 's/^,//; s/,$//')" ;;
esac
[ "$insmod" = 0 ] || cmdline+=" blktap.insmod=1"
[ -z "$append" ] || cmdline+=" $append"

# shellcheck disable=SC2054 # the commas belong to -device
qemu=(qemu-system-x86_64 -m "$mem" -smp "$smp" -nographic -no-reboot
	-kernel "$bzimage" -initrd "$initrd" -append "$cmdline"
	-device isa-debug-exit,iobase=0xf4,iosize=4
	-nic none) # no NIC: no iPXE option ROM to load at boot
if [ "$kvm" = 1 ]; then qemu+=(-machine accel=kvm -cpu host)
else qemu+=(-machine accel=tcg -cpu max); fi
qemu+=("${qemu_opts[@]}")

if [ "$mode" = shell ]; then
	log "vm: interactive shell; Ctrl-A X quits QEMU"
	rc=0
	"${qemu[@]}" || rc=$?
	[ "$keep" = 1 ] || rm -f "$initrd"
	exit "$rc"
fi

# --- run ------------------------------------------------------------------------------------
log "vm: kernel $bzimage"
log "vm: console log $log"
# sed -u strips the serial line's CRs without buffering, so a hang shows up live.
set +e
if [ "$quiet" = 1 ]; then
	timeout -k 5 "$timeout" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' > "$log"
else
	timeout -k 5 "$timeout" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log" >&2
fi
qemu_rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s.%N)
[ "$keep" = 1 ] || rm -f "$initrd"

# --- verdict --------------------------------------------------------------------------------
# Results come from the "blktap-test: ktap LINE" kernel records (whole lines, see vm-init.sh);
# the guest's own console lines are the fallback, cut where a kernel line broke into them.
result=$(grep -aoE '(blktap-test: ktap |^)BLKTAP-RESULT: .*' "$log" | tail -n1 || true)
# The last marker tells which test was running if the guest hung or died.
last=$(grep -aoE 'blktap-test: (start|end) [0-9]+ [^ ]+' "$log" | tail -n1 || true)
running=
case "$last" in "blktap-test: start "*) running=${last#blktap-test: start } ;; esac

splats=$results/splats.tsv
: > "$splats"
kmsg_rc=0
"$TOP/scripts/check-kmsg.sh" --attrib "$splats" "$log" > "$results/kmsg-report.txt" || kmsg_rc=$?
[ "$kmsg_rc" -le 1 ] || fatal "check-kmsg.sh failed on $log"

# KTAP of the run, with the host's view folded in: a test with a kernel splat is not ok, a
# test that never reported hung or crashed the VM, and tests never started count as failures.
# The "# " output of a failed test is printed above its result line.
report=$(awk -v splats="$splats" -v running="$running" -v qrc="$qemu_rc" '
function num(l,   f) { split(l, f, " "); return (f[1] == "not") ? f[3] : f[2] }
BEGIN {
	while ((getline l < splats) > 0) { split(l, f, "\t"); if (f[1] > 0) bad[f[1]] = 1 }
	plan = -1; cur = 0; stamp = "\\[ *[0-9]+\\.[0-9]+\\] "
}
{ sub(/\r$/, "") }
match($0, /blktap-test: ktap /) {
	l = substr($0, RSTART + RLENGTH)
	if (l ~ /^1\.\.[0-9]+$/) kplan = substr(l, 4) + 0
	else if (l ~ /^(not )?ok [0-9]+ /) kres[num(l)] = l
	next
}
/^1\.\.[0-9]+/ { sub(stamp ".*", ""); uplan = substr($0, 4) + 0; next }
/^# start [0-9]+ / { cur = $3; diag[cur] = ""; next }
/^# / { if (cur) diag[cur] = diag[cur] $0 "\n"; next }
/^(not )?ok [0-9]+ / { sub(stamp ".*", ""); ures[num($0)] = $0; cur = 0; next }
END {
	plan = (kplan != "") ? kplan : uplan
	print "TAP version 13"
	print "1.." plan + 0
	for (n = 1; n <= plan; n++) {
		l = (n in kres) ? kres[n] : ((n in ures) ? ures[n] : "")
		if (l == "") {
			split(running, r, " ")
			if (r[1] != n) { never++; continue }
			why = (qrc == 124 || qrc == 137) ? "VM timeout" : "VM died"
			l = "not ok " n " " r[2] " # " why " while running"
		}
		if (l ~ /^ok / && (n in bad)) { sub(/^ok /, "not ok ", l); sub(/ # .*/, "", l); l = l " # kernel splat" }
		if (l ~ /^not ok /) { printf "%s", diag[n]; fail++ }
		else if (l ~ / # SKIP/) skip++
		else pass++
		print l
	}
	if (never) { printf "# %d test(s) never ran\n", never; fail += never }
	printf "vm: %d passed, %d failed, %d skipped\n", pass, fail, skip
}' "$log")

summary=$(echo "$report" | tail -n1)
echo "$report" | sed '$d'
[ "$kmsg_rc" = 0 ] || cat "$results/kmsg-report.txt"
echo "$summary"
# The KUnit pseudo-test reports its case counts as "# kunit: P passed, F failed".
kunit=$(grep -aoE '^# # kunit: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n1 || true)
[ -z "$kunit" ] || echo "vm: ${kunit#\# \# }"
ok=1
case "$summary" in "vm: "*", 0 failed, "*) ;; *) ok=0 ;; esac
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
	ok=0
	echo "vm: TIMEOUT: QEMU killed after ${timeout}s${running:+ while running test $running}"
elif [ -z "$result" ]; then
	ok=0
	echo "vm: the guest never reported a result (qemu rc=$qemu_rc)${running:+; test $running was running}"
fi
if [ "$kmsg_rc" != 0 ]; then
	ok=0
	echo "vm: $(wc -l < "$splats") kernel splat(s) in the console log"
fi
awk -v a="$t0" -v b="$t1" -v c="$t2" \
	'BEGIN { printf "vm: initramfs %.1f s, boot+run %.1f s\n", b - a, c - b }'
echo "vm: console log $log"
[ "$ok" = 1 ]
