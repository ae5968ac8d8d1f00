//! Flatten with a Rust progress callback: a C trampoline librbd calls back,
//! and the state it reaches through librbd's `void *` argument.
//!
//! librbd calls the progress function from its own threads while the
//! flattening thread waits, and stops the flatten when it returns a negative
//! value, failing with that value: the trampoline answers -ECANCELED, so a
//! cancel surfaces as ECANCELED like any other librbd cancellation. A panic in
//! the callback must not unwind into C, so it is caught and cancels too.

use std::os::raw::{c_int, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use nix::errno::Errno;

use super::ffi;
use super::FlattenProgress;

/// What the trampoline shares with the waiting thread. The callback sits
/// behind a mutex because nothing in librbd's contract says two of its
/// threads never report progress at the same time.
struct State<'p> {
    progress: FlattenProgress<'p>,
    /// The last (done, total) reported.
    last: Option<(u64, u64)>,
    /// The callback asked to stop (or panicked): every later call answers
    /// cancel without calling it again.
    stopped: bool,
    panicked: bool,
}

type Shared<'p> = Mutex<State<'p>>;

/// Flatten `image`, reporting to `progress`. On failure: the negative code
/// and, when the callback panicked, a message saying so.
pub(super) fn run(
    image: ffi::rbd_image_t,
    progress: FlattenProgress<'_>,
) -> Result<(), (c_int, Option<String>)> {
    let shared: Shared<'_> = Mutex::new(State {
        progress,
        last: None,
        stopped: false,
        panicked: false,
    });
    // SAFETY: `image` is an open handle kept open by the caller for the whole
    // call. `arg` points to `shared`, which outlives the call, and librbd
    // only calls the trampoline before `rbd_flatten_with_progress` returns.
    let rc = unsafe {
        ffi::rbd_flatten_with_progress(
            image,
            Some(trampoline),
            (&shared as *const Shared<'_>).cast_mut().cast(),
        )
    };
    let state = shared
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if rc < 0 {
        let message = state
            .panicked
            .then(|| "the progress callback panicked".to_string());
        return Err((rc, message));
    }
    // librbd's last report may stop short of the total (it reports work
    // started, not finished): tell the caller it is all done.
    if let Some((done, total)) = state.last {
        if done != total && !state.panicked {
            (state.progress)(total, total);
        }
    }
    Ok(())
}

/// The C side of the progress callback: 0 goes on, -ECANCELED stops.
unsafe extern "C" fn trampoline(offset: u64, total: u64, arg: *mut c_void) -> c_int {
    let go_on = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `&Shared` that `run` passed, alive until
        // `rbd_flatten_with_progress` returns, and only read through `&`.
        let shared = unsafe { &*arg.cast_const().cast::<Shared<'_>>() };
        report(shared, offset, total)
    }));
    match go_on {
        Ok(true) => 0,
        Ok(false) => -(Errno::ECANCELED as c_int),
        Err(_) => {
            // SAFETY: as above.
            let shared = unsafe { &*arg.cast_const().cast::<Shared<'_>>() };
            let mut state = shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.stopped = true;
            state.panicked = true;
            -(Errno::ECANCELED as c_int)
        }
    }
}

fn report(shared: &Shared<'_>, done: u64, total: u64) -> bool {
    let mut state = shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.stopped {
        return false;
    }
    state.last = Some((done, total));
    if !(state.progress)(done, total) {
        state.stopped = true;
    }
    !state.stopped
}
