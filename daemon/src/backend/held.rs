//! Devices kept open until the process's threads are gone.
//!
//! `argusd` uploads frames from tokio's blocking pool, whose threads are
//! joined only when the runtime is dropped, after `run` has returned and
//! dropped the device. Measured on an H200 (driver 580.159, release build,
//! `--backend wgpu`): after 100-150 detects or masks from 8 clients, SIGTERM
//! ended the process with SIGSEGV just after "argusd stopped" in 5 of 5
//! runs, and with status 0 when the pool's threads had idled out (10 s)
//! before the stop, or with one client. Our reading, not confirmed inside
//! the driver: NVIDIA's Vulkan driver tears down per-thread state as a
//! thread exits, and that fails once the device is gone; gfx-rs/wgpu#8365
//! reports crashes of this kind at exit on NVIDIA's Linux driver. So the
//! binary holds each device it opens here and drops it only after the
//! runtime, and with it every thread that used the device, has shut down:
//! the order of the runs that exited cleanly. The fix itself has not yet
//! run on a GPU (see BENCHMARKS.md, "Accelerator backends").

use std::sync::{Mutex, PoisonError};

use super::Target;

/// `None` until [`hold_devices_until_exit`]: for library users (tests,
/// tools) that never call it, each device is dropped with its last handle.
static HELD: Mutex<Option<Vec<Target>>> = Mutex::new(None);

/// From now on, keep a handle to every GPU device [`super::resolve`] opens
/// until [`release_held_devices`]; each call of `resolve` opens and adds one,
/// so this suits a process that resolves once, as `argusd` does. Called by
/// `argusd`'s `main` before anything runs on its runtime.
pub fn hold_devices_until_exit() {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    held.get_or_insert_with(Vec::new);
}

/// Drop the held devices. Call it only when no other thread that used them
/// is left (in `argusd`: after the tokio runtime is dropped, which joins its
/// worker and blocking threads). Returns how many were held.
pub fn release_held_devices() -> usize {
    let devices = HELD
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_default();
    let n = devices.len();
    drop(devices);
    n
}

/// Keep `target`'s device if holding is on; the CPU has nothing to keep.
pub(super) fn hold(target: &Target) {
    if !target.is_gpu() {
        return;
    }
    if let Some(held) = HELD.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        held.push(target.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The holder is process-wide: the counts below are of the test's own
    // device, so a device another test might hold does not move them.
    #[test]
    fn gpu_devices_are_held_once_asked_and_released_once() {
        #[cfg(feature = "wgpu")]
        {
            use crate::gpu::{AdapterPolicy, Gpu};
            use std::sync::Arc;
            let g = match Gpu::open(AdapterPolicy::Software)
                .or_else(|_| Gpu::open(AdapterPolicy::AnyPreferHardware))
            {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("no wgpu device ({e}): only the CPU case is checked");
                    return;
                }
            };
            release_held_devices();
            hold(&Target::Wgpu(g.clone()));
            assert_eq!(Arc::strong_count(&g), 1, "not held before it is asked for");
            hold_devices_until_exit();
            hold(&Target::Wgpu(g.clone()));
            assert_eq!(Arc::strong_count(&g), 2, "held");
            assert!(release_held_devices() >= 1);
            assert_eq!(Arc::strong_count(&g), 1, "released");
            hold(&Target::Wgpu(g.clone()));
            assert_eq!(
                Arc::strong_count(&g),
                1,
                "nothing is held after the release"
            );
        }
        hold_devices_until_exit();
        hold(&Target::Cpu);
        assert_eq!(release_held_devices(), 0, "the CPU has no device to hold");
    }
}
