// SPDX-License-Identifier: GPL-2.0

//! sysfs attributes of the `blktap2` class and of each tap (`/sys/class/blktap2/blktap!blktap<N>`).

use core::fmt::Write;

use kernel::{
    prelude::*,
    sync::atomic::Relaxed, //
};

use crate::{
    kernel_ext::class::{
        AttrFile,
        Attributes,
        SysfsWriter, //
    },
    registry,
    tap::Tap,
    uapi::{
        FEAT_DISCARD,
        FEAT_WRITE_ZEROES, //
    },
};

fn fmt_err(_: core::fmt::Error) -> Error {
    EINVAL
}

/// Parses a decimal integer as `sscanf("%d")` would accept it (surrounding whitespace allowed).
fn parse_int(input: &[u8]) -> Result<i32> {
    let s = core::str::from_utf8(input).map_err(|_| EINVAL)?;
    s.trim().parse::<i32>().map_err(|_| EINVAL)
}

/// Parses `0` or `1`.
fn parse_switch(input: &[u8]) -> Result<bool> {
    match parse_int(input)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(EINVAL),
    }
}

impl Attributes for Tap {
    const DEVICE_ATTRS: &'static [(&'static CStr, u16)] = &[
        (c"name", 0o644),
        (c"debug", 0o444),
        (c"task", 0o444),
        (c"pool", 0o600),
        (c"timeout", 0o644),
        (c"abort", 0o200),
        (c"recovery", 0o644),
        (c"discard", 0o644),
        (c"write_zeroes", 0o644),
        (c"pause", 0o200),
        (c"resume", 0o200),
        (c"remove", 0o200),
        (c"message_timeout", 0o644),
    ];
    const CLASS_ATTRS: &'static [(&'static CStr, u16)] =
        &[(c"verbosity", 0o644), (c"devices", 0o444)];

    fn show(tap: &Tap, name: &CStr, out: &mut SysfsWriter) -> Result {
        match name.to_bytes() {
            b"name" => tap.show_name(out).map_err(fmt_err),
            b"debug" => tap.show_debug(out).map_err(fmt_err),
            b"task" => match tap.task() {
                Some(pid) => writeln!(out, "{pid}").map_err(fmt_err),
                None => Ok(()),
            },
            b"pool" => tap.show_pool(out).map_err(fmt_err),
            b"timeout" => writeln!(out, "{}", tap.timeout_secs()).map_err(fmt_err),
            b"recovery" => writeln!(out, "{}", tap.recovery_secs()).map_err(fmt_err),
            b"message_timeout" => writeln!(out, "{}", tap.message_timeout_secs()).map_err(fmt_err),
            b"discard" => {
                writeln!(out, "{}", u8::from(tap.offered() & FEAT_DISCARD != 0)).map_err(fmt_err)
            }
            b"write_zeroes" => {
                writeln!(out, "{}", u8::from(tap.offered() & FEAT_WRITE_ZEROES != 0))
                    .map_err(fmt_err)
            }
            _ => Err(EINVAL),
        }
    }

    fn store(tap: &Tap, name: &CStr, input: &[u8], file: &AttrFile<'_>) -> Result {
        match name.to_bytes() {
            b"name" => tap.set_name(input),
            b"pool" => tap.set_pool(input),
            b"timeout" => {
                tap.set_timeout_secs(u32::try_from(parse_int(input)?).map_err(|_| EINVAL)?);
                Ok(())
            }
            b"recovery" => {
                tap.set_recovery_secs(u32::try_from(parse_int(input)?).map_err(|_| EINVAL)?);
                Ok(())
            }
            b"discard" => tap.switch_feature(FEAT_DISCARD, parse_switch(input)?),
            b"write_zeroes" => tap.switch_feature(FEAT_WRITE_ZEROES, parse_switch(input)?),
            // Any write aborts ("1" by convention).
            b"abort" => tap.abort(),
            // V-OXT: any write pauses, resumes or removes ("1" by convention).
            b"pause" => tap.pause(),
            b"resume" => tap.resume(),
            // The tap's device goes with the tap, from this callback (see
            // `AttrFile::unprotected`).
            b"remove" => registry::remove_tap(tap, |remove_device| file.unprotected(remove_device)),
            b"message_timeout" => {
                tap.set_message_timeout_secs(u32::try_from(parse_int(input)?).map_err(|_| EINVAL)?)
            }
            _ => Err(EINVAL),
        }
    }

    fn show_class(name: &CStr, out: &mut SysfsWriter) -> Result {
        match name.to_bytes() {
            b"verbosity" => writeln!(out, "{}", registry::verbosity()).map_err(fmt_err),
            b"devices" => registry::for_each_tap(|tap| {
                tap.with_disk_name(|has_disk, name| {
                    if !has_disk {
                        return Ok(());
                    }
                    write!(out, "{} ", tap.minor()).map_err(fmt_err)?;
                    out.write_bytes(name);
                    writeln!(out).map_err(fmt_err)
                })
            }),
            _ => Err(EINVAL),
        }
    }

    fn store_class(name: &CStr, input: &[u8]) -> Result {
        match name.to_bytes() {
            b"verbosity" => {
                registry::VERBOSITY.store(parse_int(input)?, Relaxed);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }
}
