//! Training of the models this project trains itself.

pub mod malaria;
pub mod wbc;

/// Learning rate at `progress` (0 to 1) of a run: cosine decay from `base`
/// to `floor` times it (SGDR, Loshchilov & Hutter 2017, without restarts).
pub fn cosine_lr(base: f64, floor: f64, progress: f64) -> f64 {
    base * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rate_falls_from_base_to_its_floor() {
        assert!((super::cosine_lr(0.01, 0.05, 0.0) - 0.01).abs() < 1e-12);
        assert!((super::cosine_lr(0.01, 0.05, 0.5) - 0.01 * 0.525).abs() < 1e-12);
        assert!((super::cosine_lr(0.01, 0.05, 1.0) - 0.0005).abs() < 1e-12);
    }
}
