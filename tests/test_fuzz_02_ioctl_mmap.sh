#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# ioctl and mmap fuzzing (blktap-test fuzz). First every argument class once, with the
# documented errno: bad, kernel, non-canonical, read-only and truncated pointers (EFAULT, no tap
# leaked), out-of-range minors (EINVAL, 1<<32|minor frees nothing), unknown commands (ENOTTY),
# every blktap_device_info field at and beyond its limits (0 or EINVAL), NEGOTIATE with every
# pointer class and 400 blktap_features with fields at and beyond their limits, mmap with wrong length
# or offset or MAP_PRIVATE (EINVAL), PROT_EXEC (EPERM), a second mmap (EBUSY), partial munmap and
# mprotect (EINVAL), mprotect PROT_EXEC (EACCES), mremap (refused), fork of the mapping process
# (the child has no copy and gets EACCES/EBUSY), processes racing to open (one holder at a time)
# and to map one ring (exactly one wins). Then a seeded random walk over a model of 3 taps
# (alloc, free, open, close, mmap, munmap, ring ioctls with random arguments, NEGOTIATE against
# the disk's and the session's agreements, open/read/close of
# the disk, ioctls from a forked child) in which every result must match the model.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
dstate_watch_start 10
seed=$(test_seed)
iters=$(scaled 400 50000)
log "seed $seed"
ktap_run fuzz blktap-test fuzz --seed "$seed" --iterations "$iters"
steps=$(sed -n 's/^# fuzz: \([0-9]*\) steps/\1/p' fuzz.out)
dstate_watch_check
stat_report fuzz "${steps:-0}" 0 0
