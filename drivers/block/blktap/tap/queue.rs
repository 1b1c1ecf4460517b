// SPDX-License-Identifier: GPL-2.0

//! The block device side of a tap: blk-mq callbacks forwarding to [`Tap`].

use kernel::{
    prelude::*,
    sync::{
        Arc,
        ArcBorrow, //
    }, //
};

use crate::{
    kernel_ext::blk::{
        Operations,
        Request,
        RequestId,
        TimeoutAction, //
    },
    tap::Tap,
};

/// The blk-mq operations of a tap's disk.
pub(crate) struct TapQueue;

impl Operations for TapQueue {
    type QueueData = Arc<Tap>;

    fn queue_rq(tap: ArcBorrow<'_, Tap>, rq: Request, is_last: bool) -> Result<(), Request> {
        tap.queue(rq, is_last)
    }

    fn commit_rqs(tap: ArcBorrow<'_, Tap>) {
        tap.commit();
    }

    fn timeout(tap: ArcBorrow<'_, Tap>, id: RequestId) -> TimeoutAction {
        Tap::timed_out(tap, id)
    }

    fn open(tap: ArcBorrow<'_, Tap>) -> Result {
        Tap::disk_opened(tap)
    }

    fn release(tap: ArcBorrow<'_, Tap>) {
        Tap::disk_released(tap);
    }
}
