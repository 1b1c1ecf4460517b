// SPDX-License-Identifier: GPL-2.0

//! A character device region whose files support `mmap`, `poll` and `ioctl`.
//!
//! `kernel::miscdevice` has no `poll` and gives every device its own dynamic misc minor; the
//! blktap ABI needs one char region whose minor numbers are the tap minors.
//!
//! C header: [`include/linux/cdev.h`](srctree/include/linux/cdev.h)

use core::{
    marker::PhantomData,
    pin::Pin, //
};

use kernel::{
    bindings,
    error::to_result,
    fs::File,
    mm::virt::VmaNew,
    prelude::*,
    sync::poll::PollTable,
    types::{
        ForeignOwnable,
        Opaque, //
    }, //
};

use super::compat;

/// Bits of a `dev_t` holding the minor number.
const MINOR_BITS: u32 = 20;

/// Builds a `dev_t` from a major and a minor number.
pub(crate) const fn mkdev(major: u32, minor: u32) -> u32 {
    (major << MINOR_BITS) | minor
}

/// The file operations of the devices of a [`Region`].
pub(crate) trait FileOps: Sized + 'static {
    /// Per-open data, stored in the file.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Opens the device with minor number `minor`.
    fn open(minor: u32, file: &File) -> Result<Self::Ptr>;

    /// The last reference to the file is gone.
    fn release(data: Self::Ptr, file: &File);

    /// Maps the device into `vma`.
    fn mmap(data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, file: &File, vma: &VmaNew)
        -> Result;

    /// Registers for wake-ups with `table` and returns the current event mask (`POLL*`).
    fn poll(
        data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        table: PollTable<'_>,
    ) -> u32;

    /// Handles an ioctl.
    fn ioctl(
        data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;
}

struct VTable<T: FileOps>(PhantomData<T>);

impl<T: FileOps> VTable<T> {
    /// # Safety
    ///
    /// Called by the VFS with a valid inode of the region and a file being opened.
    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: the inode is valid during `open`.
        let minor = unsafe { (*inode).i_rdev } & ((1 << MINOR_BITS) - 1);
        // SAFETY: the file is valid during `open` and not shared with other threads yet.
        let f = unsafe { File::from_raw_file(file) };
        match T::open(minor, f) {
            Ok(data) => {
                // SAFETY: nothing else uses `private_data` of our files.
                unsafe { (*file).private_data = data.into_foreign() };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the VFS once, after the last reference to a file opened by `open` is gone.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `private_data` was set by `open` and is not used after `release`.
        let data = unsafe { T::Ptr::from_foreign((*file).private_data) };
        // SAFETY: the file is valid during `release`.
        T::release(data, unsafe { File::from_raw_file(file) });
        0
    }

    /// # Safety
    ///
    /// Called by the VFS with a file opened by `open` and a VMA being set up.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: `private_data` was set by `open`; `release` has not run while the file is used.
        let data = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: the VMA is being set up under the mmap write lock for this call.
        let vma = unsafe { VmaNew::from_raw(vma) };
        // SAFETY: the file is valid for the call.
        match T::mmap(data, unsafe { File::from_raw_file(file) }, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a file opened by `open` and a valid (or NULL) poll table.
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        wait: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: as in `mmap`.
        let data = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: the poll table is valid (or NULL) for the call.
        let table = unsafe { PollTable::from_raw(wait) };
        // SAFETY: the file is valid for the call.
        T::poll(data, unsafe { File::from_raw_file(file) }, table)
    }

    /// # Safety
    ///
    /// Called by the VFS with a file opened by `open`.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: as in `mmap`.
        let data = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: the file is valid for the call.
        match T::ioctl(data, unsafe { File::from_raw_file(file) }, cmd, arg) {
            Ok(ret) => ret as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: compat::this_module(),
        open: Some(Self::open),
        release: Some(Self::release),
        mmap: Some(Self::mmap),
        poll: Some(Self::poll),
        unlocked_ioctl: Some(Self::ioctl),
        ..pin_init::zeroed()
    };
}

/// A registered range of char device numbers.
///
/// # Invariants
///
/// `base`..`base + count` was registered with `alloc_chrdev_region`.
struct Numbers {
    base: u32,
    count: u32,
}

impl Drop for Numbers {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the range is registered.
        unsafe { bindings::unregister_chrdev_region(self.base, self.count) };
    }
}

/// A char device region with a dynamic major, served by `T` for every minor in `0..count`.
///
/// # Invariants
///
/// `cdev` was added for all numbers of `numbers`, with `T`'s file operations.
#[pin_data(PinnedDrop)]
pub(crate) struct Region<T: FileOps> {
    #[pin]
    cdev: Opaque<bindings::cdev>,
    numbers: Numbers,
    _p: PhantomData<fn(T)>,
}

// SAFETY: the cdev is only deleted in `drop`; registration functions are thread-safe.
unsafe impl<T: FileOps> Send for Region<T> {}
// SAFETY: `&Region` only reads the immutable number range.
unsafe impl<T: FileOps> Sync for Region<T> {}

impl<T: FileOps> Region<T> {
    /// Registers `count` minors under `name` (shown in `/proc/devices`) and serves them.
    pub(crate) fn new(name: &'static CStr, count: u32) -> Result<Pin<KBox<Self>>> {
        let mut base: bindings::dev_t = 0;
        // SAFETY: `base` is valid for writes; `name` is a static NUL-terminated string.
        to_result(unsafe {
            bindings::alloc_chrdev_region(&mut base, 0, count, name.as_char_ptr())
        })?;
        // INVARIANT: the range was just registered.
        let numbers = Numbers { base, count };
        KBox::pin_init(
            try_pin_init!(Self {
                cdev <- Opaque::try_ffi_init(|slot: *mut bindings::cdev| {
                    // SAFETY: `slot` is valid, pinned memory for a cdev; `FOPS` is static.
                    unsafe {
                        bindings::cdev_init(slot, &VTable::<T>::FOPS);
                        (*slot).owner = compat::this_module();
                        to_result(bindings::cdev_add(slot, base, count))
                    }
                }),
                numbers,
                _p: PhantomData,
            }),
            GFP_KERNEL,
        )
    }

    /// The dynamically allocated major number.
    pub(crate) fn major(&self) -> u32 {
        self.numbers.base >> MINOR_BITS
    }
}

#[pinned_drop]
impl<T: FileOps> PinnedDrop for Region<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: by the type invariant the cdev was added; open files keep the module (and so
        // the file operations) alive through `owner`.
        unsafe { bindings::cdev_del(self.cdev.get()) };
    }
}
