//! One memory budget for the decoded pixels of every request in flight.
//!
//! A compressed image says little about what it costs: a 113 KB PNG of
//! 6300x6300 decodes to 119 MB, and a few dozen of those at once would
//! exhaust the machine. Each decode first reserves what its pixels will
//! hold at their peak, from the image's header, and keeps the reservation
//! until the request is done; a request that cannot get it in time is
//! refused (503, Retry-After) rather than allocating.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per reservation unit.
const UNIT: u64 = 64 * 1024;
/// What one pixel of a decoding request holds at its peak, in bytes: the
/// decoder's frame (3-4, up to 8 for 16-bit RGBA), its RGB copy (3) and
/// the working copies of detection and masking (the masked frame, the
/// encoder's input).
pub const BYTES_PER_PIXEL: u64 = 12;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "decoding this {width}x{height} image needs about {need_mb} MB, more than the whole \
         decode memory budget of {total_mb} MB (limits.decode_budget_bytes)"
    )]
    TooLarge {
        width: u32,
        height: u32,
        need_mb: u64,
        total_mb: u64,
    },
    #[error("the decode memory budget is in use by other requests; try again shortly")]
    Busy,
}

/// The budget; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct PixelBudget {
    sem: Arc<Semaphore>,
    units: u32,
    wait: Duration,
}

/// A held share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
    /// Bytes reserved.
    pub bytes: u64,
}

impl PixelBudget {
    /// `total_bytes` shared by all requests; a request waits at most
    /// `wait` for its share.
    pub fn new(total_bytes: u64, wait: Duration) -> Self {
        let units = (total_bytes / UNIT).clamp(1, u32::MAX as u64 / 2) as u32;
        Self {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
            wait,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.units as u64 * UNIT
    }

    pub fn available_bytes(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// Reserve what decoding `image` (encoded bytes) will hold: its
    /// header's width x height x [`BYTES_PER_PIXEL`]. A header that cannot
    /// be read reserves nothing (decoding it fails before allocating).
    pub async fn reserve(&self, image: &[u8]) -> Result<Reservation, BudgetError> {
        let Ok(size) = imagesize::blob_size(image) else {
            return Ok(Reservation {
                _permit: None,
                bytes: 0,
            });
        };
        let (w, h) = (size.width as u64, size.height as u64);
        let bytes = w.saturating_mul(h).saturating_mul(BYTES_PER_PIXEL);
        let units = bytes.div_ceil(UNIT).max(1);
        if units > self.units as u64 {
            return Err(BudgetError::TooLarge {
                width: w as u32,
                height: h as u32,
                need_mb: bytes >> 20,
                total_mb: self.total_bytes() >> 20,
            });
        }
        let acquire = self.sem.clone().acquire_many_owned(units as u32);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation {
                _permit: Some(permit),
                bytes,
            }),
            _ => Err(BudgetError::Busy),
        }
    }
}

/// The default budget: a quarter of the machine's memory, at least 256 MiB.
pub fn default_budget_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on failure.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let total = if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        4 << 30
    };
    (total / 4).max(256 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        b.extend(b"IHDR");
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[tokio::test]
    async fn reservations_share_the_budget_and_give_it_back() {
        // Room for two 1000x1000 images (12 MB each) but not three.
        let b = PixelBudget::new(30 << 20, Duration::from_millis(50));
        let img = png_header(1000, 1000);
        let r1 = b.reserve(&img).await.unwrap();
        let r2 = b.reserve(&img).await.unwrap();
        assert_eq!(r1.bytes, 12_000_000);
        assert!(matches!(b.reserve(&img).await, Err(BudgetError::Busy)));
        drop(r1);
        let _r3 = b.reserve(&img).await.unwrap();
        drop(r2);
        // Bigger than the whole budget: refused at once, not waited for.
        match b.reserve(&png_header(6300, 6300)).await {
            Err(BudgetError::TooLarge {
                need_mb, total_mb, ..
            }) => {
                assert_eq!((need_mb, total_mb), (454, 30))
            }
            other => panic!("{other:?}"),
        }
        // Not an image header: nothing reserved (the decoder refuses it).
        assert_eq!(b.reserve(b"not an image").await.unwrap().bytes, 0);
        assert!(default_budget_bytes() >= 256 << 20);
    }
}
