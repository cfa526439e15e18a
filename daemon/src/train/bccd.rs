//! BCCD's labelled white cells, a second lab for the white-cell classifier.
//!
//! BCCD (Shenggan, MIT; github.com/Shenggan/BCCD_Dataset) is 640x480 JPEG
//! photos of Giemsa-stained smears with Pascal VOC boxes, from another
//! microscope, camera and stain batch than PBC's CellaVision. Its
//! `labels.csv` gives each photo the class of its white cell; the labels
//! file read here holds those classes as one `<Class> <id>` line per photo
//! (`Neutrophil 00000`), photos with two classes left out (see
//! models/wbc/MODEL_CARD.md for where the copy comes from).
//!
//! Each cell is cut as the appliance cuts one: centred on the white-cell
//! box (the largest, where a photo has several), the window
//! [`WINDOW_RBC`] red-cell diameters wide, the diameter being the median of
//! the photo's red-cell boxes that the photo's edge does not cut. BCCD gives
//! the neutrophils' lineage but not their form (band or segmented).

use std::path::Path;

use super::wbc::Sample;
use crate::model::wbc::{CLASSES, WINDOW_RBC};

/// `(xmin, ymin, xmax, ymax)` in pixels of every object named `name` in a
/// Pascal VOC annotation; objects missing a coordinate are skipped.
pub fn voc_boxes(xml: &str, name: &str) -> Vec<[f32; 4]> {
    let tag = |s: &str, t: &str| -> Option<f32> {
        let a = s.find(&format!("<{t}>"))? + t.len() + 2;
        let b = s[a..].find('<')? + a;
        s[a..b].trim().parse().ok()
    };
    xml.split("<object>")
        .skip(1)
        .filter(|o| o.contains(&format!("<name>{name}</name>")))
        .filter_map(|o| {
            Some([
                tag(o, "xmin")?,
                tag(o, "ymin")?,
                tag(o, "xmax")?,
                tag(o, "ymax")?,
            ])
        })
        .collect()
}

/// A BCCD class name (any case) to a class index, and whether only its
/// lineage is known (neutrophils: the form is not given). `None` for a
/// name the classifier does not have.
fn class_of(name: &str) -> Option<(usize, bool)> {
    let lower = name.to_lowercase();
    if lower == "neutrophil" {
        return Some((0, true));
    }
    CLASSES.iter().position(|c| *c == lower).map(|i| (i, false))
}

/// Median edge of the red-cell boxes that the photo's edge does not cut,
/// in pixels; `None` with fewer than 3 such boxes.
fn rbc_diameter(xml: &str, w: f32, h: f32) -> Option<f32> {
    let mut sizes: Vec<f32> = voc_boxes(xml, "RBC")
        .into_iter()
        .filter(|b| b[0] > 2.0 && b[1] > 2.0 && b[2] < w - 3.0 && b[3] < h - 3.0)
        .map(|b| (b[2] - b[0] + b[3] - b[1]) / 2.0)
        .collect();
    if sizes.len() < 3 {
        return None;
    }
    sizes.sort_by(f32::total_cmp);
    Some(sizes[sizes.len() / 2])
}

/// The labelled white cells of BCCD at `dir` (`Annotations/`,
/// `JPEGImages/`, `<split>.txt`) whose photo is in `split` (all photos
/// when `None`), as [`Sample`]s: the photo cut to twice the window around
/// the cell (room for the training's shifts and rescales), named
/// `bccd/<stem>`. Photos without a white-cell box, with fewer than 3 whole
/// red cells, or missing from the folder are skipped. Errors: an unreadable
/// labels or split file, a line with a class the classifier lacks, or a
/// photo that does not decode.
pub fn white_cells(dir: &Path, labels: &Path, split: Option<&str>) -> anyhow::Result<Vec<Sample>> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let listed = match split {
        Some(name) => Some(read(&dir.join(format!("{name}.txt")))?),
        None => None,
    };
    let mut out = Vec::new();
    for line in read(labels)?.lines() {
        let mut it = line.split_whitespace();
        let (Some(class), Some(id)) = (it.next(), it.next()) else {
            continue;
        };
        let (label, lineage_only) = class_of(class)
            .ok_or_else(|| anyhow::anyhow!("{}: unknown class {class}", labels.display()))?;
        let stem = format!("BloodImage_{id}");
        if listed
            .as_deref()
            .is_some_and(|s| !s.lines().any(|l| l.trim() == stem))
        {
            continue;
        }
        let (Ok(xml), jpg) = (
            std::fs::read_to_string(dir.join("Annotations").join(format!("{stem}.xml"))),
            dir.join("JPEGImages").join(format!("{stem}.jpg")),
        ) else {
            continue;
        };
        if !jpg.exists() {
            continue;
        }
        let img = image::open(&jpg)?.into_rgb8();
        let (w, h) = (img.width() as f32, img.height() as f32);
        let Some(cell) = voc_boxes(&xml, "WBC").into_iter().max_by(|a, b| {
            ((a[2] - a[0]) * (a[3] - a[1])).total_cmp(&((b[2] - b[0]) * (b[3] - b[1])))
        }) else {
            continue;
        };
        let Some(d) = rbc_diameter(&xml, w, h) else {
            continue;
        };
        let (cx, cy) = ((cell[0] + cell[2]) / 2.0, (cell[1] + cell[3]) / 2.0);
        let half = WINDOW_RBC * d;
        let x0 = (cx - half).floor().max(0.0) as u32;
        let y0 = (cy - half).floor().max(0.0) as u32;
        let x1 = ((cx + half).ceil() as u32).min(img.width());
        let y1 = ((cy + half).ceil() as u32).min(img.height());
        let part = image::imageops::crop_imm(&img, x0, y0, x1 - x0, y1 - y0).to_image();
        out.push(Sample {
            w: part.width() as usize,
            h: part.height() as usize,
            rgb: part.into_raw(),
            label,
            lineage_only,
            name: format!("bccd/{stem}"),
            cx: cx - x0 as f32,
            cy: cy - y0 as f32,
            rbc_px: d,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_objects_of_one_name_are_read() {
        let xml = "<annotation><object><name>WBC</name><bndbox><xmin>10</xmin>\
            <ymin>20</ymin><xmax>110</xmax><ymax>130</ymax></bndbox></object>\
            <object><name>RBC</name><bndbox><xmin>1</xmin><ymin>2</ymin>\
            <xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>";
        assert_eq!(voc_boxes(xml, "WBC"), vec![[10.0, 20.0, 110.0, 130.0]]);
        assert_eq!(voc_boxes(xml, "RBC").len(), 1);
        assert!(voc_boxes(xml, "Platelets").is_empty());
    }

    #[test]
    fn bccd_classes_map_to_the_classifier_and_neutrophils_keep_only_their_lineage() {
        assert_eq!(class_of("Neutrophil"), Some((0, true)));
        assert_eq!(
            class_of("Lymphocyte").map(|(c, l)| (CLASSES[c], l)),
            Some(("lymphocyte", false))
        );
        assert_eq!(
            class_of("EOSINOPHIL").map(|(c, _)| CLASSES[c]),
            Some("eosinophil")
        );
        assert_eq!(class_of("Smudge"), None);
    }

    #[test]
    fn red_cells_cut_by_the_edge_do_not_set_the_diameter() {
        let rbc = |x0: u32, y0: u32, s: u32| {
            format!(
                "<object><name>RBC</name><xmin>{x0}</xmin><ymin>{y0}</ymin>\
                 <xmax>{}</xmax><ymax>{}</ymax></object>",
                x0 + s,
                y0 + s
            )
        };
        // Cut by the left, right and bottom edges, and large: counted, they
        // would move the median from 44 to 90.
        let cut = [rbc(0, 50, 90), rbc(600, 50, 90), rbc(300, 400, 90)].concat();
        let whole = [rbc(20, 20, 40), rbc(100, 100, 44), rbc(200, 200, 50)].concat();
        assert_eq!(rbc_diameter(&(cut + &whole), 640.0, 480.0), Some(44.0));
        assert_eq!(rbc_diameter(&rbc(20, 20, 40), 640.0, 480.0), None);
    }
}
