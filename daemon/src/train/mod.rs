//! Training of the models this project trains itself.

pub mod bccd;
pub mod malaria;
pub mod wbc;

/// Learning rate at `progress` (0 to 1) of a run: cosine decay from `base`
/// to `floor` times it (SGDR, Loshchilov & Hutter 2017, without restarts).
pub fn cosine_lr(base: f64, floor: f64, progress: f64) -> f64 {
    base * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// The source pixel of output pixel (`x`, `y`) under the `t`-th (0..8) of
/// the 8 flips and rotations of a square whose last index is `n` (the
/// dihedral group's augmentation; `t` 0 is the identity).
pub fn dihedral_source(x: usize, y: usize, n: usize, t: u8) -> (usize, usize) {
    match t {
        0 => (x, y),
        1 => (n - x, y),
        2 => (x, n - y),
        3 => (n - x, n - y),
        4 => (y, x),
        5 => (n - y, x),
        6 => (y, n - x),
        _ => (n - y, n - x),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_eight_looks_are_distinct_permutations() {
        let n = 2;
        let looks: Vec<Vec<(usize, usize)>> = (0..8)
            .map(|t| {
                (0..=n)
                    .flat_map(|y| (0..=n).map(move |x| super::dihedral_source(x, y, n, t)))
                    .collect()
            })
            .collect();
        for (i, a) in looks.iter().enumerate() {
            let mut sorted = a.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 9, "look {i} is a permutation");
            assert!(looks[i + 1..].iter().all(|b| b != a), "look {i} is unique");
        }
    }

    #[test]
    fn the_rate_falls_from_base_to_its_floor() {
        assert!((super::cosine_lr(0.01, 0.05, 0.0) - 0.01).abs() < 1e-12);
        assert!((super::cosine_lr(0.01, 0.05, 0.5) - 0.01 * 0.525).abs() < 1e-12);
        assert!((super::cosine_lr(0.01, 0.05, 1.0) - 0.0005).abs() < 1e-12);
    }
}
