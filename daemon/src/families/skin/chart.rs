//! Line charts of a subject's history, laid out on the server for the
//! console's inline SVG (`templates/console/skin_subject.html`): no script
//! and no style attribute, so they pass the console's CSP. Time runs along
//! x in proportion, the metric along y with round-numbered ticks.

use time::OffsetDateTime;

/// The drawing's size (its `viewBox`); it scales to the page's width.
pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 52.0;

/// One metric over time: (unix seconds, value) in time order.
pub struct Series<'a> {
    /// Short stable name (`ita`), for element ids.
    pub key: &'static str,
    pub label: &'static str,
    /// Shown after values (`°`, ` years`); may be empty.
    pub unit: &'static str,
    pub points: &'a [(f64, f64)],
}

/// A tick: its position along its axis (drawing units) and its label.
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// A data point's marker, with its value spelt out (the marker's `<title>`).
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub label: String,
}

/// Everything the template draws.
pub struct Chart {
    pub key: &'static str,
    pub title: String,
    pub desc: String,
    pub y_label: String,
    /// The polyline's `points`.
    pub points: String,
    pub dots: Vec<Dot>,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub width: f64,
    pub height: f64,
}

/// A round step (1, 2 or 5 times a power of ten) near `range / n`.
pub fn nice_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).abs().max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A value with as many decimals as `step` needs.
pub fn number(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    // No "-0".
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// A time as the axis shows it: finer when the history is short.
pub fn when(t: f64, span: f64) -> String {
    let Ok(d) = OffsetDateTime::from_unix_timestamp(t.floor() as i64) else {
        return String::new();
    };
    let r = if span >= 2.0 * 86_400.0 {
        d.format(time::macros::format_description!("[year]-[month]-[day]"))
    } else if span >= 120.0 {
        d.format(time::macros::format_description!(
            "[month]-[day] [hour]:[minute]"
        ))
    } else {
        d.format(time::macros::format_description!(
            "[hour]:[minute]:[second]"
        ))
    };
    r.unwrap_or_default()
}

/// The full date and time of a point, for its marker and the description.
fn stamp(t: f64) -> String {
    OffsetDateTime::from_unix_timestamp(t.floor() as i64)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The chart of `s`; None when it has no point.
pub fn line_chart(s: &Series) -> Option<Chart> {
    let (first, last) = (s.points.first()?, s.points.last()?);
    let (t0, t1) = (first.0, last.0);
    let span = t1 - t0;
    let lo = s.points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = s
        .points
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = if hi > lo {
        0.0
    } else {
        (lo.abs() * 0.1).max(1.0)
    };
    let step = nice_step(hi - lo + 2.0 * pad, 4.0);
    let y0 = ((lo - pad) / step).floor() * step;
    let y1 = (((hi + pad) / step).ceil() * step).max(y0 + step);
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let x = |t: f64| {
        if span > 0.0 {
            left + (t - t0) / span * (right - left)
        } else {
            (left + right) / 2.0
        }
    };
    let y = |v: f64| bottom - (v - y0) / (y1 - y0) * (bottom - top);
    let mut y_ticks = Vec::new();
    let mut v = y0;
    // Capped: a step below the values' float precision would never move.
    while v <= y1 + step / 2.0 && y_ticks.len() < 20 {
        y_ticks.push(Tick {
            at: y(v),
            label: number(v, step),
        });
        v += step;
    }
    // Up to five time ticks, never two with the same label.
    let n = if span >= 4.0 {
        5
    } else if span >= 1.0 {
        2
    } else {
        1
    };
    let mut x_ticks: Vec<Tick> = Vec::new();
    for i in 0..n {
        let t = if n == 1 {
            t0
        } else {
            t0 + span * i as f64 / (n - 1) as f64
        };
        let label = when(t, span);
        if x_ticks.iter().all(|k| k.label != label) {
            x_ticks.push(Tick { at: x(t), label });
        }
    }
    let unit = s.unit;
    let dots: Vec<Dot> = s
        .points
        .iter()
        .map(|&(t, v)| Dot {
            x: x(t),
            y: y(v),
            label: format!("{}: {}{unit}", stamp(t), number(v, 0.1)),
        })
        .collect();
    let points = dots
        .iter()
        .map(|d| format!("{:.1},{:.1}", d.x, d.y))
        .collect::<Vec<_>>()
        .join(" ");
    let desc = format!(
        "{} over {} analyses from {} to {}: lowest {}{unit}, highest {}{unit}, latest {}{unit}.",
        s.label,
        s.points.len(),
        stamp(t0),
        stamp(t1),
        number(lo, 0.1),
        number(hi, 0.1),
        number(last.1, 0.1),
    );
    let y_label = if unit.trim().is_empty() {
        s.label.to_string()
    } else {
        format!("{} ({})", s.label, unit.trim())
    };
    Some(Chart {
        key: s.key,
        title: format!("{} over time", s.label),
        desc,
        y_label,
        points,
        dots,
        x_ticks,
        y_ticks,
        left,
        right,
        top,
        bottom,
        width: WIDTH,
        height: HEIGHT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_ticks_cover_the_values() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(0.7, 4.0), 0.2);
        assert_eq!(nice_step(130.0, 4.0), 50.0);
        assert_eq!(number(-0.0001, 0.1), "0.0");
        assert_eq!(number(12.345, 1.0), "12");
        let pts = [
            (1_700_000_000.0, 41.2),
            (1_700_086_400.0, 38.0),
            (1_700_400_000.0, 44.9),
        ];
        let c = line_chart(&Series {
            key: "ita",
            label: "ITA",
            unit: "°",
            points: &pts,
        })
        .unwrap();
        assert_eq!(c.points.split(' ').count(), 3);
        assert_eq!(c.dots.len(), 3);
        // The lowest tick is at or below the lowest value, the highest above.
        let (first, last) = (c.y_ticks.first().unwrap(), c.y_ticks.last().unwrap());
        assert!(first.at >= c.dots[1].y && last.at <= c.dots[2].y);
        assert!((c.dots[0].x - c.left).abs() < 1e-9 && (c.dots[2].x - c.right).abs() < 1e-9);
        assert_eq!(c.x_ticks.len(), 5);
        assert_eq!(c.x_ticks[0].label, "2023-11-14");
        assert!(c.desc.contains("3 analyses") && c.desc.contains("latest 44.9°"));
    }

    #[test]
    fn one_point_or_one_instant_is_centred_and_flat_values_get_a_range() {
        let pts = [(1_700_000_000.0, 30.0), (1_700_000_000.0, 30.0)];
        let c = line_chart(&Series {
            key: "age",
            label: "Perceived age",
            unit: " years",
            points: &pts,
        })
        .unwrap();
        assert_eq!(c.x_ticks.len(), 1);
        assert!(c
            .dots
            .iter()
            .all(|d| (d.x - (c.left + c.right) / 2.0).abs() < 1e-9));
        assert!(c.y_ticks.len() >= 2);
        assert!(c.dots.iter().all(|d| d.y > c.top && d.y < c.bottom));
        assert_eq!(c.y_label, "Perceived age (years)");
        assert!(line_chart(&Series {
            key: "age",
            label: "Perceived age",
            unit: "",
            points: &[],
        })
        .is_none());
    }
}
