//! Smoothing of a subject's metric history (`smoothed_results/`), main
//! metrics only, as the reference describes: the samples are the subject's
//! results of the same metric taken at most `sample_time_window` days
//! before the image asked about (that image included, later ones not),
//! the `sample_max_size` most recent of them. Then:
//!
//! - `mean`: the arithmetic mean of the samples;
//! - `mean_without_outliers`: the mean of the samples left after Tukey's
//!   fences: a sample is an outlier when it lies below Q1 − 1.5·IQR or above
//!   Q3 + 1.5·IQR, quartiles by linear interpolation between order
//!   statistics (Hyndman and Fan's type 7, NumPy's default). With fewer
//!   than 4 samples no quartile is meaningful and nothing is dropped;
//! - `linear_approximation`: the least-squares line through (time in
//!   days, value), evaluated at the time of the image asked about; one
//!   sample, or samples all at one time, give their mean.

/// A smoothing method of the reference API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Mean,
    MeanWithoutOutliers,
    LinearApproximation,
}

impl Method {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Self::Mean),
            "mean_without_outliers" => Some(Self::MeanWithoutOutliers),
            "linear_approximation" => Some(Self::LinearApproximation),
            _ => None,
        }
    }
}

/// The samples of `series` ((unix seconds, value), any order) that count
/// for an image taken at `at`: within `window_days` before it, at most
/// `max_size` of the most recent, oldest first.
pub fn window(
    series: &[(u64, f64)],
    at: u64,
    window_days: u32,
    max_size: usize,
) -> Vec<(u64, f64)> {
    let from = at.saturating_sub(window_days as u64 * 86_400);
    let mut s: Vec<(u64, f64)> = series
        .iter()
        .copied()
        .filter(|(t, v)| *t >= from && *t <= at && v.is_finite())
        .collect();
    s.sort_by_key(|(t, _)| *t);
    let skip = s.len().saturating_sub(max_size);
    s.split_off(skip)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Quantile `q` of sorted `v` (type 7).
fn quantile(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// The values Tukey's fences keep.
pub fn without_outliers(values: &[f64]) -> Vec<f64> {
    if values.len() < 4 {
        return values.to_vec();
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&s, 0.25), quantile(&s, 0.75));
    let iqr = q3 - q1;
    let (lo, hi) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    values
        .iter()
        .copied()
        .filter(|v| *v >= lo && *v <= hi)
        .collect()
}

/// The smoothed value at `at` of `samples` (from [`window`]); None when
/// there are none.
pub fn smooth(method: Method, samples: &[(u64, f64)], at: u64) -> Option<f64> {
    let values: Vec<f64> = samples.iter().map(|(_, v)| *v).collect();
    match method {
        Method::Mean => mean(&values),
        Method::MeanWithoutOutliers => mean(&without_outliers(&values)),
        Method::LinearApproximation => {
            let n = samples.len() as f64;
            let days: Vec<f64> = samples
                .iter()
                .map(|(t, _)| (*t as f64 - at as f64) / 86_400.0)
                .collect();
            let (mx, my) = (mean(&days)?, mean(&values)?);
            let sxx: f64 = days.iter().map(|x| (x - mx).powi(2)).sum();
            if n < 2.0 || sxx == 0.0 {
                return Some(my);
            }
            let sxy: f64 = days
                .iter()
                .zip(&values)
                .map(|(x, y)| (x - mx) * (y - my))
                .sum();
            let slope = sxy / sxx;
            // The line at t = `at`, which is x = 0.
            Some(my - slope * mx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn window_keeps_recent_samples_up_to_the_image() {
        let at = 100 * DAY;
        let s = [
            (at - 20 * DAY, 1.0), // outside 14 days
            (at - 14 * DAY, 2.0), // on the edge: in
            (at - 3 * DAY, 3.0),
            (at, 4.0),
            (at + DAY, 5.0), // after the image: out
        ];
        assert_eq!(
            window(&s, at, 14, 10),
            vec![(at - 14 * DAY, 2.0), (at - 3 * DAY, 3.0), (at, 4.0)]
        );
        assert_eq!(window(&s, at, 14, 2), vec![(at - 3 * DAY, 3.0), (at, 4.0)]);
    }

    #[test]
    fn mean_and_tukey_fences_by_hand() {
        let at = 10 * DAY;
        let s: Vec<(u64, f64)> = [10.0, 12.0, 11.0, 13.0, 40.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (at - (4 - i as u64) * DAY, *v))
            .collect();
        // (10 + 12 + 11 + 13 + 40) / 5 = 17.2
        assert!((smooth(Method::Mean, &s, at).unwrap() - 17.2).abs() < 1e-9);
        // Sorted 10 11 12 13 40: Q1 = 11, Q3 = 13, IQR = 2, fences [8, 16]:
        // 40 is an outlier; mean of the rest = 11.5.
        assert_eq!(
            without_outliers(&[10.0, 12.0, 11.0, 13.0, 40.0]),
            vec![10.0, 12.0, 11.0, 13.0]
        );
        assert!((smooth(Method::MeanWithoutOutliers, &s, at).unwrap() - 11.5).abs() < 1e-9);
        // Three samples: nothing dropped.
        assert_eq!(without_outliers(&[1.0, 2.0, 100.0]).len(), 3);
    }

    #[test]
    fn linear_approximation_by_hand() {
        let at = 30 * DAY;
        // Days -3, -2, -1, 0 with values 1, 3, 2, 4: mean x = -1.5, mean y = 2.5,
        // Sxx = 5, Sxy = (-1.5)(-1.5) + (-0.5)(0.5) + (0.5)(-0.5) + (1.5)(1.5) = 4,
        // slope 0.8, value at x = 0: 2.5 + 0.8 * 1.5 = 3.7.
        let s = [
            (at - 3 * DAY, 1.0),
            (at - 2 * DAY, 3.0),
            (at - DAY, 2.0),
            (at, 4.0),
        ];
        assert!((smooth(Method::LinearApproximation, &s, at).unwrap() - 3.7).abs() < 1e-9);
        assert_eq!(
            smooth(Method::LinearApproximation, &[(at, 5.0)], at),
            Some(5.0)
        );
        assert_eq!(
            smooth(Method::LinearApproximation, &[(at, 5.0), (at, 7.0)], at),
            Some(6.0)
        );
        assert_eq!(smooth(Method::Mean, &[], at), None);
        assert_eq!(Method::parse("median"), None);
    }
}
