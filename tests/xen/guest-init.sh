#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the Xen suite's guests (busybox ash; scripts/xen-check.sh packs it with
# scripts/mkinitramfs.sh, xen-blkfront.ko and, for some guests, fio). dom0 (tests/xen/cases.sh)
# picks the job on the guest's command line (xl "extra"); the guest prints what it did on its
# console, which xenconsoled logs in dom0, and powers off:
#
#   XG: ready                       blkfront is loaded and the disks of xg.disks exist
#   XG-DATA key=value               results dom0 checks (sha256 of what was read or written)
#   XG-INFO text                    diagnostics (queue limits, blkfront's view)
#   XG-RESULT: ok | fail WHY        the end of the job
#
# Command line (xg.* words; the kernel leaves unknown dotted words to us in /proc/cmdline):
#   xg.job=pattern|ext4|fio|ioloop|hotplug|trim   what to do (see the job_* functions)
#   xg.disks=xvda[:xvdb]                      disks to wait for before the job
#   xg.in=MIB xg.out=MIB xg.len=MIB          pattern: the region dom0 wrote (read and hashed)
#                                             and the region the guest writes, in MiB
#   xg.recover=1                              ioloop: wait for I/O to work again after errors
#   xg.hold=1                                 stay up after the result (dom0 ends the domain)
#
# No raw dmesg is printed: dom0 scans the console log for kernel reports.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /mnt /sbin
# xl shutdown makes the kernel run /sbin/poweroff (orderly_poweroff), which the initramfs has
# only in /bin: without it the guest would ignore the request.
[ -e /sbin/poweroff ] || ln -s /bin/busybox /sbin/poweroff

JOB='' DISKS=xvda IN=0 OUT=8 LEN=8 RECOVER=0 HOLD=0
# shellcheck disable=SC2013 # words are what we want
for w in $(cat /proc/cmdline); do
	case "$w" in
	xg.job=*) JOB=${w#*=} ;;
	xg.disks=*) DISKS=$(echo "${w#*=}" | tr ':' ' ') ;;
	xg.in=*) IN=${w#*=} ;;
	xg.out=*) OUT=${w#*=} ;;
	xg.len=*) LEN=${w#*=} ;;
	xg.recover=*) RECOVER=${w#*=} ;;
	xg.hold=*) HOLD=${w#*=} ;;
	esac
done

# The end of the guest: the result line, then off. poweroff -f does not sync on purpose:
# everything the jobs check was written with O_DIRECT or synced by them.
finish() {
	echo "XG-RESULT: $*"
	sleep 0.2 # let hvc0 drain the line before the domain is gone
	[ "$HOLD" = 1 ] || poweroff -f
	while :; do sleep 60; done
}
fail() { finish "fail $*"; }

# xl shutdown: the kernel runs /sbin/poweroff, which signals init. Power off at once, with
# whatever I/O the job has in flight (that is the point of the shutdown case).
trap 'echo "XG: shutdown requested"; poweroff -f' USR1 USR2 TERM

wait_for() { # wait_for SECS CMD...: poll every 0.1 s
	n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	"$@"
}

insmod /lib/modules/xen-blkfront.ko || fail "insmod xen-blkfront.ko"
# A kernel with ext4 as a module (Debian's stock kernel) gets it and its dependencies, in order.
for m in crc16 mbcache jbd2 ext4; do
	[ ! -f "/lib/modules/$m.ko" ] || insmod "/lib/modules/$m.ko" || fail "insmod $m.ko"
done
for d in $DISKS; do
	wait_for 30 test -b "/dev/$d" || fail "no /dev/$d after 30 s"
done
echo "XG: ready"

sha() { sha256sum | cut -d' ' -f1; }

# What blkfront negotiated and the limits it gives the guest's block layer.
queue_info() {
	q=/sys/block/$1/queue
	echo "XG-INFO $1 max_sectors_kb=$(cat "$q/max_sectors_kb") max_hw_sectors_kb=$(cat "$q/max_hw_sectors_kb")" \
		"max_segments=$(cat "$q/max_segments") max_segment_size=$(cat "$q/max_segment_size")" \
		"write_cache=$(tr ' ' _ < "$q/write_cache") fua=$(cat "$q/fua" 2>/dev/null)" \
		"discard_max_bytes=$(cat "$q/discard_max_bytes") logical_block_size=$(cat "$q/logical_block_size")"
	dmesg | sed -n "s/^\[[ 0-9.]*\] //; s/^blkfront: \($1:.*\)/XG-INFO blkfront \1/p"
}

# pattern DISK: read LEN MiB at IN MiB (dom0's pattern) and print their hash; write LEN MiB of
# random data at OUT MiB, read them back and print their hash. All with O_DIRECT.
pattern() {
	dev=/dev/$1
	in=$(dd if="$dev" bs=1M skip="$IN" count="$LEN" iflag=direct 2>/tmp/dd.err | sha) ||
		fail "reading $dev: $(cat /tmp/dd.err)"
	echo "XG-DATA $1.in_sha=$in"
	dd if=/dev/urandom of=/tmp/out.bin bs=1M count="$LEN" 2>/dev/null || fail "no random data"
	out=$(sha < /tmp/out.bin)
	dd if=/tmp/out.bin of="$dev" bs=1M seek="$OUT" oflag=direct conv=notrunc 2>/tmp/dd.err ||
		fail "writing $dev: $(cat /tmp/dd.err)"
	back=$(dd if="$dev" bs=1M skip="$OUT" count="$LEN" iflag=direct 2>/tmp/dd.err | sha)
	[ "$back" = "$out" ] || fail "$dev read back $back, wrote $out"
	echo "XG-DATA $1.out_sha=$out"
	rm -f /tmp/out.bin
}

job_pattern() {
	for d in $DISKS; do pattern "$d"; done
	finish ok
}

# ext4: a file system with a tree of files; the manifest (sorted sha256sum lines) is hashed so
# that dom0 can mount the image and compare.
job_ext4() {
	dev=/dev/xvda
	mkfs.ext4 -q -F "$dev" > /tmp/mkfs.out 2>&1 || fail "mkfs.ext4: $(cat /tmp/mkfs.out)"
	mount -t ext4 "$dev" /mnt || fail "mount $dev"
	mkdir -p /mnt/tree/bin /mnt/tree/data
	cp -a /bin/busybox /lib/modules /mnt/tree/bin/ || fail "copy"
	i=0
	while [ $i -lt 40 ]; do
		mkdir -p "/mnt/tree/data/d$((i % 7))"
		dd if=/dev/urandom of="/mnt/tree/data/d$((i % 7))/f$i" bs=1k count=$((i * 37 % 300 + 1)) 2>/dev/null ||
			fail "writing file $i"
		i=$((i + 1))
	done
	(cd /mnt && find tree -type f | LC_ALL=C sort | xargs sha256sum) > /tmp/manifest ||
		fail "hashing the tree"
	echo "XG-DATA ext4.files=$(wc -l < /tmp/manifest) ext4.manifest_sha=$(sha < /tmp/manifest)"
	umount /mnt || fail "umount"
	sync
	finish ok
}

# fio with crc32c verify at QD1 and QD32, 4k and 44k (one full ring request of 11 pages), and
# one 1 MiB sequential job (blkfront splits it into the largest requests it may send). One fio
# run per job, each followed by "XG: step NAME" and a pause in which dom0 samples blkback's and
# the tap's counters, so that what blkback sent can be told per job.
job_fio() {
	dev=/dev/xvda
	queue_info xvda
	# dom0 takes its first snapshot of the counters now.
	echo "XG: step start"
	sleep 2
	off=0
	for spec in randwrite:4k:1 randwrite:4k:32 randwrite:44k:1 randwrite:44k:32 write:1m:4; do
		rw=${spec%%:*} rest=${spec#*:}
		bs=${rest%%:*} qd=${rest#*:}
		name=$rw-$bs-qd$qd
		size=8m
		[ "$bs" != 1m ] || size=16m
		before=$(cat /sys/block/xvda/stat)
		rc=0
		fio --output-format=terse --terse-version=3 --name="$name" --filename="$dev" \
			--ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 \
			--randrepeat=1 --rw="$rw" --bs="$bs" --iodepth="$qd" --offset="${off}m" --size="$size" \
			> /tmp/fio.out 2> /tmp/fio.err || rc=$?
		after=$(cat /sys/block/xvda/stat)
		# terse v3: 3 name, 5 error, 6 read KiB, 47 written KiB
		awk -F';' '$1 == 3 { printf "XG-INFO fio %s: error=%s wrote=%sKiB verified=%sKiB\n", $3, $5, $47, $6 }' /tmp/fio.out
		# /sys/block/X/stat: reads, merged, sectors, ticks, writes, merged, sectors, ticks,
		# in flight, io ticks, queue time, discards (12-15), flushes (16-17).
		echo "$before $after" | awk -v n="$name" '{ h = NF / 2
			printf "XG-INFO xvda %s: reads=%d read_sectors=%d writes=%d write_sectors=%d discards=%d flushes=%d\n",
				n, $(h+1)-$1, $(h+3)-$3, $(h+5)-$5, $(h+7)-$7, $(h+12)-$12, $(h+16)-$16 }'
		echo "XG: step $name"
		sleep 2
		[ "$rc" = 0 ] || { head -n 20 /tmp/fio.err; fail "fio $name exited with $rc"; }
		! grep -qi 'verify\|bad magic\|crc' /tmp/fio.err || { head -n 20 /tmp/fio.err; fail "fio $name: verify errors"; }
		bad=$(awk -F';' '$1 == 3 && ($5 != 0 || $47 == 0 || $6 != $47) { print $3 }' /tmp/fio.out)
		[ -z "$bad" ] || fail "fio job $bad failed"
		grep -q '^3;' /tmp/fio.out || fail "fio $name printed no result"
		off=$((off + 16))
	done
	finish ok
}

# trim: what blkfront was offered (write cache, discard), then ext4 without the initial discard:
# a 32 MiB file written and fsynced ("XG: synced", dom0 counts the flushes that reached its
# daemon), removed, and fstrim (dom0 then finds the image's blocks freed).
job_trim() {
	dev=/dev/xvda
	q=/sys/block/xvda/queue
	queue_info xvda
	echo "XG-DATA trim.write_cache=$(tr ' ' _ < "$q/write_cache") trim.discard_max_bytes=$(cat "$q/discard_max_bytes")"
	mkfs.ext4 -q -F -E nodiscard "$dev" > /tmp/mkfs.out 2>&1 || fail "mkfs.ext4: $(cat /tmp/mkfs.out)"
	mount -t ext4 "$dev" /mnt || fail "mount $dev"
	dd if=/dev/urandom of=/mnt/big bs=1M count=32 conv=fsync 2>/tmp/dd.err || fail "writing /mnt/big: $(cat /tmp/dd.err)"
	sync
	echo "XG: synced"
	# dom0 notes the image's block count now.
	sleep 3
	rm /mnt/big || fail "rm /mnt/big"
	sync
	out=$(fstrim -v /mnt 2>&1) || fail "fstrim: $out"
	echo "XG-DATA trim.fstrim=$(echo "$out" | tr ' ' _)"
	umount /mnt || fail "umount"
	sync
	finish ok
}

# ioloop: I/O in flight until dom0 ends the domain (xl shutdown, xl destroy) or kills the
# daemon. Four writers and a reader of 64 KiB O_DIRECT blocks in a loop; the first failure and,
# with xg.recover=1, the first success after it are printed. After recovery, the pattern job's
# write half proves the disk works again.
job_ioloop() {
	dev=/dev/xvda
	dd if=/dev/urandom of=/tmp/blk bs=64k count=1 2>/dev/null
	if command -v fio >/dev/null 2>&1 && [ "$RECOVER" = 0 ]; then
		# Deep queues for the shutdown and destroy cases: 32 requests in flight.
		fio --name=inflight --filename="$dev" --ioengine=libaio --direct=1 --iodepth=32 \
			--rw=randrw --bs=16k --size=32m --time_based --runtime=600 > /tmp/fio.out 2>&1 &
	fi
	w=0
	while [ $w -lt 4 ]; do
		(
			i=0
			while :; do
				# Only a write begun after the first failure shows recovery: one in flight
				# at the kill may still complete after another writer saw the error.
				after=0
				[ ! -e /tmp/failed ] || after=1
				if dd if=/tmp/blk of="$dev" bs=64k seek=$((w * 64 + i % 64)) count=1 oflag=direct conv=notrunc 2>/dev/null; then
					[ "$after" = 0 ] || [ -e /tmp/recovered ] || { : > /tmp/recovered; echo "XG: io recovered"; }
				else
					[ -e /tmp/failed ] || { : > /tmp/failed; echo "XG: io error"; }
				fi
				i=$((i + 1))
			done
		) &
		w=$((w + 1))
	done
	(while :; do dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null; done) &
	echo "XG: io running"
	if [ "$RECOVER" = 1 ]; then
		wait_for 300 test -e /tmp/recovered || fail "I/O did not recover"
		pattern xvda
		finish ok
	fi
	while :; do sleep 1; done
}

# hotplug: no disk at boot; wait for xvdb (xl block-attach), check dom0's pattern and write
# ours, then wait for it to go (xl block-detach).
job_hotplug() {
	echo "XG: waiting for xvdb"
	wait_for 120 test -b /dev/xvdb || fail "xvdb did not appear"
	queue_info xvdb
	pattern xvdb
	echo "XG: attached-done"
	wait_for 120 test ! -e /sys/block/xvdb || fail "xvdb still there 120 s after attached-done"
	echo "XG: detached"
	finish ok
}

case "$JOB" in
pattern | ext4 | fio | ioloop | hotplug | trim) "job_$JOB" ;;
*) fail "unknown job '$JOB'" ;;
esac
