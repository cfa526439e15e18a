//! One photo's [`Analysis`] as the reference API reports it: the face
//! detector's result as soon as detection is done ([`detector_result`]),
//! then a result per metric algorithm (v1 `results/`, in the reference's result scheme: per area a
//! `main_metric {value, widget_type, name, tech_name, widget_meta}` and
//! `sub_metrics`), the v3 `parameters` (each `{tag, ...}`), the quality
//! reason codes and the detection error.
//!
//! Tags: `ita` and `skintone` carry the ITA class (Del Bino 2006 bands)
//! as the reference labels it ("Very light" ... "Dark"; `class`/`value`
//! keep the snake_case name), `age` its decade. `redness` and `dark_circles` carry `tag: null`: no
//! published band maps a* or ΔL* of a selfie to a grade, and the appliance
//! does not invent one (`tag_note` says so).

use serde_json::{json, Value};

use super::analyze::{AgeMetric, Analysis, DarkCircles, Detected, ItaMetric, Redness, Skintone};
use super::catalog::{self, FACE_DETECTOR};
use super::color::ItaClass;

/// What the API stores and serves for one analysed photo.
#[derive(Debug, Clone)]
pub struct Presented {
    /// (algorithm id, result, is_ok), for each enabled algorithm.
    pub results: Vec<(u32, Value, bool)>,
    /// v3 `parameters`: computed metrics only.
    pub parameters: Value,
    pub quality_issues: Vec<String>,
    pub detection_error: Option<String>,
    /// The face's geometry (box, mesh presence, pose, eye distance, mm per
    /// pixel), the photo's quality measures and white balance.
    pub face: Value,
}

fn metric(name: &str, tech: &str, value: Value, widget: &str, meta: Value) -> Value {
    json!({"value": value, "widget_type": widget, "name": name, "tech_name": tech, "widget_meta": meta})
}

fn area_result(area: &str, main: Value, subs: Vec<Value>) -> Value {
    json!({"area_name": area, "main_metric": main, "sub_metrics": subs})
}

fn r1(x: f32) -> f64 {
    (x as f64 * 10.0).round() / 10.0
}

fn r2(x: f32) -> f64 {
    (x as f64 * 100.0).round() / 100.0
}

/// The per-algorithm result of parameter `param`, or None when the
/// analysis withheld or could not compute it.
fn metric_result(a: &Analysis, param: &str) -> Option<Value> {
    let m = &a.metrics;
    let (areas, raw) = match param {
        "ita" => {
            let i = m.ita.as_ref()?;
            (ita_areas(i), serde_json::to_value(i).ok()?)
        }
        "skintone" => {
            let s = m.skintone.as_ref()?;
            (skintone_areas(s), serde_json::to_value(s).ok()?)
        }
        "redness" => {
            let r = m.redness.as_ref()?;
            (redness_areas(r), serde_json::to_value(r).ok()?)
        }
        "dark_circles" => {
            let d = m.dark_circles.as_ref()?;
            (dark_circle_areas(d), serde_json::to_value(d).ok()?)
        }
        "age" => {
            let g = m.age.as_ref()?;
            (age_areas(g), serde_json::to_value(g).ok()?)
        }
        _ => return None,
    };
    Some(json!({"area_results": areas, "raw": raw}))
}

/// ITA's area results: the face (ITA, with L*, a*, b* and the class), then
/// each measured area (ITA with L*, a*, b*).
fn ita_areas(i: &ItaMetric) -> Vec<Value> {
    let deg = json!({"unit": "degree", "min": -90, "max": 90});
    let mut v = vec![area_result(
        "face",
        metric("ITA", "ita", json!(r1(i.value)), "numeric", deg.clone()),
        vec![
            metric("L*", "l", json!(r1(i.l)), "numeric", json!({})),
            metric("a*", "a", json!(r1(i.a)), "numeric", json!({})),
            metric("b*", "b", json!(r1(i.b)), "numeric", json!({})),
            metric(
                "ITA class",
                "ita_class",
                json!(i.class),
                "category",
                json!({}),
            ),
        ],
    )];
    for (area, c) in &i.areas {
        v.push(area_result(
            area.name(),
            metric("ITA", "ita", json!(r1(c.ita)), "numeric", deg.clone()),
            vec![
                metric("L*", "l", json!(r1(c.l)), "numeric", json!({})),
                metric("a*", "a", json!(r1(c.a)), "numeric", json!({})),
                metric("b*", "b", json!(r1(c.b)), "numeric", json!({})),
            ],
        ));
    }
    v
}

/// Skin tone's area result: the face's category, with its ITA.
fn skintone_areas(s: &Skintone) -> Vec<Value> {
    vec![area_result(
        "face",
        metric(
            "Skin tone",
            "skintone",
            json!(s.value),
            "category",
            json!({"categories": ["very_light", "light", "intermediate", "tan", "brown", "dark"]}),
        ),
        vec![metric(
            "ITA",
            "ita",
            json!(r1(s.ita)),
            "numeric",
            json!({"unit": "degree"}),
        )],
    )]
}

/// Redness's area results: the face's erythema index with its mean a*,
/// then each area's with its mean and 90th-percentile a*.
fn redness_areas(r: &Redness) -> Vec<Value> {
    let mut v = vec![area_result(
        "face",
        metric(
            "Erythema index",
            "erythema_index",
            json!(r1(r.erythema_index)),
            "numeric",
            json!({}),
        ),
        vec![metric(
            "a*",
            "a_mean",
            json!(r1(r.a_mean)),
            "numeric",
            json!({}),
        )],
    )];
    for (area, x) in &r.areas {
        v.push(area_result(
            area.name(),
            metric(
                "Erythema index",
                "erythema_index",
                json!(r1(x.erythema_index)),
                "numeric",
                json!({}),
            ),
            vec![
                metric("a*", "a_mean", json!(r1(x.a_mean)), "numeric", json!({})),
                metric(
                    "a* (90th percentile)",
                    "a_p90",
                    json!(r1(x.a_p90)),
                    "numeric",
                    json!({}),
                ),
            ],
        ));
    }
    v
}

/// Dark circles' area result: the under-eye's ΔL* against the malar patch
/// below it (mean of the eyes measured), with their ΔE*ab.
fn dark_circle_areas(d: &DarkCircles) -> Vec<Value> {
    vec![area_result(
        "eye_area",
        metric(
            "Under-eye ΔL*",
            "delta_l",
            json!(r2(d.delta_l)),
            "numeric",
            json!({}),
        ),
        vec![metric(
            "Under-eye ΔE*ab",
            "delta_e",
            json!(r2(d.delta_e)),
            "numeric",
            json!({}),
        )],
    )]
}

/// Perceived age's area result: the face, in years.
fn age_areas(g: &AgeMetric) -> Vec<Value> {
    vec![area_result(
        "face",
        metric(
            "Perceived age",
            "age",
            json!(r1(g.value)),
            "numeric",
            json!({"unit": "year"}),
        ),
        vec![],
    )]
}

/// The v3 parameter `param`: `{tag, ...value}`.
fn parameter(a: &Analysis, param: &str) -> Option<Value> {
    let m = &a.metrics;
    Some(match param {
        "ita" => {
            let i = m.ita.as_ref()?;
            json!({"tag": ItaClass::label_of(i.class), "class": i.class, "value": r1(i.value), "l": r1(i.l), "a": r1(i.a), "b": r1(i.b),
                "areas": i.areas.iter().map(|(k, c)| (k.name().to_string(), json!({"ita": r1(c.ita), "class": c.ita_class.name(), "l": r1(c.l), "a": r1(c.a), "b": r1(c.b)}))).collect::<serde_json::Map<_, _>>()})
        }
        "skintone" => {
            let s = m.skintone.as_ref()?;
            json!({"tag": ItaClass::label_of(s.value), "value": s.value, "ita": r1(s.ita)})
        }
        "redness" => {
            let r = m.redness.as_ref()?;
            json!({"tag": null, "tag_note": NO_BAND, "erythema_index": r1(r.erythema_index), "a_mean": r1(r.a_mean),
                "areas": r.areas.iter().map(|(k, x)| (k.name().to_string(), json!({"erythema_index": r1(x.erythema_index), "a_mean": r1(x.a_mean), "a_p90": r1(x.a_p90)}))).collect::<serde_json::Map<_, _>>()})
        }
        "dark_circles" => {
            let d = m.dark_circles.as_ref()?;
            json!({"tag": null, "tag_note": NO_BAND, "delta_l": r2(d.delta_l), "delta_e": r2(d.delta_e)})
        }
        "age" => {
            let g = m.age.as_ref()?;
            let decade = (g.value.max(0.0) / 10.0).floor() as u32 * 10;
            json!({"tag": format!("{decade}-{}", decade + 9), "age": r1(g.value), "value": r1(g.value)})
        }
        _ => return None,
    })
}

/// Image `img`'s stored v3 parameters as the current version presents
/// them: an analysis stored before 2026-12-03 carried the ITA class's
/// snake_case name as `ita`/`skintone` `tag` (now its label, the name in
/// `class`) and a `score` on `redness` and `dark_circles` (now none; see
/// below), and is shown as a new one would be.
pub fn stored_parameters(img: &super::records::Image) -> Option<Value> {
    let mut p = img.parameters.clone()?;
    for name in ["ita", "skintone"] {
        let Some(o) = p.get_mut(name).and_then(Value::as_object_mut) else {
            continue;
        };
        let old = o.get("tag").and_then(Value::as_str).map(str::to_string);
        if let Some(label) = old.as_deref().and_then(ItaClass::label_of) {
            if name == "ita" {
                o.entry("class").or_insert_with(|| json!(old));
            }
            o.insert("tag".into(), json!(label));
        }
    }
    for name in ["redness", "dark_circles"] {
        if let Some(o) = p.get_mut(name).and_then(Value::as_object_mut) {
            o.remove("score");
        }
    }
    Some(p)
}

// No `score` for these two: clients grade a `score` by the reference's
// 0-100 bands (higher is better), and an erythema index or a ΔL* is
// neither on that scale nor in that direction; a grade from it would be
// wrong, often inverted.
const NO_BAND: &str =
    "no published band grades this measurement on selfies; the value is reported without a grade";

/// Present analysis `a` for the enabled algorithms `enabled`.
pub fn present(a: &Analysis, enabled: &[u32]) -> Presented {
    let quality_issues: Vec<String> = a
        .quality
        .issues
        .iter()
        .map(|i| i.code.to_string())
        .collect();
    let detection_error = a
        .quality
        .issues
        .iter()
        .find(|i| i.code == "no_face" || i.code == "multiple_faces")
        .map(|i| format!("{}: {}", i.code, i.message));
    let mut results = Vec::new();
    let mut parameters = serde_json::Map::new();
    for id in enabled {
        let Some(alg) = catalog::algorithm(*id) else {
            continue;
        };
        if alg.unavailable.is_some() {
            continue;
        }
        if alg.id == FACE_DETECTOR {
            // Reported at detection time ([`detector_result`]).
            continue;
        }
        let param = alg.parameter.unwrap_or_default();
        match metric_result(a, param) {
            Some(r) => {
                if let Some(p) = parameter(a, param) {
                    parameters.insert(param.to_string(), p);
                }
                results.push((alg.id, r, true));
            }
            None => {
                let why = a.withheld.get(param).cloned().unwrap_or_default();
                let advice: Vec<&str> = a
                    .quality
                    .issues
                    .iter()
                    .filter(|i| why.contains(&i.code))
                    .map(|i| i.message)
                    .collect();
                results.push((
                    alg.id,
                    json!({"error": "not_computed", "quality_issues": why, "message": advice.join("; ")}),
                    false,
                ));
            }
        }
    }
    let face = a.face.as_ref().map(|f| {
        json!({"bbox": f.bbox, "score": r2(f.detector_score), "presence": r2(f.presence),
            "iod_px": r1(f.iod_px), "pose": f.pose, "iris_diameter_px": f.iris_diameter_px.map(r1),
            "mm_per_px": f.mm_per_px})
    });
    Presented {
        results,
        parameters: Value::Object(parameters),
        quality_issues,
        detection_error,
        face: json!({"face": face, "image": {"width": a.width, "height": a.height},
            "quality": a.quality, "white_balance": a.white_balance}),
    }
}

/// The face detector's result, final once the faces are known: every face
/// found (largest first, boxes in photo pixels) and the issue detection
/// alone decides (`no_face`, `multiple_faces`), with is_ok.
pub fn detector_result(d: &Detected) -> (Value, bool) {
    let error = d
        .issue
        .as_ref()
        .map(|i| format!("{}: {}", i.code, i.message));
    let faces: Vec<Value> = d
        .faces
        .iter()
        .map(|f| json!({"bbox": f.bbox.map(|v| (v as f64 * 10.0).round() / 10.0), "score": r2(f.score)}))
        .collect();
    (
        json!({"faces_found": d.faces.len(), "faces": faces, "image": {"width": d.width, "height": d.height},
            "error": error}),
        d.issue.is_none(),
    )
}

/// The main metric's number in a stored result (history and smoothing
/// use main metrics only); None for categories and failed results.
pub fn main_value(result: &Value) -> Option<f64> {
    result
        .get("area_results")?
        .get(0)?
        .get("main_metric")?
        .get("value")?
        .as_f64()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::stored_parameters;

    #[test]
    fn parameters_stored_by_an_earlier_version_read_as_new_ones() {
        let (_, _, _, mut img) = super::super::views::tests::records();
        img.parameters = Some(json!({
            "ita": {"tag": "very_light", "value": 60.1},
            "skintone": {"tag": "tan", "value": "tan"},
            "redness": {"tag": null, "score": 12.3, "erythema_index": 12.3},
            "dark_circles": {"tag": null, "score": -1.2, "delta_l": -1.2},
        }));
        let p = stored_parameters(&img).unwrap();
        assert_eq!(p["ita"]["tag"], "Very light");
        assert_eq!(p["ita"]["class"], "very_light");
        assert_eq!(p["skintone"]["tag"], "Tan");
        assert_eq!(p["skintone"]["value"], "tan");
        assert!(p["redness"].get("score").is_none());
        assert!(p["dark_circles"].get("score").is_none());
        assert_eq!(p["redness"]["erythema_index"], 12.3);
        // A current one is left as it is.
        img.parameters = Some(p.clone());
        assert_eq!(stored_parameters(&img).unwrap(), p);
    }
}
