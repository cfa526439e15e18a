//! The class a labelled folder names (`argusd pbs differential --labelled`):
//! the names and codes labelled white-cell sets file their images under.

use std::path::Path;

/// Class names a labelled folder may carry, by [`normalised`] name: the
/// class indices of `model::wbc::CLASSES`. Besides these, a name that
/// starts the name of a class (`neut`, `lymph`, `mono`, `eos`, `baso`, as
/// LISC and others abbreviate them) stands for it.
/// CellaVision's and PBC's file and folder codes (`LY`, `MO`, `EO`, `BA`,
/// `SNE`, `BNE`, `MY`, `MMY`, `PMY`, `ERB`, `PLT`, `GT`) are here too.
const ALIASES: &[(&str, usize)] = &[
    ("neutrophilsegmented", 0),
    ("segmentedneutrophil", 0),
    ("segmented", 0),
    ("sne", 0),
    ("seg", 0),
    ("neutrophilband", 1),
    ("bandneutrophil", 1),
    ("band", 1),
    ("bne", 1),
    ("ly", 2),
    ("mo", 3),
    ("eo", 4),
    ("ba", 5),
    ("ig", 6),
    ("my", 6),
    ("mmy", 6),
    ("pmy", 6),
    ("metamyelocyte", 6),
    ("myelocyte", 6),
    ("promyelocyte", 6),
    ("erb", 7),
    ("nrbc", 7),
    ("nucleatedredcell", 7),
    ("nucleatedredbloodcell", 7),
    ("thrombocyte", 8),
    ("plt", 8),
    ("gt", 8),
];

/// Names a prefix of which stands for the class (index into `CLASSES`).
const PREFIXED: &[(&str, usize)] = &[
    ("neutrophil", 0),
    ("lymphocyte", 2),
    ("monocyte", 3),
    ("eosinophil", 4),
    ("basophil", 5),
    ("immaturegranulocyte", 6),
    ("erythroblast", 7),
    ("platelet", 8),
];

/// Lower case, letters and digits only, without leading digits (sets
/// number their folders: `01_Lymphocyte`).
fn normalised(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// Folder names `--labelled` takes, for the messages.
pub(super) const NAMES_TAKEN: &str =
    "a class's name in any case, singular or plural, its first three or \
     more letters (lymph, eos, baso), or CellaVision's codes (SNE, BNE, LY, MO, EO, BA, MY, ERB, \
     PLT); also ig, NRBC, band, segmented";

/// The class (index into `CLASSES`) a folder named `name` holds: a class's
/// name in any case and spacing, singular or plural, its first three or
/// more letters, or one of [`ALIASES`]. `None` for anything else.
pub(super) fn class_of_label(name: &str) -> Option<usize> {
    let n = normalised(name);
    let singular = n.strip_suffix('s').map(str::to_string);
    [Some(n), singular].into_iter().flatten().find_map(|n| {
        ALIASES
            .iter()
            .find(|(a, _)| *a == n)
            .map(|&(_, c)| c)
            .or_else(|| {
                (n.len() >= 3)
                    .then(|| PREFIXED.iter().find(|(full, _)| full.starts_with(&n)))
                    .flatten()
                    .map(|&(_, c)| c)
            })
    })
}

/// The name of the folder `path` lies in.
pub(super) fn folder_of(path: &Path) -> String {
    path.parent()
        .and_then(Path::file_name)
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The class of an image at `path`, found `rel` below the command line's
/// argument: the nearest of its folders that names one (`lymphocyte/
/// slide1/x.jpg` is a lymphocyte), looking no higher than the argument
/// itself, so that a folder above what the user named (`/srv/eos/`) never
/// labels a set. An image named on the command line is labelled by the
/// folder it lies in.
pub(super) fn class_of_image(path: &Path, rel: &Path) -> Option<usize> {
    let levels = rel.components().count().max(1);
    // `.` and `..` name no folder: the argument `.` in `Monocyte/` is
    // `Monocyte`.
    let path = plain(path);
    path.ancestors()
        .skip(1)
        .take(levels)
        .filter_map(Path::file_name)
        .find_map(|f| class_of_label(&f.to_string_lossy()))
}

/// `path` made absolute with `.` and `..` resolved by name (no links
/// followed: the folder names are the user's, not a link's target's).
fn plain(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wbc::CLASSES;

    #[test]
    fn the_nearest_folder_naming_a_class_labels_an_image_within_the_argument() {
        let class =
            |p: &str, rel: &str| class_of_image(Path::new(p), Path::new(rel)).map(|c| CLASSES[c]);
        // Argument `/data/set`: a class folder above a slide folder.
        assert_eq!(
            class(
                "/data/set/Lymphocyte/slide1/a.jpg",
                "Lymphocyte/slide1/a.jpg"
            ),
            Some("lymphocyte")
        );
        // The nearest wins: `eos` inside `Neutrophil`.
        assert_eq!(
            class("/data/set/Neutrophil/eos/a.jpg", "Neutrophil/eos/a.jpg"),
            Some("eosinophil")
        );
        // Argument `/data/set/Monocyte`: the argument names the class.
        assert_eq!(class("/data/set/Monocyte/a.jpg", "a.jpg"), Some("monocyte"));
        // Nothing above the argument counts: `/srv/eos` is not the user's.
        assert_eq!(class("/srv/eos/set/slide1/a.jpg", "slide1/a.jpg"), None);
        // A file named on the command line: its own folder.
        assert_eq!(class("/x/baso/a.jpg", "a.jpg"), Some("basophil"));
        // `.` and `..` stand for the folders they name.
        assert_eq!(class("/x/Monocyte/./a.jpg", "a.jpg"), Some("monocyte"));
        assert_eq!(class("/x/eos/slide/../a.jpg", "a.jpg"), Some("eosinophil"));
        let here = std::env::current_dir().unwrap();
        let named = class_of_label(&here.file_name().unwrap().to_string_lossy());
        assert_eq!(
            class_of_image(Path::new("./a.jpg"), Path::new("a.jpg")),
            named
        );
    }

    #[test]
    fn folder_names_of_common_sets_name_their_classes() {
        let class = |n: &str| class_of_label(n).map(|c| CLASSES[c]);
        for (name, want) in [
            ("Neutrophil", "neutrophil_segmented"),
            ("neutrophils", "neutrophil_segmented"),
            ("neut", "neutrophil_segmented"),
            ("SNE", "neutrophil_segmented"),
            ("Band neutrophil", "neutrophil_band"),
            ("Lymphocyte", "lymphocyte"),
            ("lymp", "lymphocyte"),
            ("mono", "monocyte"),
            ("eos", "eosinophil"),
            ("EOSINOPHILS", "eosinophil"),
            ("Baso", "basophil"),
            ("ig", "immature_granulocyte"),
            ("immature_granulocytes", "immature_granulocyte"),
            ("NRBC", "erythroblast"),
            ("erythroblast", "erythroblast"),
            ("platelets", "platelet"),
            ("LY", "lymphocyte"),
            ("MO", "monocyte"),
            ("EO", "eosinophil"),
            ("BA", "basophil"),
            ("MMY", "immature_granulocyte"),
            ("PMY", "immature_granulocyte"),
            ("ERB", "erythroblast"),
            ("PLT", "platelet"),
            ("01_Lymphocyte", "lymphocyte"),
            ("3-eosinophils", "eosinophil"),
        ] {
            assert_eq!(class(name), Some(want), "{name}");
        }
        for name in [
            "",
            "ne",
            "blast",
            "smudge",
            "artefact",
            "images",
            "cells",
            "rbc",
            "erythrocyte",
            "01",
        ] {
            assert_eq!(class(name), None, "{name}");
        }
    }
}
