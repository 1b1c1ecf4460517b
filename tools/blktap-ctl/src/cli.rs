//! The command line of `blktap-ctl`.
//!
//! It lives in the library so that `blktap-man` renders the manual page from the very
//! definition the tool parses.

use blktap::Control;
use blktap::{node, sysfs};
use clap::{Args as ClapArgs, Parser, Subcommand};
use std::path::PathBuf;

/// Manage blktap2 taps: allocate and free minors, start and stop blktapd daemons.
///
/// A tap is a minor of the blktap2 driver. It has a ring device that one daemon (blktapd)
/// opens and maps, and a block device /dev/td<letters> whose I/O the daemon serves. Like
/// tap-ctl, blktap-ctl creates its own device nodes: DEV_DIR/blktap<N> (ring) and
/// DEV_DIR/tapdev<N> (disk).
#[derive(Debug, Parser)]
#[command(name = "blktap-ctl", version, about, long_about)]
pub struct Cli {
    /// Control device node [default: first existing of /dev/xen/blktap-2/control,
    /// /dev/blktap-control, /dev/blktap/control; created from /proc/misc if none exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Directory for the ring and disk nodes.
    #[arg(long, global = true, value_name = "DIR", default_value = node::DEV_DIR)]
    pub dev_dir: PathBuf,

    /// Mount point of sysfs.
    #[arg(long, global = true, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Allocate a tap, create its nodes and print its minor.
    Alloc,

    /// Free a tap (its ring must be closed and unmapped) and remove its nodes.
    Free {
        /// Minor of the tap.
        #[arg(short, long, value_name = "N")]
        minor: u32,
    },

    /// Allocate a tap, start blktapd on it and print the disk node once the disk exists.
    ///
    /// On any failure the tap is freed again. The daemon keeps running in its own session
    /// after blktap-ctl exits; stop it with `blktap-ctl destroy`.
    Create(Box<CreateArgs>),

    /// Stop the daemon of a tap, free the tap and remove its nodes.
    ///
    /// Sends SIGTERM to the process recorded in sysfs `task`, waits for it to release the
    /// ring (the daemon removes the disk first, which waits until nobody has it open), then
    /// frees the tap.
    Destroy {
        /// Minor of the tap.
        #[arg(short, long, value_name = "N")]
        minor: u32,

        /// Seconds to wait for the daemon to exit and the tap to become free.
        #[arg(short, long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
    },

    /// Fail every request of a tap now, and every later one, as if its daemon had died.
    ///
    /// For a daemon that is alive but stuck: its disk's users get EIO instead of waiting
    /// forever, and the disk can then be removed. Lasts until the daemon unmaps the ring
    /// (kill it, then `blktap-ctl destroy` or `free`). Writes the tap's sysfs `abort`.
    Abort {
        /// Minor of the tap.
        #[arg(short, long, value_name = "N")]
        minor: u32,
    },

    /// Hold a tap's requests for SECS seconds when its daemon dies, for the next daemon.
    ///
    /// While no daemon maps the ring, the disk keeps its requests (in flight and new) for up to
    /// SECS seconds, and the next daemon that serves the tap (tapdisk after `tap-ctl spawn`,
    /// `attach` and `open` on the same minor, or blktapd) gets them all. They fail with EIO
    /// only when the window ends. Writes may be served twice. 0 turns it off (the default:
    /// requests fail at once when the daemon goes). Writes the tap's sysfs `recovery`.
    Recover {
        /// Minor of the tap.
        #[arg(short, long, value_name = "N")]
        minor: u32,

        /// Length of the window in seconds (0: off).
        #[arg(short, long, value_name = "SECS")]
        window: u32,
    },

    /// List allocated taps: minor, daemon pid, disk, state and name.
    ///
    /// PID and DISK are "-" for a tap without a daemon or without a disk (a tap has a disk
    /// while /sys/class/blktap2/devices lists it). States: idle (ring closed, no disk), open
    /// (ring open, no disk), active (ring open and disk present), closing (disk present but
    /// no daemon).
    List,
}

/// Options of `create`.
#[derive(Debug, ClapArgs)]
pub struct CreateArgs {
    /// Backend served by blktapd: null[:SIZE], mem[:SIZE] or file:PATH.
    #[arg(short, long, value_name = "SPEC")]
    pub backend: String,

    /// Size of a null or mem backend if SPEC has none (bytes, K/M/G/T suffixes).
    #[arg(short, long, value_name = "SIZE")]
    pub size: Option<String>,

    /// Create a read-only disk.
    #[arg(short = 'R', long)]
    pub read_only: bool,

    /// Logical and physical sector size of the disk.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,

    /// Features beyond V-XS for blktapd to negotiate (its `--features`): a comma-separated
    /// list of flush, fua, discard, write-zeroes, all (those four), large (requests of up to
    /// --max-segments pages), low-latency (requests published at once, blktapd watches the
    /// ring), deep (a ring of --ring-slots entries: the disk's queue depth). Without it the
    /// disk is plain V-XS.
    #[arg(long, value_name = "LIST")]
    pub features: Option<String>,

    /// Data pages per request with large, passed to blktapd (its `--max-segments`, 12-256).
    #[arg(long, value_name = "N")]
    pub max_segments: Option<u32>,

    /// Ring entries with deep, passed to blktapd (its `--ring-slots`: a power of two from 64
    /// to 1024).
    #[arg(long, value_name = "N")]
    pub ring_slots: Option<u32>,

    /// With low-latency, microseconds blktapd watches the ring after each batch (its
    /// `--spin-us`).
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,

    /// Driver ABI for blktapd to speak (its `--abi`): xs (default) or oxt (V-OXT: the 40-byte
    /// device info with FLUSH and TRIM, and the ring message byte).
    #[arg(long, value_name = "ABI", conflicts_with = "features")]
    pub abi: Option<String>,

    /// Discard granularity in bytes, passed to blktapd (with discard).
    #[arg(long, value_name = "BYTES")]
    pub discard_granularity: Option<u32>,

    /// The file backend's I/O path, passed to blktapd (its `--io`): uring, sync or auto.
    #[arg(long, value_name = "MODE")]
    pub io: Option<String>,

    /// Request timeout of the tap, passed to blktapd (its `--timeout`): a request that waits
    /// SECS seconds for the daemon fails with EIO, and so does every later one until the
    /// daemon is restarted; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = sysfs::DAEMON_TIMEOUT)]
    pub request_timeout: u32,

    /// Seconds to wait for the daemon to report that the disk exists (as `destroy --timeout`
    /// is the wait for the tap to become free).
    #[arg(
        short = 't',
        long = "timeout",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub wait: u64,

    /// Daemon log file (default: inherit standard error).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// blktapd executable [default: next to blktap-ctl, else found on PATH].
    #[arg(long, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
}

impl Cli {
    /// Opens the control device: `--control` if given, else the default search.
    pub fn control(&self) -> blktap::Result<Control> {
        match &self.control {
            Some(p) => Control::open(p),
            None => Control::open_default(),
        }
    }

    /// The `blktap2` class directory under `--sysfs`.
    pub fn class_dir(&self) -> PathBuf {
        self.sysfs.join("class/blktap2")
    }
}
