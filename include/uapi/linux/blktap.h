/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-2-Clause) */
/*
 * blktap2 userspace ABI ("V-XS" variant, as spoken by xapi-project/blktap v3.x tapdisk and tap-ctl).
 *
 * The control device (misc "blktap/control", also "blktap-control") allocates and frees taps. Each
 * tap N has a ring character device (char region "blktap2", minor N) that one daemon opens, maps
 * and polls, and a block device "td<letters>" (block major "tapdev", first minor N) whose requests
 * travel through the ring.
 *
 * All ioctl numbers are plain integers, not _IOC() encoded, for compatibility with existing tools.
 * Layouts below are those of x86-64; every offset is spelled out by the field order and the
 * explicit padding fields.
 */
#ifndef _UAPI_LINUX_BLKTAP_H
#define _UAPI_LINUX_BLKTAP_H

#include <linux/types.h>

/* Control device ioctls. */
#define BLKTAP_IOCTL_ALLOC_TAP			200	/* arg: struct blktap_info * (out) */
#define BLKTAP_IOCTL_FREE_TAP			201	/* arg: the minor, by value */

/* Ring device ioctls; all fail with EACCES unless the caller's mm owns the ring mapping. */
#define BLKTAP_IOCTL_RESPOND			1	/* consume responses up to rsp_prod; arg ignored */
#define BLKTAP_IOCTL_CREATE_DEVICE_COMPAT	202	/* arg: struct blktap2_params * (in) */
#define BLKTAP_IOCTL_REMOVE_DEVICE		207	/* no arg; EBUSY while the disk is open */
#define BLKTAP_IOCTL_CREATE_DEVICE		208	/* arg: struct blktap_device_info * (in) */

/* Number of taps (and so of minors) the driver supports. */
#define BLKTAP_MAX_DEVICES			16384

/* Reply of BLKTAP_IOCTL_ALLOC_TAP (tap-ctl calls it struct blktap2_handle). */
struct blktap_info {
	__u32 ring_major;	/* major of the "blktap2" ring character devices */
	__u32 bdev_major;	/* major of the "tapdev" block devices */
	__u32 ring_minor;	/* the allocated tap minor N */
};

/* struct blktap_device_info.flags */
#define BLKTAP_DEVICE_RO			0x1UL

/* Argument of BLKTAP_IOCTL_CREATE_DEVICE: 56 bytes. */
struct blktap_device_info {
	__u64 capacity;			/* size in 512-byte sectors, non-zero */
	__u32 sector_size;		/* logical block size: power of two in [512, 4096] */
	__u32 physical_sector_size;	/* power of two, at least 512 */
	__u64 flags;			/* BLKTAP_DEVICE_RO; other bits ignored (unsigned long) */
	__u64 __rsvd[4];		/* ignored */
};

#define BLKTAP2_MAX_MESSAGE_LEN			256

/* Argument of BLKTAP_IOCTL_CREATE_DEVICE_COMPAT: 272 bytes. */
struct blktap2_params {
	char name[BLKTAP2_MAX_MESSAGE_LEN];	/* NUL-terminated tap name, may be empty */
	__u64 capacity;				/* size in 512-byte sectors */
	__u64 sector_size;			/* logical and physical block size (unsigned long) */
};

/* The shared ring: one page at offset 0 of the mapping, then the data pages. */
#define BLKTAP_RING_SIZE			32	/* entries; indices are free-running */
#define BLKTAP_SEGMENT_MAX			11	/* data pages per request */
#define BLKTAP_MMAP_PAGES			(1 + BLKTAP_RING_SIZE * BLKTAP_SEGMENT_MAX)	/* 353 */
/* Page index of segment @seg of the request with ring id @id within the mapping. */
#define BLKTAP_DATA_PAGE(id, seg)		(1 + (id) * BLKTAP_SEGMENT_MAX + (seg))

#define BLKTAP_OP_READ				0
#define BLKTAP_OP_WRITE				1

#define BLKTAP_RSP_EOPNOTSUPP			(-2)
#define BLKTAP_RSP_ERROR			(-1)
#define BLKTAP_RSP_OKAY				0

/* One data segment: the sectors [first_sect, last_sect] (512 bytes each) of its page. */
struct blktap_segment {
	__u32 __pad;		/* unused (the grant reference slot of Xen's blkif) */
	__u8 first_sect;
	__u8 last_sect;
	__u8 __pad2[2];
};

/* A request as the kernel writes it: 112 bytes. */
struct blktap_ring_request {
	__u8 operation;		/* BLKTAP_OP_READ or BLKTAP_OP_WRITE */
	__u8 nr_segments;	/* 1 .. BLKTAP_SEGMENT_MAX */
	__u16 __pad;
	__u32 __pad2;
	__u64 id;		/* ring slot 0 .. BLKTAP_RING_SIZE - 1; selects the data pages */
	__u64 sector_number;	/* in 512-byte units, whatever the logical block size */
	struct blktap_segment seg[BLKTAP_SEGMENT_MAX];
};

/* A response as the daemon writes it, in the slot of response index mod BLKTAP_RING_SIZE. */
struct blktap_ring_response {
	__u64 id;		/* id of the request answered */
	__u8 operation;		/* must equal the request's operation */
	__u8 __pad;
	__s16 status;		/* BLKTAP_RSP_*: 0 means success, anything else fails the I/O */
	__u32 __pad2;
};

union blktap_ring_entry {
	struct blktap_ring_request req;
	struct blktap_ring_response rsp;
};

/* The ring page. Indices are written with release semantics and read with acquire semantics. */
struct blktap_sring {
	__u32 req_prod;		/* written by the kernel */
	__u32 req_event;	/* initialised to 1 */
	__u32 rsp_prod;		/* written by the daemon */
	__u32 rsp_event;	/* initialised to 1 */
	__u8 msg;		/* message byte, unused by this ABI variant */
	__u8 __pad[47];
	union blktap_ring_entry ring[BLKTAP_RING_SIZE];
};

#endif /* _UAPI_LINUX_BLKTAP_H */
