// SPDX-License-Identifier: GPL-2.0

//! The ring character devices `blktap<N>` (region `blktap2`, minor = tap minor).

use core::mem::size_of;

use kernel::{
    fs::File,
    mm::virt::VmaNew,
    prelude::*,
    sync::{
        poll::PollTable,
        Arc,
        ArcBorrow, //
    },
    transmute::FromBytes,
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use core::mem::size_of_val;

use crate::{
    kernel_ext::chrdev::FileOps,
    registry,
    ring::{
        is_oxt_layout,
        oxt_info,
        oxt_len,
        params_name,
        DeviceConfig,
        CREATE_HEAD_SIZE,
        FEATURES_SIZE_MAX,
        OXT_FLAGS_KNOWN, //
    },
    tap::Tap,
    uapi::{
        Blktap2Params,
        DeviceInfo,
        Features,
        FEATURES_SIZE_V1,
        IOCTL_CREATE_DEVICE,
        IOCTL_CREATE_DEVICE_COMPAT,
        IOCTL_NEGOTIATE,
        IOCTL_PAUSE,
        IOCTL_REMOVE_DEVICE,
        IOCTL_REOPEN,
        IOCTL_RESPOND,
        IOCTL_RESUME,
        IOCTL_SET_PARAMS,
        NAME_MAX, //
    },
};

/// File operations of the ring devices.
pub(crate) struct RingFile;

/// Copies a `T` from userspace; done before taking any tap lock.
fn read_user<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read::<T>()
}

/// `CREATE_DEVICE`: tells V-XS's 56-byte layout from V-OXT's 40-byte one by the word at offset
/// 12 ([`is_oxt_layout`]) and reads only what the layout and its flags select. V-OXT: checks
/// the caller (`EACCES`) and the geometry (`EINVAL`, logged), writes the flags back masked
/// (before any disk exists, so an `EFAULT` leaves nothing behind; with no tap lock held), then
/// creates the disk with the features the flags claim.
fn create_device(tap: ArcBorrow<'_, Tap>, arg: usize) -> Result {
    let mut bytes = [0u8; 40];
    UserSlice::new(UserPtr::from_addr(arg), CREATE_HEAD_SIZE)
        .reader()
        .read_slice(&mut bytes[..CREATE_HEAD_SIZE])?;
    let mut head = [0u8; CREATE_HEAD_SIZE];
    head.copy_from_slice(&bytes[..CREATE_HEAD_SIZE]);
    if !is_oxt_layout(&head) {
        let info = read_user::<DeviceInfo>(arg)?;
        return Tap::create_device(tap, DeviceConfig::from_info(&info), None, false);
    }
    let flags = oxt_info(&bytes).flags;
    let len = oxt_len(flags);
    if len > CREATE_HEAD_SIZE {
        UserSlice::new(
            UserPtr::from_addr(arg).wrapping_byte_add(CREATE_HEAD_SIZE),
            len - CREATE_HEAD_SIZE,
        )
        .reader()
        .read_slice(&mut bytes[CREATE_HEAD_SIZE..len])?;
    }
    tap.check_caller()?;
    let info = oxt_info(&bytes);
    let config = DeviceConfig::from_oxt(&info).map_err(|why| {
        pr_warn!(
            "blktap{}: CREATE_DEVICE (V-OXT layout, flags {:#x}) refused: {}\n",
            tap.minor(),
            flags,
            why
        );
        EINVAL
    })?;
    UserSlice::new(
        UserPtr::from_addr(arg).wrapping_byte_add(16),
        size_of::<u64>(),
    )
    .writer()
    .write(&(flags & OXT_FLAGS_KNOWN))?;
    Tap::create_device(tap, Ok(config), None, true)
}

/// `NEGOTIATE`: reads the caller's `Features` (its `size` bytes: at least ours, at most
/// `FEATURES_SIZE_MAX`, anything past ours zero), lets the tap agree, writes the answer back.
fn negotiate(tap: &Tap, arg: usize) -> Result {
    let size = read_user::<u32>(arg)?;
    if !(FEATURES_SIZE_V1..=FEATURES_SIZE_MAX).contains(&size) {
        pr_warn!(
            "blktap: NEGOTIATE refused: size {} (this module's is {})\n",
            size,
            FEATURES_SIZE_V1
        );
        return Err(EINVAL);
    }
    let mut reader = UserSlice::new(UserPtr::from_addr(arg), size as usize).reader();
    let req = reader.read::<Features>()?;
    let mut rest = [0u8; 64];
    while !reader.is_empty() {
        let n = reader.len().min(rest.len());
        reader.read_slice(&mut rest[..n])?;
        if rest[..n].iter().any(|&b| b != 0) {
            pr_warn!("blktap: NEGOTIATE refused: non-zero bytes past the module's struct\n");
            return Err(EINVAL);
        }
    }
    let mut writer = UserSlice::new(UserPtr::from_addr(arg), size_of_val(&req)).writer();
    match tap.negotiate(&req) {
        Ok((answer, undo)) => writer
            .write(&answer)
            .inspect_err(|_| tap.undo_negotiation(undo)),
        Err((e, Some(answer))) => {
            writer.write(&answer)?;
            Err(e)
        }
        Err((e, None)) => Err(e),
    }
}

/// `REOPEN` (V-OXT): copies the tap's name and a NUL into the caller's 256-byte buffer, after
/// the tap's locks are released.
fn reopen(tap: &Tap, arg: usize) -> Result {
    let mut name = [0u8; NAME_MAX];
    let len = tap.ioctl_reopen(&mut name)?;
    UserSlice::new(UserPtr::from_addr(arg), len)
        .writer()
        .write_slice(&name[..len])
}

impl FileOps for RingFile {
    type Ptr = Arc<Tap>;

    fn open(minor: u32, _file: &File) -> Result<Arc<Tap>> {
        let tap = registry::lookup(minor)?;
        tap.open_ring()?;
        Ok(tap)
    }

    fn release(tap: Arc<Tap>, _file: &File) {
        tap.release_ring();
    }

    fn mmap(tap: ArcBorrow<'_, Tap>, _file: &File, vma: &VmaNew) -> Result {
        Tap::mmap(tap, vma)
    }

    fn poll(tap: ArcBorrow<'_, Tap>, file: &File, table: PollTable<'_>) -> u32 {
        tap.poll(file, table)
    }

    fn ioctl(tap: ArcBorrow<'_, Tap>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            IOCTL_RESPOND => tap.respond()?,
            IOCTL_CREATE_DEVICE => create_device(tap, arg)?,
            IOCTL_CREATE_DEVICE_COMPAT => {
                let params = read_user::<Blktap2Params>(arg)?;
                let config = DeviceConfig::from_params(&params);
                Tap::create_device(tap, config, Some(params_name(&params)), false)?
            }
            IOCTL_REMOVE_DEVICE => tap.remove_device()?,
            IOCTL_NEGOTIATE => negotiate(&tap, arg)?,
            IOCTL_SET_PARAMS => tap.ioctl_set_params(&read_user::<Blktap2Params>(arg)?)?,
            IOCTL_PAUSE => tap.ioctl_pause()?,
            IOCTL_REOPEN => reopen(&tap, arg)?,
            // The result is a C `int` passed by value.
            IOCTL_RESUME => tap.ioctl_resume(arg as u32 as i32)?,
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
