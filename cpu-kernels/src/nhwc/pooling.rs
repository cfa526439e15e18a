//! The UNets' non-convolution layers in NHWC: 2x2 max-pooling and the
//! crop-and-concatenate of a decoder stage's skip connection.

use super::{par_rows, Map};

/// 2x2 max-pooling with stride 2 (odd trailing rows or columns dropped, as
/// Keras' `MaxPooling2D` does with `valid` padding).
pub fn max_pool2x2(x: &Map) -> Map {
    let (h, w, c) = (x.h / 2, x.w / 2, x.c);
    let mut out = Map::recycled(h, w, c);
    let rl = x.row_len();
    par_rows(&mut out, 1, |rows, dst| {
        for (i, y) in rows.enumerate() {
            let (a, b) = (
                &x.data[2 * y * rl..][..rl],
                &x.data[(2 * y + 1) * rl..][..rl],
            );
            for (ox, o) in dst[i * w * c..][..w * c].chunks_exact_mut(c).enumerate() {
                let at = 2 * ox * c;
                let (a0, a1) = (&a[at..][..c], &a[at + c..][..c]);
                let (b0, b1) = (&b[at..][..c], &b[at + c..][..c]);
                for (ch, o) in o.iter_mut().enumerate() {
                    *o = a0[ch].max(a1[ch]).max(b0[ch].max(b1[ch]));
                }
            }
        }
    });
    out
}

/// `[skip cropped by `crop` pixels on every side, up]` along channels: the
/// skip's centre must be exactly `up`'s size.
///
/// # Panics
/// If the cropped skip and `up` differ in size.
pub fn concat_cropped(skip: &Map, crop: usize, up: &Map) -> Map {
    assert_eq!(
        (skip.h - 2 * crop, skip.w - 2 * crop),
        (up.h, up.w),
        "concat_cropped: the cropped skip is not the upsampled map's size"
    );
    let (h, w, cs, cu) = (up.h, up.w, skip.c, up.c);
    let c = cs + cu;
    let mut out = Map::recycled(h, w, c);
    par_rows(&mut out, 1, |rows, dst| {
        for (i, y) in rows.enumerate() {
            let s = &skip.data[((y + crop) * skip.w + crop) * cs..][..w * cs];
            let u = &up.data[y * w * cu..][..w * cu];
            let d = &mut dst[i * w * c..][..w * c];
            for ((d, s), u) in d
                .chunks_exact_mut(c)
                .zip(s.chunks_exact(cs))
                .zip(u.chunks_exact(cu))
            {
                d[..cs].copy_from_slice(s);
                d[cs..].copy_from_slice(u);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(h: usize, w: usize, c: usize) -> Map {
        let mut m = Map::zeros(h, w, c);
        for (i, v) in m.data.iter_mut().enumerate() {
            *v = ((i * 7919) % 101) as f32 - 50.0;
        }
        m
    }

    #[test]
    fn max_pool_takes_each_blocks_maximum() {
        let x = map(7, 6, 3);
        let y = max_pool2x2(&x);
        assert_eq!((y.h, y.w, y.c), (3, 3, 3));
        for oy in 0..3 {
            for ox in 0..3 {
                for ch in 0..3 {
                    let want = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .iter()
                        .map(|(dy, dx)| x.data[((2 * oy + dy) * 6 + 2 * ox + dx) * 3 + ch])
                        .fold(f32::MIN, f32::max);
                    assert_eq!(y.data[(oy * 3 + ox) * 3 + ch], want);
                }
            }
        }
    }

    #[test]
    fn concat_puts_the_cropped_skip_first() {
        let (skip, up) = (map(9, 10, 2), map(5, 6, 3));
        let y = concat_cropped(&skip, 2, &up);
        assert_eq!((y.h, y.w, y.c), (5, 6, 5));
        for py in 0..5 {
            for px in 0..6 {
                let o = &y.data[(py * 6 + px) * 5..][..5];
                assert_eq!(o[..2], skip.data[((py + 2) * 10 + px + 2) * 2..][..2]);
                assert_eq!(o[2..], up.data[(py * 6 + px) * 3..][..3]);
            }
        }
    }
}
