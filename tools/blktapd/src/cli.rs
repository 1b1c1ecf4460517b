//! The command line of `blktapd`.
//!
//! It lives in the library so that `blktap-man` renders the manual page from the very
//! definition the daemon parses.

use crate::backend::{parse_size, BackendSpec, IoMode};
use blktap::{node, sysfs};
use clap::Parser;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Parses `--sector-size`: a power of two in 512..=4096.
pub fn parse_sector_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("invalid sector size {s:?}"))?;
    if !(512..=4096).contains(&n) || !n.is_power_of_two() {
        return Err(format!(
            "sector size {n} is not a power of two in 512..=4096"
        ));
    }
    Ok(n)
}

/// Parses `--features`: a comma-separated list of `flush`, `fua`, `discard`, `write-zeroes`,
/// `large`, `low-latency`, `deep`, or `all` (the first four), or `none`; returns the `FEAT_*`
/// bits.
pub fn parse_features(s: &str) -> Result<u64, String> {
    use blktap::uapi::{
        FEATURES_ALL, FEAT_DEEP, FEAT_DISCARD, FEAT_FLUSH, FEAT_FUA, FEAT_LARGE, FEAT_LOW_LATENCY,
        FEAT_WRITE_ZEROES,
    };
    let mut bits = 0;
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        bits |= match word {
            "flush" => FEAT_FLUSH,
            "fua" => FEAT_FUA,
            "discard" | "trim" => FEAT_DISCARD,
            "write-zeroes" | "write_zeroes" => FEAT_WRITE_ZEROES,
            "large" => FEAT_LARGE,
            "low-latency" | "low_latency" => FEAT_LOW_LATENCY,
            "deep" => FEAT_DEEP,
            "all" => FEATURES_ALL,
            "none" => 0,
            _ => {
                return Err(format!(
                    "unknown feature {word:?} (flush, fua, discard, write-zeroes, large, \
                     low-latency, deep, all, none)"
                ))
            }
        };
    }
    Ok(bits)
}

/// Parses `--ring-slots`: a power of two in 64..=1024.
fn parse_ring_slots(s: &str) -> Result<u32, String> {
    use blktap::uapi::{DEEP_RING_SLOTS_MAX, DEEP_RING_SLOTS_MIN};
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !n.is_power_of_two() || !(DEEP_RING_SLOTS_MIN..=DEEP_RING_SLOTS_MAX).contains(&n) {
        return Err(format!(
            "{n}: a power of two from {DEEP_RING_SLOTS_MIN} to {DEEP_RING_SLOTS_MAX}"
        ));
    }
    Ok(n)
}

/// The driver line whose ABI blktapd speaks (`--abi`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Abi {
    /// XenServer's (V-XS), as tapdisk 3.x: the 56-byte CREATE_DEVICE, and the negotiation
    /// with --features.
    #[default]
    Xs,
    /// OpenXT's (V-OXT): the 40-byte CREATE_DEVICE with FLUSH|TRIM|PSZ, and the ring message
    /// byte (PAUSE, RESUME, CLOSE).
    Oxt,
}

/// Default per-request maximum of discard and write-zeroes, in 512-byte sectors: the most the
/// driver accepts, rounded down to a multiple of 4 KiB.
pub const DEFAULT_MAX_RANGE_SECTORS: u32 = blktap::uapi::MAX_RANGE_SECTORS & !7;

/// Serve a blktap ring: create the tap's block device and answer its I/O requests.
///
/// blktapd opens and maps the ring device of an allocated tap, creates the block device
/// (/dev/td<letters>) with the capacity of the backend, and then answers every request
/// the kernel puts on the ring. On SIGTERM or SIGINT it removes the block device, waiting
/// (and still serving I/O) while the disk is open, unmaps the ring and exits with status 0.
/// The tap itself stays allocated; free it with `blktap-ctl free`.
#[derive(Debug, Parser)]
#[command(name = "blktapd", version, about, long_about)]
#[command(
    after_help = "BACKENDS:\n  null:SIZE   complete every request at once without touching data\n  \
mem:SIZE    a RAM disk, initially zero\n  file:PATH   an image file or block device (O_DIRECT when possible)\n\n\
SIZE is in bytes with an optional K, M, G or T suffix (powers of 1024) and must be a multiple of 512.\n\n\
EXAMPLES:\n  blktapd --minor 0 --backend mem:64M --foreground\n  \
blktapd --ring /dev/blktap/blktap3 --backend file:/srv/disk.img --read-only"
)]
pub struct Args {
    /// Ring device node to serve.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "minor",
        conflicts_with = "minor"
    )]
    pub ring: Option<PathBuf>,

    /// Tap minor to serve: uses DEV_DIR/blktap<N>, else /dev/blktap/blktap<N>.
    #[arg(short, long, value_name = "N")]
    pub minor: Option<u32>,

    /// Directory of the tap-ctl style nodes, used with --minor.
    #[arg(long, value_name = "DIR", default_value = node::DEV_DIR)]
    pub dev_dir: PathBuf,

    /// What to serve: null[:SIZE], mem[:SIZE] or file:PATH.
    #[arg(short, long, value_name = "SPEC")]
    pub backend: BackendSpec,

    /// Size of a null or mem backend, if not given in SPEC.
    #[arg(short, long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,

    /// Create a read-only disk; writes are answered with an error and files are opened
    /// O_RDONLY.
    #[arg(short = 'R', long)]
    pub read_only: bool,

    /// Logical and physical sector size of the disk (512, 1024, 2048 or 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 512, value_parser = parse_sector_size)]
    pub sector_size: u32,

    /// Write "ready\n" to this inherited file descriptor once the disk exists, then close it.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<RawFd>,

    /// Stay in the foreground. Otherwise blktapd forks before opening the ring, the child
    /// starts a new session, and the parent exits 0 once the disk exists (1 on failure).
    #[arg(short, long)]
    pub foreground: bool,

    /// Append log messages to FILE instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Fail a request with EIO once it has waited SECS seconds for this daemon's answer; 0:
    /// never. Sets the tap's sysfs `timeout` once the ring is mapped (the driver's own default,
    /// its `request_timeout` parameter, is 0, as V-XS, which tapdisk needs). After a timeout
    /// the driver fails every request of this daemon and sends it no more until it unmaps
    /// the ring: restart it.
    #[arg(short, long, value_name = "SECS", default_value_t = sysfs::DAEMON_TIMEOUT)]
    pub timeout: u32,

    /// Ask the kernel to hold the disk's requests for SECS seconds if this daemon dies, and to
    /// send them to the next daemon that serves the tap (a blktapd started again on the same
    /// minor): a crash or an upgrade within that window costs no I/O error. Writes may then be
    /// served twice: both daemons must write the same data to the same place (a file backend
    /// does). 0 turns it off (requests fail at once, as V-XS does). Sets the tap's sysfs
    /// `recovery`; without this option the tap's setting is left as it is.
    #[arg(long, value_name = "SECS")]
    pub recover: Option<u32>,

    /// Negotiate features beyond V-XS with the driver before creating the disk: a
    /// comma-separated list of flush (a volatile write cache: fsync reaches the backend, which
    /// fdatasyncs its file), fua (forced-unit-access writes, with flush), discard (TRIM: the
    /// file backend punches holes), write-zeroes (the file backend zeroes ranges with
    /// fallocate), all (these four), large (requests of up to --max-segments pages, 1 MiB by
    /// default, instead of 44 KiB: the ring is mapped larger), low-latency (the kernel
    /// publishes requests as they come and blktapd watches the ring for --spin-us after each
    /// batch before sleeping), none. Without it blktapd does not negotiate at all and the disk
    /// is the plain V-XS one. The disk gets only what the driver also supports (the tap's sysfs
    /// `discard` and `write_zeroes` switch those off); a driver without the negotiation
    /// (ENOTTY) gives a V-XS disk, with a warning.
    #[arg(long, value_name = "LIST", value_parser = parse_features)]
    pub features: Option<u64>,

    /// Driver ABI to speak: xs (the default: V-XS, with --features) or oxt (V-OXT: creates
    /// the disk with the 40-byte device info asking for FLUSH (fdatasync of the file) and TRIM
    /// (punched holes; zeroes on mem) with --discard-granularity, does not negotiate, and
    /// answers the ring message byte: PAUSE closes the image and acknowledges, RESUME reopens
    /// the image the kernel names (the tap's name, `type:path` or a path; empty: the same
    /// one), CLOSE unmaps the ring and exits).
    #[arg(long, value_enum, value_name = "ABI", default_value_t = Abi::Xs, conflicts_with = "features")]
    pub abi: Abi,

    /// Discard granularity in bytes, with --features discard (a power of two, 512 or more).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub discard_granularity: u32,

    /// Largest discard request in 512-byte sectors, with --features discard.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RANGE_SECTORS)]
    pub max_discard_sectors: u32,

    /// Largest write-zeroes request in 512-byte sectors, with --features write-zeroes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_RANGE_SECTORS)]
    pub max_write_zeroes_sectors: u32,

    /// Data pages (4 KiB) per request, with --features large: 12 to 256. The ring mapping
    /// holds 32 times that many (32 MiB for 256).
    #[arg(long, value_name = "N", default_value_t = blktap::uapi::LARGE_SEGMENT_MAX,
          value_parser = clap::value_parser!(u32).range(12..=256))]
    pub max_segments: u32,

    /// Ring entries, with --features deep: a power of two from 64 to 1024 (the disk's queue
    /// depth). The ring mapping holds that many requests' data pages (at most 128 MiB, so 128
    /// entries with 256 data pages each).
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = parse_ring_slots)]
    pub ring_slots: u32,

    /// With --features low-latency: microseconds to watch the ring for new requests after
    /// each batch before sleeping in poll (1 to 100000). An idle daemon spins only this long
    /// after its last request.
    #[arg(long, value_name = "US", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub spin_us: u64,

    /// How the file backend does its I/O: uring (io_uring: each batch taken from the ring is
    /// one io_uring_enter, with the ring's data pages as registered buffers where the kernel
    /// allows it; blktapd fails to start if io_uring is unavailable), sync (preadv/pwritev, one
    /// system call per request or sequential run), or auto: io_uring unless the kernel refuses
    /// it (kernel.io_uring_disabled, a seccomp filter, no io_uring), then sync. The log says
    /// which path serves the disk. Without this option the BLKTAPD_IO environment variable
    /// gives the mode; else auto.
    #[arg(long, value_name = "MODE")]
    pub io: Option<IoMode>,
}

impl Args {
    /// The I/O path: `--io`, else `$BLKTAPD_IO`, else auto.
    pub fn io_mode(&self) -> Result<IoMode, String> {
        if let Some(m) = self.io {
            return Ok(m);
        }
        match std::env::var(crate::uring::IO_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|e| format!("{}: {e}", crate::uring::IO_ENV)),
            _ => Ok(IoMode::default()),
        }
    }
}
