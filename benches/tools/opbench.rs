//! Per-op timings of CenterFace's CPU kernels (`argus::model::nhwc`) at the
//! shapes a 640x448 input gives them, with GFLOP/s.
//!
//!     cargo run --release --example opbench
//!
//! Each op runs over a whole map on the rayon pool, as in the model; the
//! depthwise row kernel is timed on one thread. Inputs are random.

use argus::model::nhwc::{self, Dense3x3, Depthwise, Map, Pointwise, Upsample2x2};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    f();
    let n = 20;
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    let dt = s.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:44} {:8.3} ms  {:6.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn map(h: usize, w: usize, c: usize) -> Map {
    let mut m = Map::zeros(h, w, c);
    m.data = rand(h * w * c, (h * w * c) as u64);
    m
}

fn main() {
    println!("rayon threads: {}", rayon::current_num_threads());
    for (cin, cout, h, w) in [
        (16, 96, 224, 320),
        (24, 144, 112, 160),
        (144, 24, 112, 160),
        (96, 576, 28, 40),
        (576, 96, 28, 40),
        (160, 960, 14, 20),
        (960, 320, 14, 20),
    ] {
        let pw = Pointwise::new(&rand(cin * cout, 1), &rand(cout, 2), cout, cin);
        let x = map(h, w, cin);
        time(
            &format!("pointwise {cin}->{cout} @{w}x{h}"),
            2.0 * (cin * cout * h * w) as f64,
            || {
                nhwc::pointwise_map(&pw, &x, true, None);
            },
        );
    }
    for (c, h, w, s) in [(144, 112, 160, 1), (96, 224, 320, 2), (576, 28, 40, 1)] {
        let dw = Depthwise::new(&rand(9 * c, 3), &rand(c, 4), c, s);
        let x = map(h, w, c);
        let zeros = vec![0f32; w * c];
        let mut out = vec![0f32; dw.out_dim(w) * c];
        let (ho, wo) = (dw.out_dim(h), dw.out_dim(w));
        time(
            &format!("depthwise {c} s{s} @{w}x{h} (1 thread)"),
            18.0 * (c * ho * wo) as f64,
            || {
                for r in 0..ho {
                    let taps: [&[f32]; 3] =
                        std::array::from_fn(|dy| match (r * s + dy).checked_sub(1) {
                            Some(y) if y < h => x.rows(y..y + 1),
                            _ => &zeros[..],
                        });
                    dw.row(taps, w, &mut out);
                }
            },
        );
    }
    let stem = Dense3x3::new(&rand(32 * 27, 5), &rand(32, 6), 32, 3, 2);
    let img: Vec<u8> = (0..448 * 640 * 3).map(|i| (i * 31 % 251) as u8).collect();
    time("stem input: RGB8 -> padded map", 0.0, || {
        Map::padded_from_hwc_u8(&img, 3, 448, 640);
    });
    let padded = Map::padded_from_hwc_u8(&img, 3, 448, 640);
    time(
        "stem dense3x3 3->32 s2 @640x448",
        2.0 * 27.0 * 32.0 * 71680.0,
        || {
            stem.forward_padded(&padded, true);
        },
    );
    let head = Dense3x3::new(&rand(24 * 216, 7), &rand(24, 8), 24, 24, 1);
    let x = map(112, 160, 24);
    time(
        "head dense3x3 24->24 @160x112",
        2.0 * 216.0 * 24.0 * 17920.0,
        || {
            head.forward(&x, true);
        },
    );
    let up = Upsample2x2::new(&rand(24 * 96, 9), &rand(24, 10), 24, 24);
    let x = map(56, 80, 24);
    time(
        "upsample 2x2 24->24 @80x56",
        2.0 * 24.0 * 96.0 * 4480.0,
        || {
            up.forward(&x);
        },
    );
}
