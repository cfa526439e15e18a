//! Turning probability maps into counted objects: connected components,
//! Euclidean distance transform and marker-based watershed, written for the
//! cell counter (`pipeline::cells`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An object found in a map, in map pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub label: u32,
    pub area: usize,
    pub x0: usize,
    pub y0: usize,
    /// Exclusive.
    pub x1: usize,
    pub y1: usize,
}

impl Region {
    fn new(label: u32, x: usize, y: usize) -> Self {
        Self {
            label,
            area: 0,
            x0: x,
            y0: y,
            x1: x + 1,
            y1: y + 1,
        }
    }

    fn add(&mut self, x: usize, y: usize) {
        self.area += 1;
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x + 1);
        self.y1 = self.y1.max(y + 1);
    }
}

const N8: [(i64, i64); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

/// 8-connected components of `fg`. Returns the label image (0 = background,
/// labels from 1) and one region per label.
pub fn components(fg: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<Region>) {
    let mut labels = vec![0u32; fg.len()];
    let mut regions = Vec::new();
    let mut stack = Vec::new();
    for start in 0..fg.len() {
        if !fg[start] || labels[start] != 0 {
            continue;
        }
        let label = regions.len() as u32 + 1;
        let mut r = Region::new(label, start % width, start / width);
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            r.add(x, y);
            for (dx, dy) in N8 {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if fg[j] && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            }
        }
        regions.push(r);
    }
    (labels, regions)
}

/// 1-D squared distance transform (Felzenszwalb & Huttenlocher 2012).
fn edt_1d(f: &[f32], d: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    for q in 1..n {
        loop {
            let p = v[k];
            let s = ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * (q - p) as f32);
            if s <= z[k] && k > 0 {
                k -= 1;
                continue;
            }
            if s <= z[k] {
                // k == 0 and the new parabola wins everywhere.
                v[0] = q;
                z[1] = f32::INFINITY;
                break;
            }
            k += 1;
            v[k] = q;
            z[k] = s;
            z[k + 1] = f32::INFINITY;
            break;
        }
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f32 - p as f32;
        *out = dq * dq + f[p];
    }
}

/// Exact Euclidean distance from each foreground pixel to the nearest
/// background pixel (pixels outside the map count as background).
pub fn distance_transform(fg: &[bool], width: usize, height: usize) -> Vec<f32> {
    const INF: f32 = 1e20;
    // Pad by one so the map's border is next to background.
    let (w, h) = (width + 2, height + 2);
    let mut grid = vec![0f32; w * h];
    for y in 0..height {
        for x in 0..width {
            if fg[y * width + x] {
                grid[(y + 1) * w + x + 1] = INF;
            }
        }
    }
    let n = w.max(h);
    let (mut f, mut d, mut v, mut z) = (
        vec![0f32; n],
        vec![0f32; n],
        vec![0usize; n],
        vec![0f32; n + 1],
    );
    for x in 0..w {
        for y in 0..h {
            f[y] = grid[y * w + x];
        }
        edt_1d(&f[..h], &mut d[..h], &mut v, &mut z);
        for y in 0..h {
            grid[y * w + x] = d[y];
        }
    }
    for y in 0..h {
        f[..w].copy_from_slice(&grid[y * w..(y + 1) * w]);
        edt_1d(&f[..w], &mut d[..w], &mut v, &mut z);
        grid[y * w..(y + 1) * w].copy_from_slice(&d[..w]);
    }
    let mut out = vec![0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] = grid[(y + 1) * w + x + 1].sqrt();
        }
    }
    out
}

/// Exact squared Euclidean distance from each pixel to the nearest pixel of
/// `sources` (0 on a source; pixels outside the map are not sources;
/// `f32::INFINITY`-like 1e20 when there is none).
pub fn squared_distance_to(sources: &[bool], width: usize, height: usize) -> Vec<f32> {
    const INF: f32 = 1e20;
    let mut grid: Vec<f32> = sources.iter().map(|&s| if s { 0.0 } else { INF }).collect();
    let n = width.max(height);
    let (mut f, mut d, mut v, mut z) = (
        vec![0f32; n],
        vec![0f32; n],
        vec![0usize; n],
        vec![0f32; n + 1],
    );
    for x in 0..width {
        for y in 0..height {
            f[y] = grid[y * width + x];
        }
        edt_1d(&f[..height], &mut d[..height], &mut v, &mut z);
        for y in 0..height {
            grid[y * width + x] = d[y].min(INF);
        }
    }
    for y in 0..height {
        f[..width].copy_from_slice(&grid[y * width..(y + 1) * width]);
        edt_1d(&f[..width], &mut d[..width], &mut v, &mut z);
        for (g, &dd) in grid[y * width..(y + 1) * width].iter_mut().zip(&d[..width]) {
            *g = dd.min(INF);
        }
    }
    grid
}

#[derive(PartialEq)]
struct Item {
    priority: f32,
    order: u64,
    index: usize,
}

impl Eq for Item {}

impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Max-heap on priority; FIFO among equals keeps fronts even.
        self.priority
            .total_cmp(&o.priority)
            .then_with(|| o.order.cmp(&self.order))
    }
}

impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Marker-controlled watershed by priority flooding: every pixel of `mask`
/// joins the marker that reaches it first, flooding from high `height`
/// (e.g. the distance transform: cell centres) to low. Pixels outside `mask`
/// stay 0; mask pixels no marker can reach stay 0 too.
pub fn watershed(
    markers: &[u32],
    height_map: &[f32],
    mask: &[bool],
    width: usize,
    height: usize,
) -> Vec<u32> {
    let mut labels = markers.to_vec();
    let mut heap = BinaryHeap::new();
    let mut order = 0u64;
    let mut queued = vec![false; labels.len()];
    for (i, &l) in markers.iter().enumerate() {
        if l != 0 {
            queued[i] = true;
            heap.push(Item {
                priority: height_map[i],
                order,
                index: i,
            });
            order += 1;
        }
    }
    while let Some(Item { index, .. }) = heap.pop() {
        let (x, y) = (index % width, index / width);
        let label = labels[index];
        for (dx, dy) in N8 {
            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
            if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                continue;
            }
            let j = ny as usize * width + nx as usize;
            if mask[j] && !queued[j] {
                queued[j] = true;
                labels[j] = label;
                heap.push(Item {
                    priority: height_map[j],
                    order,
                    index: j,
                });
                order += 1;
            }
        }
    }
    labels
}

/// Peaks of `values` (`width` x `height`, row-major): pixels at least
/// `min_value` and no lower than any of their 8 neighbours, of which the
/// highest are kept first and none closer than `min_separation` px to one
/// already kept (greedy non-maximum suppression; ties go to the earlier
/// pixel in row-major order, so the result does not depend on anything but
/// the values). Returns the kept pixels' indices, highest first.
///
/// On a distance transform these are the centres of the round parts of a
/// shape, the classic markers of a watershed that splits touching objects.
///
/// # Panics
/// When `values` is not `width * height` long.
pub fn peaks(
    values: &[f32],
    width: usize,
    height: usize,
    min_value: f32,
    min_separation: f32,
) -> Vec<usize> {
    assert_eq!(values.len(), width * height, "values is not width x height");
    let min_separation = min_separation.max(0.0);
    let mut candidates: Vec<usize> = (0..values.len())
        .filter(|&i| {
            let v = values[i];
            if v < min_value {
                return false;
            }
            let (x, y) = ((i % width) as i64, (i / width) as i64);
            N8.iter().all(|&(dx, dy)| {
                let (nx, ny) = (x + dx, y + dy);
                nx < 0
                    || ny < 0
                    || nx >= width as i64
                    || ny >= height as i64
                    || values[ny as usize * width + nx as usize] <= v
            })
        })
        .collect();
    candidates.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    // Kept peaks are bucketed in a grid of min_separation-sized cells, so a
    // candidate is checked against the 3x3 buckets around it only.
    let cell = min_separation.max(1.0);
    let gw = (width as f32 / cell).ceil() as usize + 1;
    let gh = (height as f32 / cell).ceil() as usize + 1;
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); gw * gh];
    let sep2 = min_separation * min_separation;
    let mut kept = Vec::new();
    for i in candidates {
        let (x, y) = (i % width, i / width);
        let (gx, gy) = ((x as f32 / cell) as usize, (y as f32 / cell) as usize);
        let near = (gy.saturating_sub(1)..=(gy + 1).min(gh - 1)).any(|by| {
            (gx.saturating_sub(1)..=(gx + 1).min(gw - 1)).any(|bx| {
                grid[by * gw + bx].iter().any(|&k| {
                    let (kx, ky) = ((k % width) as f32, (k / width) as f32);
                    (kx - x as f32).powi(2) + (ky - y as f32).powi(2) < sep2
                })
            })
        });
        if !near {
            grid[gy * gw + gx].push(i);
            kept.push(i);
        }
    }
    kept
}

/// Regions of a label image (labels 1..=max), with empty labels left out.
pub fn regions_of(labels: &[u32], width: usize) -> Vec<Region> {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut out: Vec<Option<Region>> = vec![None; max + 1];
    for (i, &l) in labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let (x, y) = (i % width, i / width);
        out[l as usize]
            .get_or_insert_with(|| Region::new(l, x, y))
            .add(x, y);
    }
    out.into_iter().flatten().collect()
}

/// The pixels of `set` 4-connected to the border through `set`.
pub fn joined_to_border(set: &[bool], width: usize, height: usize) -> Vec<bool> {
    let mut joined = vec![false; set.len()];
    let mut stack = Vec::new();
    let seed = |i: usize, joined: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if set[i] && !joined[i] {
            joined[i] = true;
            stack.push(i);
        }
    };
    for x in 0..width {
        seed(x, &mut joined, &mut stack);
        seed((height - 1) * width + x, &mut joined, &mut stack);
    }
    for y in 0..height {
        seed(y * width, &mut joined, &mut stack);
        seed(y * width + width - 1, &mut joined, &mut stack);
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % width, i / width);
        if x > 0 {
            seed(i - 1, &mut joined, &mut stack);
        }
        if x + 1 < width {
            seed(i + 1, &mut joined, &mut stack);
        }
        if y > 0 {
            seed(i - width, &mut joined, &mut stack);
        }
        if y + 1 < height {
            seed(i + width, &mut joined, &mut stack);
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(w: usize, h: usize, discs: &[(f32, f32, f32)]) -> Vec<bool> {
        let mut m = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                m[y * w + x] = discs
                    .iter()
                    .any(|&(cx, cy, r)| (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r);
            }
        }
        m
    }

    #[test]
    fn components_count_separate_blobs() {
        let m = disc(
            60,
            40,
            &[(10.0, 10.0, 5.0), (40.0, 20.0, 8.0), (10.0, 33.0, 3.0)],
        );
        let (_, regions) = components(&m, 60, 40);
        assert_eq!(regions.len(), 3);
        let big = regions.iter().max_by_key(|r| r.area).unwrap();
        assert_eq!((big.x0, big.x1, big.y0, big.y1), (32, 49, 12, 29));
    }

    #[test]
    fn distance_transform_is_euclidean() {
        let (w, h) = (31, 31);
        let m = disc(w, h, &[(15.0, 15.0, 10.0)]);
        let d = distance_transform(&m, w, h);
        // Centre of a radius-10 disc: ~10.5 px from the nearest outside pixel.
        assert!((d[15 * w + 15] - 11.0).abs() <= 1.0, "{}", d[15 * w + 15]);
        assert_eq!(d[0], 0.0);
        // Against brute force everywhere.
        for y in 0..h {
            for x in 0..w {
                let mut best = f32::INFINITY;
                for yy in -1..=h as i64 {
                    for xx in -1..=w as i64 {
                        let inside = xx >= 0 && yy >= 0 && xx < w as i64 && yy < h as i64;
                        if !inside || !m[yy as usize * w + xx as usize] {
                            let dd = ((x as i64 - xx).pow(2) + (y as i64 - yy).pow(2)) as f32;
                            best = best.min(dd.sqrt());
                        }
                    }
                }
                assert!(
                    (d[y * w + x] - best).abs() < 1e-3,
                    "({x},{y}) {} vs {best}",
                    d[y * w + x]
                );
            }
        }
    }

    #[test]
    fn peaks_find_each_disc_centre_once() {
        let (w, h) = (80, 40);
        // Two touching discs and a small one: the distance transform peaks
        // at each big disc's centre; the small one is under min_value.
        let m = disc(
            w,
            h,
            &[(18.0, 20.0, 12.0), (40.0, 20.0, 12.0), (68.0, 20.0, 4.0)],
        );
        let d = distance_transform(&m, w, h);
        let p = peaks(&d, w, h, 8.0, 10.0);
        assert_eq!(p.len(), 2, "{p:?}");
        let mut xy: Vec<(usize, usize)> = p.iter().map(|&i| (i % w, i / w)).collect();
        xy.sort();
        assert!(
            xy[0].0.abs_diff(18) <= 1 && xy[0].1.abs_diff(20) <= 1,
            "{xy:?}"
        );
        assert!(
            xy[1].0.abs_diff(40) <= 1 && xy[1].1.abs_diff(20) <= 1,
            "{xy:?}"
        );
        // A separation wider than the discs' distance keeps one.
        assert_eq!(peaks(&d, w, h, 8.0, 30.0).len(), 1);
        // A plateau gives peaks min_separation apart, not one per pixel.
        let flat = vec![1.0f32; 25];
        assert_eq!(peaks(&flat, 5, 5, 0.5, 3.0), vec![0, 3, 15, 18]);
    }

    #[test]
    fn watershed_splits_touching_discs() {
        let (w, h) = (60, 30);
        let m = disc(w, h, &[(18.0, 15.0, 11.0), (40.0, 15.0, 11.0)]);
        let (_, one) = components(&m, w, h);
        assert_eq!(one.len(), 1, "the discs touch");
        let d = distance_transform(&m, w, h);
        let mut markers = vec![0u32; w * h];
        markers[15 * w + 18] = 1;
        markers[15 * w + 40] = 2;
        let labels = watershed(&markers, &d, &m, w, h);
        let regions = regions_of(&labels, w);
        assert_eq!(regions.len(), 2);
        assert!(regions.iter().all(|r| r.area > 300));
        assert_eq!(labels[15 * w + 10], 1);
        assert_eq!(labels[15 * w + 48], 2);
    }
}
