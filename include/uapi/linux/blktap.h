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
/*
 * blktap-rs extension, opt-in: agree on features beyond V-XS before the disk exists (see
 * struct blktap_features). No driver variant used 209. A daemon that never calls it sees V-XS.
 */
#define BLKTAP_IOCTL_NEGOTIATE			209	/* arg: struct blktap_features * (in/out) */

/*
 * V-OXT kernel-driven pause, resume and removal (OpenXT's legacy tapdisk2). The kernel writes a
 * message into the ring's msg byte (offset 16) when the tap's sysfs pause, resume or remove file
 * is written, and poll reports the ring readable while the byte is non-zero; the daemon answers
 * with these ioctls. A daemon that never sees a non-zero byte never needs them.
 */
#define BLKTAP2_IOCTL_SET_PARAMS		203	/* arg: struct blktap2_params * (in); paused */
#define BLKTAP2_IOCTL_PAUSE			204	/* no arg; answers BLKTAP2_RING_MESSAGE_PAUSE */
#define BLKTAP2_IOCTL_REOPEN			205	/* arg: char[BLKTAP2_MAX_MESSAGE_LEN] (out) */
#define BLKTAP2_IOCTL_RESUME			206	/* arg: 0 or -errno, by value; ends a resume */

/* Values of struct blktap_sring.msg, written only by the kernel. */
#define BLKTAP2_RING_MESSAGE_PAUSE		1	/* drain, close the image, answer PAUSE */
#define BLKTAP2_RING_MESSAGE_RESUME		2	/* REOPEN, reopen, SET_PARAMS, answer RESUME */
#define BLKTAP2_RING_MESSAGE_CLOSE		3	/* close the image, unmap and close the ring */

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

/* Argument of BLKTAP_IOCTL_CREATE_DEVICE (V-XS layout, what tapdisk sends): 56 bytes. */
struct blktap_device_info {
	__u64 capacity;			/* size in 512-byte sectors, non-zero */
	__u32 sector_size;		/* logical block size: power of two in [512, 4096] */
	__u32 physical_sector_size;	/* power of two, at least 512 */
	__u64 flags;			/* BLKTAP_DEVICE_RO; other bits ignored (unsigned long) */
	__u64 __rsvd[4];		/* ignored */
};

/*
 * V-DS/V-OXT's argument of BLKTAP_IOCTL_CREATE_DEVICE: 40 bytes, the same ioctl number. The module
 * tells the two layouts apart by the 32-bit word at offset 12: V-XS's physical_sector_size, which
 * V-XS requires to be a power of two of at least 512 (0 was always EINVAL), is padding here, and
 * 0 there selects this layout. The module then reads bytes 0..23, bytes 24..31 only with
 * BLKTAP_DEVICE_PSZ and bytes 32..39 only with BLKTAP_DEVICE_TRIM, checks them (EINVAL and a
 * kernel log line), writes flags & (RO | PSZ | FLUSH | TRIM) back into the caller's flags (EFAULT,
 * and no disk, if it cannot), and only then creates the disk.
 *
 * BLKTAP_DEVICE_FLUSH gives the disk a volatile write cache (BLKTAP_OP_FLUSH, no FUA),
 * BLKTAP_DEVICE_TRIM discard (BLKTAP_OP_DISCARD, V-OXT's TRIM: struct blktap_ring_range_request,
 * at most BLKTAP_MAX_RANGE_SECTORS each), exactly as if the daemon had negotiated
 * BLKTAP_FEAT_FLUSH and BLKTAP_FEAT_DISCARD with these limits (the bits are the same): this call
 * is the session's agreement, and the rules of BLKTAP_IOCTL_NEGOTIATE for an existing disk apply.
 * A session that negotiated already must send the flags of the same agreement, else EINVAL.
 */
#define BLKTAP_DEVICE_PSZ			0x2UL	/* phys_block_size/offset given */
#define BLKTAP_DEVICE_FLUSH			0x4UL	/* volatile write cache: BLKTAP_OP_FLUSH */
#define BLKTAP_DEVICE_TRIM			0x8UL	/* discard: BLKTAP_OP_DISCARD; trim_* given */

struct blktap_device_info_oxt {
	__u64 capacity;			/* size in 512-byte sectors, non-zero */
	__u32 sector_size;		/* logical block size: power of two in [512, 4096] */
	__u32 __pad;			/* 0: selects this layout */
	__u64 flags;			/* BLKTAP_DEVICE_{RO,PSZ,FLUSH,TRIM}; written back masked */
	__u32 phys_block_size;		/* PSZ: power of two, at least sector_size */
	__u32 phys_block_offset;	/* PSZ: multiple of sector_size, below phys_block_size */
	__u32 trim_block_size;		/* TRIM: power of two in [sector_size, 1 GiB] */
	__u32 trim_block_offset;	/* TRIM: multiple of sector_size, below trim_block_size */
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
/* Only sent once negotiated (BLKTAP_IOCTL_NEGOTIATE); 2 and 3 are V-DS/V-OXT's FLUSH and TRIM. */
#define BLKTAP_OP_FLUSH				2	/* no segments, sector_number 0 */
#define BLKTAP_OP_DISCARD			3	/* struct blktap_ring_range_request */
#define BLKTAP_OP_WRITE_ZEROES			5	/* struct blktap_ring_range_request */

/* blktap_ring_request.flags and blktap_ring_range_request.flags (0 unless negotiated). */
#define BLKTAP_REQ_FUA				0x1	/* durable before the response (FEAT_FUA) */
#define BLKTAP_REQ_NOUNMAP			0x2	/* WRITE_ZEROES: keep the range allocated */

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
	__u8 nr_segments;	/* 1 .. BLKTAP_SEGMENT_MAX (0 for BLKTAP_OP_FLUSH) */
	__u16 __pad;
	__u32 flags;		/* BLKTAP_REQ_FUA on writes if negotiated; otherwise 0 (V-XS hole) */
	__u64 id;		/* ring slot 0 .. BLKTAP_RING_SIZE - 1; selects the data pages */
	__u64 sector_number;	/* in 512-byte units, whatever the logical block size */
	struct blktap_segment seg[BLKTAP_SEGMENT_MAX];
};

/*
 * A BLKTAP_OP_DISCARD or BLKTAP_OP_WRITE_ZEROES request, in the same slot (V-DS's TRIM layout:
 * the sector count at offset 24); the rest of the slot is zero. No data pages are used.
 * With BLKTAP_FEAT_LARGE, READ and WRITE take this form too, their data contiguous in the
 * request's data pages.
 */
struct blktap_ring_range_request {
	__u8 operation;		/* BLKTAP_OP_DISCARD or BLKTAP_OP_WRITE_ZEROES (LARGE: any) */
	__u8 nr_segments;	/* 0 */
	__u16 __pad;
	__u32 flags;		/* BLKTAP_REQ_FUA, BLKTAP_REQ_NOUNMAP */
	__u64 id;		/* ring slot 0 .. BLKTAP_RING_SIZE - 1 */
	__u64 sector_number;	/* first 512-byte sector */
	__u64 nr_sectors;	/* 512-byte sectors, 1 .. the negotiated maximum */
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
	struct blktap_ring_range_request range;
	struct blktap_ring_response rsp;
};

/* The ring page. Indices are written with release semantics and read with acquire semantics. */
struct blktap_sring {
	__u32 req_prod;		/* written by the kernel */
	__u32 req_event;	/* initialised to 1 */
	__u32 rsp_prod;		/* written by the daemon */
	__u32 rsp_event;	/* initialised to 1 */
	__u8 msg;		/* BLKTAP2_RING_MESSAGE_* or 0 (V-OXT); never written by the daemon */
	__u8 __pad[47];
	union blktap_ring_entry ring[BLKTAP_RING_SIZE];
};

/*
 * Feature negotiation (blktap-rs; not in any older driver variant).
 *
 * BLKTAP_IOCTL_NEGOTIATE on the mapped ring, before CREATE_DEVICE: the daemon sets size,
 * version, the features it wants and the limits of those it wants (zero for the others; the
 * reserved words zero). The module answers with size (its own struct size), supported (what
 * this tap may use: the module's features minus those the administrator switched off) and
 * features = wanted & supported, and keeps that agreement for the disk the same session then
 * creates. Only agreed ops reach the daemon; a daemon that never negotiates gets V-XS.
 *
 * EINVAL (and a kernel log line) for: a size below BLKTAP_FEATURES_SIZE_V1 or above 4096, or
 * non-zero bytes past the module's struct; a version other than 1; unknown feature bits (the
 * module has then written size and supported, so that a newer daemon can retry with
 * wanted & supported); FUA without FLUSH; a limit that is out of range, or non-zero for a
 * feature not wanted; LARGE with max_segments, or DEEP with ring_slots, other than the
 * mapping's; DEEP with more than BLKTAP_DEEP_DATA_PAGES_MAX data pages; non-zero reserved
 * words; a second negotiation once the session's disk exists. A new daemon taking over an existing disk (recovery) must ask for exactly the disk's
 * features and limits, else EINVAL.
 *
 * The feature bits are those of V-DS/V-OXT's device-info flags where they exist (FLUSH 0x4,
 * TRIM 0x8); 0x1 (RO), 0x2 (PSZ) and 0x10 (TRIM_RZ) stay unused so as not to mean two things.
 */
#define BLKTAP_FEATURES_VERSION			1
#define BLKTAP_FEATURES_SIZE_V1			64	/* sizeof(struct blktap_features), version 1 */

#define BLKTAP_FEAT_FLUSH			0x4	/* volatile write cache: BLKTAP_OP_FLUSH */
#define BLKTAP_FEAT_DISCARD			0x8	/* BLKTAP_OP_DISCARD */
#define BLKTAP_FEAT_FUA				0x20	/* BLKTAP_REQ_FUA on writes; needs FLUSH */
#define BLKTAP_FEAT_WRITE_ZEROES		0x40	/* BLKTAP_OP_WRITE_ZEROES */
#define BLKTAP_FEAT_LARGE			0x80	/* large requests: see below */
/*
 * Low latency: the kernel publishes each request to the ring from the submitter's context
 * (the disk's queue is a blocking one) instead of when the daemon next polls, so a daemon that
 * watches req_prod for a while after each batch (busy-polling, bounded) takes it without being
 * woken and without a poll(2). Waking and poll work as always for a daemon that sleeps.
 */
#define BLKTAP_FEAT_LOW_LATENCY			0x100
#define BLKTAP_FEAT_DEEP			0x200	/* deep rings: see below */

/* Largest max_discard_sectors / max_write_zeroes_sectors: the most one bio carries (4 GiB - 512). */
#define BLKTAP_MAX_RANGE_SECTORS		0x7fffff
/* Largest discard_granularity in bytes (a power of two, at least 512). */
#define BLKTAP_MAX_DISCARD_GRANULARITY		0x40000000

/*
 * Large requests (BLKTAP_FEAT_LARGE, with max_segments = S, BLKTAP_SEGMENT_MAX < S <=
 * BLKTAP_LARGE_SEGMENT_MAX): the daemon maps the ring with S data pages per request,
 * BLKTAP_MMAP_PAGES_LARGE(S) pages in all (any such size is accepted by mmap; NEGOTIATE wants
 * S to match the mapping). The data pages of request id are then BLKTAP_LARGE_DATA_PAGE(S, id,
 * 0 .. S - 1), and every READ and WRITE is a struct blktap_ring_range_request with
 * nr_segments 0: its data is nr_sectors (1 .. 8 * S) 512-byte sectors, contiguous from the
 * first byte of its first data page. A disk made by such a session takes requests of up to
 * 4 * S KiB. Without the feature, the layout and the requests are V-XS's whatever the size
 * of the mapping.
 */
#define BLKTAP_LARGE_SEGMENT_MAX		256	/* 1 MiB per request */
#define BLKTAP_MMAP_PAGES_LARGE(s)		(1 + BLKTAP_RING_SIZE * (s))
#define BLKTAP_LARGE_DATA_PAGE(s, id, seg)	(1 + (id) * (s) + (seg))

/*
 * Deep rings (BLKTAP_FEAT_DEEP, with ring_slots = N, a power of two in
 * [BLKTAP_DEEP_RING_SLOTS_MIN, BLKTAP_DEEP_RING_SLOTS_MAX]): the ring has N entries, request
 * ids 0 .. N - 1, and ring index i lives in entry i mod N. struct blktap_sring's header is
 * unchanged, its ring[] array is N entries long and spans BLKTAP_RING_PAGES(N) pages; the data
 * pages follow, S per request (S = max_segments with BLKTAP_FEAT_LARGE, else
 * BLKTAP_SEGMENT_MAX): BLKTAP_DEEP_MMAP_PAGES(N, S) pages in all, with N * S at most
 * BLKTAP_DEEP_DATA_PAGES_MAX, and the pages of request id are BLKTAP_DEEP_DATA_PAGE(N, S, id,
 * 0 .. S - 1). mmap accepts any such size; NEGOTIATE wants N and S to match the mapping. A
 * disk made by such a session has N tags (its queue depth); the requests themselves are as
 * without the feature. The same formulas with N = BLKTAP_RING_SIZE give the other layouts.
 */
#define BLKTAP_DEEP_RING_SLOTS_MIN		64
#define BLKTAP_DEEP_RING_SLOTS_MAX		1024
#define BLKTAP_DEEP_DATA_PAGES_MAX		32768	/* 128 MiB of data pages */
#define BLKTAP_RING_PAGES(n)			((64 + 112 * (n) + 4095) / 4096)
#define BLKTAP_DEEP_MMAP_PAGES(n, s)		(BLKTAP_RING_PAGES(n) + (n) * (s))
#define BLKTAP_DEEP_DATA_PAGE(n, s, id, seg)	(BLKTAP_RING_PAGES(n) + (id) * (s) + (seg))

/* Argument of BLKTAP_IOCTL_NEGOTIATE: 64 bytes in version 1. */
struct blktap_features {
	__u32 size;			/* in: sizeof as the caller knows it; out: the module's */
	__u32 version;			/* BLKTAP_FEATURES_VERSION */
	__u64 features;			/* in: BLKTAP_FEAT_* wanted; out: agreed (wanted & supported) */
	__u64 supported;		/* out: BLKTAP_FEAT_* this tap supports; in: ignored */
	__u32 discard_granularity;	/* bytes, power of two in [512, MAX_DISCARD_GRANULARITY] */
	__u32 discard_alignment;	/* bytes, multiple of 512, below discard_granularity */
	__u32 max_discard_sectors;	/* 512-byte sectors per request, in [1, MAX_RANGE_SECTORS] */
	__u32 max_write_zeroes_sectors;	/* 512-byte sectors per request, same range */
	__u32 max_segments;		/* BLKTAP_FEAT_LARGE: data pages per request */
	__u32 ring_slots;		/* BLKTAP_FEAT_DEEP: ring entries */
	__u64 __rsvd[2];		/* zero */
};

#endif /* _UAPI_LINUX_BLKTAP_H */
