//! The PBS family's reports as HL7 FHIR R4 (4.0.1) JSON, for lab systems:
//! one `DiagnosticReport` per task, with its `Observation`s, the `Specimen`
//! and the `Device` as contained resources, so the report is one resource
//! a FHIR server can take in a single create. `GET
//! /pbs/{id}/report/{task}?format=fhir` and `argusd pbs count --fhir` both
//! build it here, from the task's report as the appliance stores it.
//!
//! Codes: LOINC where a LOINC term means exactly what the appliance
//! measured, and otherwise the appliance's own code system [`LOCAL`].
//!
//! | result | code | why |
//! | --- | --- | --- |
//! | red cells, white cells, platelets seen | local `rbc-seen`, `wbc-seen`, `platelets-seen` | counts of cells seen in the uploaded fields, not a concentration: LOINC's counts (6690-2, 789-8, 777-3) are per volume of blood, which a photo cannot give |
//! | neutrophils (segmented + band) | LOINC 770-8 | Neutrophils/100 leukocytes in Blood by Automated count |
//! | segmented neutrophils | LOINC 32200-8 | Segmented neutrophils/100 leukocytes in Blood by Automated count |
//! | band neutrophils | LOINC 764-1 | Band form neutrophils/100 leukocytes in Blood by Manual count: LOINC has no automated-count term for bands (analysers do not separate them); bands are a smear-review finding |
//! | lymphocytes | LOINC 736-9 | Lymphocytes/100 leukocytes in Blood by Automated count |
//! | monocytes | LOINC 5905-5 | Monocytes/100 leukocytes in Blood by Automated count |
//! | eosinophils | LOINC 713-8 | Eosinophils/100 leukocytes in Blood by Automated count |
//! | basophils | LOINC 706-2 | Basophils/100 leukocytes in Blood by Automated count |
//! | immature granulocytes | LOINC 71695-1 | Immature granulocytes/100 leukocytes in Blood by Automated count |
//! | nucleated red cells | LOINC 58413-6 | Nucleated erythrocytes/100 leukocytes \[Ratio\] in Blood by Automated count |
//! | leukocytes classified, cells left for review | local `leukocytes-classified`, `wbc-review` | no LOINC term |
//! | malaria finding | LOINC 51587-4, value SNOMED CT 260373001 Detected (at least 3 cells and over 2% of those classified called parasitized) / 260415000 Not detected (none) / 82334004 Indeterminate (no whole red cell was classified, or too few called parasitized for a finding) | Plasmodium sp \[Presence\] in Blood by Light microscopy: a presence finding on smear photos (32700-7 and 41451-6 are [Identifier] terms that expect a species or stage, which the classifier does not give) |
//! | parasitized / classified red cells, share parasitized | local `rbc-parasitized`, `rbc-classified`, `rbc-parasitized-percent` (absent when no cell was classified) | counts of cells seen; LOINC's parasitaemia terms are for a counted microscopy protocol (thick/thin film), which this is not |
//! | report codes | `WBC_DIFFERENTIAL`: LOINC 69738-3 Differential panel, method unspecified - Blood; `CBC_COUNTS`, `MALARIA_ANY_ANY`: local | a CBC panel (57021-8) promises concentrations and haemoglobin the appliance does not measure |
//!
//! The "automated count" terms are the closest LOINC has for a differential
//! made by software on a smear's photos. The percentages are of the
//! leukocytes classified (cells left for review are in neither numerator
//! nor denominator); nucleated red cells are per 100 leukocytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::schema::DifferentialClass;
use super::store::StudyRecord;

mod types;

use types::note;
pub use types::*;

/// The media type of every answer in FHIR.
pub const CONTENT_TYPE: &str = "application/fhir+json";
/// The appliance's own code system, for results LOINC has no term for.
pub const LOCAL: &str = "http://argus.local/fhir/CodeSystem/pbs";
/// Identifiers of reports: `<study id>/<task>/<version>`.
pub const REPORT_IDS: &str = "http://argus.local/fhir/sid/pbs-report";
/// Identifiers of the patients behind studies: a study's
/// `patient_proxy_id` tag.
pub const PATIENT_PROXY_IDS: &str = "http://argus.local/fhir/sid/patient-proxy-id";
pub const LOINC: &str = "http://loinc.org";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const UCUM: &str = "http://unitsofmeasure.org";
const V2_0074: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
const V2_0487: &str = "http://terminology.hl7.org/CodeSystem/v2-0487";
const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// What every counting observation says about its numbers.
const COUNT_NOTE: &str = "Cells seen in the uploaded fields (photos) of the smear, not a \
concentration: the count depends on how many fields were photographed and how thick the smear \
is, and cannot be read as cells per litre of blood.";

/// The LOINC term of each differential class (see the module table).
pub const DIFFERENTIAL_LOINC: [(&str, &str, &str); 8] = [
    (
        "neutrophil_segmented",
        "32200-8",
        "Segmented neutrophils/100 leukocytes in Blood by Automated count",
    ),
    (
        "neutrophil_band",
        "764-1",
        "Band form neutrophils/100 leukocytes in Blood by Manual count",
    ),
    (
        "lymphocyte",
        "736-9",
        "Lymphocytes/100 leukocytes in Blood by Automated count",
    ),
    (
        "monocyte",
        "5905-5",
        "Monocytes/100 leukocytes in Blood by Automated count",
    ),
    (
        "eosinophil",
        "713-8",
        "Eosinophils/100 leukocytes in Blood by Automated count",
    ),
    (
        "basophil",
        "706-2",
        "Basophils/100 leukocytes in Blood by Automated count",
    ),
    (
        "immature_granulocyte",
        "71695-1",
        "Immature granulocytes/100 leukocytes in Blood by Automated count",
    ),
    (
        "erythroblast",
        "58413-6",
        "Nucleated erythrocytes/100 leukocytes [Ratio] in Blood by Automated count",
    ),
];
/// Segmented plus band neutrophils.
pub const NEUTROPHILS_LOINC: (&str, &str) = (
    "770-8",
    "Neutrophils/100 leukocytes in Blood by Automated count",
);
pub const MALARIA_LOINC: (&str, &str) = (
    "51587-4",
    "Plasmodium sp [Presence] in Blood by Light microscopy",
);

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("the {task} report does not have the expected fields: {source}")]
    Report {
        task: String,
        source: serde_json::Error,
    },
    #[error("no FHIR form for task {0}")]
    UnknownTask(String),
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
}

/// What the report is about, besides the task's own numbers.
#[derive(Debug, Clone)]
pub struct Source {
    /// The `DiagnosticReport`'s id (letters, digits, `-` and `.`, at most 64).
    pub id: String,
    /// The report's business identifier (`<study id>/<task>/<version>`), if
    /// it comes from a study.
    pub identifier: Option<String>,
    /// The study's `patient_proxy_id` tag: the report's subject. Without
    /// one the report names no subject (the appliance knows no patient).
    pub patient_proxy_id: Option<String>,
    /// When the smear's photos reached the appliance (the study's creation).
    pub received_at: String,
    /// The fields analysed: file ids, or names for the CLI.
    pub fields: Vec<String>,
    /// When `fields` are names (the CLI), each one's file id, in the same
    /// order; empty when `fields` are the file ids.
    pub field_ids: Vec<String>,
}

impl Source {
    /// Revision `version` of a study's report for `task`.
    pub fn study(s: &StudyRecord, task: &str, version: usize) -> Self {
        let slug = task.to_ascii_lowercase().replace('_', "-");
        Self {
            id: format!("{}-{slug}-v{version}", s.id),
            identifier: Some(format!("{}/{task}/{version}", s.id)),
            patient_proxy_id: s.tags.get("patient_proxy_id").cloned(),
            received_at: s.created_at.clone(),
            fields: s.files.iter().map(|f| f.file_id.clone()).collect(),
            field_ids: Vec::new(),
        }
    }

    /// How the report names the field of file `id`: its entry in `fields`.
    fn field_named(&self, id: &str) -> String {
        match self.field_ids.iter().position(|f| f == id) {
            Some(i) => self
                .fields
                .get(i)
                .cloned()
                .unwrap_or_else(|| id.to_string()),
            None => id.to_string(),
        }
    }
}

// ---- the stored reports, as read back (the schema's structs only serialize) ----

#[derive(Deserialize)]
struct CbcIn {
    rbc: u64,
    wbc: u64,
    platelets: u64,
    model: String,
    #[serde(default)]
    differential: Option<DifferentialIn>,
    created_at: String,
}

#[derive(Deserialize)]
struct DifferentialIn {
    leukocytes_classified: u64,
    review: u64,
    classes: Vec<DifferentialClass>,
    model: String,
    min_confidence: f32,
}

#[derive(Deserialize)]
struct DifferentialReportIn {
    #[serde(flatten)]
    differential: DifferentialIn,
    created_at: String,
}

#[derive(Deserialize)]
struct MalariaIn {
    positive_count: u64,
    negative_count: u64,
    model: String,
    parasite_threshold: f32,
    created_at: String,
}

/// A file of any task's report, as far as its status goes: whether its
/// photo was marked unlike a smear's monolayer (`unlike_smear` in
/// malaria and differential files, `rbc_size.unlike_smear` in CBC files).
#[derive(Deserialize)]
struct FileIn {
    file_id: String,
    #[serde(default)]
    unlike_smear: bool,
    #[serde(default)]
    rbc_size: Option<SizeIn>,
}

#[derive(Deserialize)]
struct SizeIn {
    #[serde(default)]
    unlike_smear: bool,
}

#[derive(Deserialize)]
struct FilesIn {
    #[serde(default)]
    files: Vec<FileIn>,
}

/// The status of a report whose files `unlike` (ids) were marked unlike a
/// smear's monolayer: `final` when none was; otherwise `preliminary`, for
/// its observations `obs` too, with `conclusion` saying why. A report that
/// counts a photo of something else, or one at a size far from its cells,
/// is not to be released as it is: a lab system holds a preliminary result
/// for review (R4 ObservationStatus and DiagnosticReportStatus).
fn hold_for_review(
    unlike: &[String],
    src: &Source,
    obs: &mut [Observation],
    conclusion: &mut String,
) -> &'static str {
    if unlike.is_empty() {
        return "final";
    }
    for o in obs.iter_mut() {
        o.status = "preliminary";
    }
    let named: Vec<String> = unlike.iter().map(|id| src.field_named(id)).collect();
    *conclusion = format!(
        "Preliminary, for review: {} of {} field(s) ({}) did not look like a stained thin \
         blood smear's monolayer (too few of the red cells counted had a red cell's round \
         outline at the size used), so their results may not be cells. {conclusion}",
        unlike.len(),
        src.fields.len(),
        named.join(", ")
    );
    "preliminary"
}

/// The ids of the files of `report` whose photo was marked unlike a
/// smear's monolayer (`pbs::RbcSize.unlike_smear`).
fn unlike_smear(task: &str, report: &Value) -> Result<Vec<String>, FhirError> {
    let files: FilesIn = parse(task, report)?;
    Ok(files
        .files
        .into_iter()
        .filter(|f| f.unlike_smear || f.rbc_size.as_ref().is_some_and(|s| s.unlike_smear))
        .map(|f| f.file_id)
        .collect())
}

// ---- building ----

const SPECIMEN_ID: &str = "specimen";
const DEVICE_ID: &str = "device";

/// The observations of one report, sharing its subject, times, specimen
/// and device.
struct Results<'a> {
    src: &'a Source,
    issued: &'a str,
    out: Vec<Observation>,
}

impl Results<'_> {
    fn push(&mut self, id: &str, code: CodeableConcept) -> &mut Observation {
        self.out.push(Observation {
            resource_type: "Observation",
            id: id.into(),
            status: "final",
            category: vec![CodeableConcept::code(
                OBS_CATEGORY,
                "laboratory",
                "Laboratory",
            )],
            code,
            subject: self.src.patient_proxy_id.as_deref().map(Reference::patient),
            effective_date_time: self.src.received_at.clone(),
            issued: self.issued.to_string(),
            value_quantity: None,
            value_codeable_concept: None,
            note: Vec::new(),
            specimen: Reference::local(SPECIMEN_ID),
            device: Reference::local(DEVICE_ID),
            derived_from: Vec::new(),
            component: Vec::new(),
        });
        self.out.last_mut().expect("just pushed")
    }

    fn count(&mut self, code: &str, display: &str, n: u64) {
        let o = self.push(code, CodeableConcept::code(LOCAL, code, display));
        o.value_quantity = Some(Quantity::cells(n));
        o.note = note(COUNT_NOTE);
    }

    fn differential(&mut self, d: &DifferentialIn) -> Result<(), FhirError> {
        self.count(
            "leukocytes-classified",
            "Leukocytes given a class in the differential (cells seen)",
            d.leukocytes_classified,
        );
        let review = self.push(
            "wbc-review",
            CodeableConcept::code(
                LOCAL,
                "wbc-review",
                "White cells left for review by a technologist (cells seen)",
            ),
        );
        review.value_quantity = Some(Quantity::cells(d.review));
        review.note = note(format!(
            "White cells the classifier did not put in a class (top-class probability under {}); \
             they are in no percentage. {COUNT_NOTE}",
            d.min_confidence
        ));
        if d.leukocytes_classified == 0 {
            // No percentage means anything: "0 % neutrophils" would read as
            // a result. The two counts above say what there was.
            return Ok(());
        }
        let of = |class: &str| d.classes.iter().find(|c| c.class == class);
        for c in &d.classes {
            let id = format!("wbc-{}", c.class.replace('_', "-"));
            let loinc = DIFFERENTIAL_LOINC.iter().find(|(k, ..)| *k == c.class);
            let mut code = CodeableConcept {
                coding: Vec::new(),
                text: Some(c.class.replace('_', " ")),
            };
            if let Some((_, l, display)) = loinc {
                code.coding.push(Coding {
                    system: LOINC,
                    code: l.to_string(),
                    display: display.to_string(),
                });
            }
            code.coding.push(Coding {
                system: LOCAL,
                code: c.class.clone(),
                display: format!("{} (per 100 leukocytes classified)", c.class),
            });
            let value = if c.class == "erythroblast" {
                Quantity::per_100_wbc(c.percent, "erythroblast percent")?
            } else {
                Quantity::percent(c.percent, "class percent")?
            };
            let o = self.push(&id, code);
            o.value_quantity = Some(value);
            o.component = vec![counted(c.count)];
        }
        if let (Some(seg), Some(band)) = (of("neutrophil_segmented"), of("neutrophil_band")) {
            let (l, display) = NEUTROPHILS_LOINC;
            let o = self.push("wbc-neutrophil", CodeableConcept::code(LOINC, l, display));
            o.value_quantity = Some(Quantity::percent(
                seg.percent + band.percent,
                "neutrophil percent",
            )?);
            o.component = vec![counted(seg.count + band.count)];
            o.derived_from = vec![
                Reference::local("wbc-neutrophil-segmented"),
                Reference::local("wbc-neutrophil-band"),
            ];
        }
        Ok(())
    }
}

/// The component that carries how many cells a percentage was made of.
fn counted(n: u64) -> Component {
    Component {
        code: CodeableConcept::code(LOCAL, "cells-counted", "Cells of this class seen"),
        value_quantity: Quantity::cells(n),
    }
}

fn parse<T: serde::de::DeserializeOwned>(task: &str, report: &Value) -> Result<T, FhirError> {
    T::deserialize(report).map_err(|source| FhirError::Report {
        task: task.into(),
        source,
    })
}

/// The `DiagnosticReport` for a task's report as stored (the JSON of
/// `CbcReport`, `MalariaReport` or `WbcDifferentialReport`).
pub fn diagnostic_report(
    task: &str,
    report: &Value,
    src: &Source,
) -> Result<DiagnosticReport, FhirError> {
    let appliance = format!("argusd {}", env!("CARGO_PKG_VERSION"));
    let mut versions = vec![DeviceVersion {
        kind: CodeableConcept::text("appliance software"),
        value: appliance,
    }];
    let mut property = Vec::new();
    let (code, issued, mut obs, mut conclusion) = match task {
        "CBC_COUNTS" => cbc_results(task, report, src, &mut versions, &mut property)?,
        "WBC_DIFFERENTIAL" => {
            differential_results(task, report, src, &mut versions, &mut property)?
        }
        "MALARIA_ANY_ANY" => malaria_results(task, report, src, &mut versions, &mut property)?,
        other => return Err(FhirError::UnknownTask(other.into())),
    };
    let unlike = unlike_smear(task, report)?;
    let status = hold_for_review(&unlike, src, &mut obs, &mut conclusion);
    let subject = src.patient_proxy_id.as_deref().map(Reference::patient);
    let specimen = Specimen {
        resource_type: "Specimen",
        id: SPECIMEN_ID.into(),
        kind: CodeableConcept {
            coding: vec![Coding {
                system: V2_0487,
                code: "BLD".into(),
                display: "Whole blood".into(),
            }],
            text: Some("Peripheral blood smear, photographed fields".into()),
        },
        subject: subject.clone(),
        received_time: src.received_at.clone(),
        note: note(format!(
            "{} field(s) analysed: {}",
            src.fields.len(),
            src.fields.join(", ")
        )),
    };
    let device = Device {
        resource_type: "Device",
        id: DEVICE_ID.into(),
        device_name: vec![DeviceName {
            name: "argus".into(),
            kind: "model-name",
        }],
        kind: CodeableConcept::text("Blood smear image analysis software"),
        version: versions,
        property,
    };
    let result = obs.iter().map(|o| Reference::local(&o.id)).collect();
    let mut contained = vec![Contained::Specimen(specimen), Contained::Device(device)];
    contained.extend(obs.into_iter().map(|o| Contained::Observation(Box::new(o))));
    Ok(DiagnosticReport {
        resource_type: "DiagnosticReport",
        id: src.id.clone(),
        contained,
        identifier: src
            .identifier
            .iter()
            .map(|v| Identifier {
                system: REPORT_IDS,
                value: v.clone(),
            })
            .collect(),
        status,
        category: vec![
            CodeableConcept::code(V2_0074, "LAB", "Laboratory"),
            CodeableConcept::code(V2_0074, "HM", "Hematology"),
        ],
        code,
        subject,
        effective_date_time: src.received_at.clone(),
        issued,
        specimen: vec![Reference::local(SPECIMEN_ID)],
        result,
        conclusion,
    })
}

/// What one task's report gives the `DiagnosticReport`: its code, when
/// it was issued, its observations and its conclusion.
type Built = (CodeableConcept, String, Vec<Observation>, String);

/// The counts of cells seen (and the differential when the report has one).
fn cbc_results(
    task: &str,
    report: &Value,
    src: &Source,
    versions: &mut Vec<DeviceVersion>,
    property: &mut Vec<DeviceProperty>,
) -> Result<Built, FhirError> {
    let r: CbcIn = parse(task, report)?;
    versions.push(model_version("cell counting model", &r.model));
    let mut res = Results {
        src,
        issued: &r.created_at,
        out: Vec::new(),
    };
    res.count(
        "rbc-seen",
        "Red blood cells seen in the uploaded fields",
        r.rbc,
    );
    res.count(
        "wbc-seen",
        "White blood cells seen in the uploaded fields",
        r.wbc,
    );
    res.count(
        "platelets-seen",
        "Platelets seen in the uploaded fields",
        r.platelets,
    );
    if let Some(d) = &r.differential {
        differential_device(versions, property, d)?;
        res.differential(d)?;
    }
    let conclusion = format!(
        "{} red cells, {} white cells and {} platelets seen in {} field(s). {COUNT_NOTE}",
        r.rbc,
        r.wbc,
        r.platelets,
        src.fields.len()
    );
    Ok((
        CodeableConcept::code(
            LOCAL,
            "smear-cell-counts",
            "Cells seen in a blood smear's uploaded fields",
        ),
        r.created_at.clone(),
        res.out,
        conclusion,
    ))
}

/// The white-cell differential panel.
fn differential_results(
    task: &str,
    report: &Value,
    src: &Source,
    versions: &mut Vec<DeviceVersion>,
    property: &mut Vec<DeviceProperty>,
) -> Result<Built, FhirError> {
    let r: DifferentialReportIn = parse(task, report)?;
    let d = &r.differential;
    differential_device(versions, property, d)?;
    let mut res = Results {
        src,
        issued: &r.created_at,
        out: Vec::new(),
    };
    res.differential(d)?;
    let conclusion = format!(
        "White-cell differential of {} leukocytes classified in {} field(s); {} white \
         cell(s) left for review. Percentages are of the leukocytes classified.",
        d.leukocytes_classified,
        src.fields.len(),
        d.review
    );
    Ok((
        CodeableConcept::code(
            LOINC,
            "69738-3",
            "Differential panel, method unspecified - Blood",
        ),
        r.created_at.clone(),
        res.out,
        conclusion,
    ))
}

/// Parasitized red cells a "Detected" finding needs, at the least.
pub const DETECTED_MIN_CELLS: u64 = 3;

/// Parasitized share, in per cent of the whole red cells classified, that
/// a "Detected" finding must exceed. The classifier calls up to
/// 1-2% of a normal smear's cells parasitized (`models/malaria/MODEL_CARD.md`;
/// trying the API, 5 of 65 of BCCD's normal photos had one or two such
/// cells), so one or two positives among a few dozen cells are no finding
/// either way.
pub const DETECTED_MIN_PERCENT: f64 = 2.0;

/// The coded malaria finding (LOINC 51587-4) of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalariaFinding {
    /// At least [`DETECTED_MIN_CELLS`], and over [`DETECTED_MIN_PERCENT`],
    /// called parasitized: SNOMED CT 260373001.
    Detected,
    /// Cells were classified and none was called parasitized: 260415000.
    NotDetected,
    /// Some called parasitized, too few for a finding: 82334004.
    TooFew,
    /// No whole red cell to classify (a blank or cell-free photo): a lab
    /// system reads the coded value, so "not detected" would be a negative
    /// the appliance never obtained. 82334004.
    NothingExamined,
}

impl MalariaFinding {
    /// The finding of `positive` cells called parasitized of `classified`.
    pub fn of(positive: u64, classified: u64) -> Self {
        if classified == 0 {
            Self::NothingExamined
        } else if positive == 0 {
            Self::NotDetected
        } else if positive >= DETECTED_MIN_CELLS
            && 100.0 * positive as f64 > DETECTED_MIN_PERCENT * classified as f64
        {
            Self::Detected
        } else {
            Self::TooFew
        }
    }

    /// SNOMED CT code and display.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::Detected => ("260373001", "Detected"),
            Self::NotDetected => ("260415000", "Not detected"),
            Self::TooFew | Self::NothingExamined => ("82334004", "Indeterminate"),
        }
    }
}

/// The malaria finding, the counts behind it and the parasitized share.
fn malaria_results(
    task: &str,
    report: &Value,
    src: &Source,
    versions: &mut Vec<DeviceVersion>,
    property: &mut Vec<DeviceProperty>,
) -> Result<Built, FhirError> {
    let r: MalariaIn = parse(task, report)?;
    versions.push(model_version("parasite classifier", &r.model));
    property.push(threshold(
        "parasite-threshold",
        "Probability at or above which a red cell is called parasitized",
        r.parasite_threshold,
    )?);
    let classified = r.positive_count + r.negative_count;
    let mut res = Results {
        src,
        issued: &r.created_at,
        out: Vec::new(),
    };
    let (l, display) = MALARIA_LOINC;
    let found = MalariaFinding::of(r.positive_count, classified);
    let (finding, finding_display) = found.code();
    let o = res.push("malaria", CodeableConcept::code(LOINC, l, display));
    o.value_codeable_concept = Some(CodeableConcept::code(SNOMED, finding, finding_display));
    o.note = note(match found {
        MalariaFinding::NothingExamined => "Indeterminate: no whole red cell was found in the \
             uploaded fields, so none was examined for parasites."
            .to_string(),
        MalariaFinding::TooFew => format!(
            "Indeterminate: {} of {classified} whole red cells called parasitized, fewer than \
             a finding needs ({DETECTED_MIN_CELLS} cells and over {DETECTED_MIN_PERCENT}% of \
             those classified): the classifier calls up to 1-2% of a normal smear's red cells \
             parasitized. Review the cells, or photograph more fields.",
            r.positive_count
        ),
        _ => format!(
            "Detected when at least {DETECTED_MIN_CELLS} red cells and over \
             {DETECTED_MIN_PERCENT}% of those classified are called parasitized: {} of \
             {classified} whole red cells classified.",
            r.positive_count
        ),
    });
    o.derived_from = vec![
        Reference::local("rbc-parasitized"),
        Reference::local("rbc-classified"),
    ];
    res.count(
        "rbc-parasitized",
        "Parasitized red cells seen in the uploaded fields",
        r.positive_count,
    );
    res.count(
        "rbc-classified",
        "Whole red cells classified for parasites in the uploaded fields",
        classified,
    );
    // A share of no cells means nothing ("0 %" would read as a
    // result), as with the differential's percentages.
    if classified > 0 {
        let share = 100.0 * r.positive_count as f64 / classified as f64;
        let o = res.push(
            "rbc-parasitized-percent",
            CodeableConcept::code(
                LOCAL,
                "rbc-parasitized-percent",
                "Parasitized red cells per 100 red cells classified",
            ),
        );
        o.value_quantity = Some(Quantity::percent(share, "parasitized share")?);
        o.note = note("The share of the classified red cells, in the uploaded fields only.");
    }
    let conclusion = if found == MalariaFinding::TooFew {
        format!(
            "Malaria screen indeterminate: {} of {classified} red cells classified as \
             parasitized in {} field(s), too few for a finding; review the cells.",
            r.positive_count,
            src.fields.len()
        )
    } else if classified == 0 {
        format!(
            "Malaria screen indeterminate: no whole red cell was found in {} field(s), so \
             none was examined; photograph the smear's monolayer and repeat.",
            src.fields.len()
        )
    } else {
        format!(
            "Plasmodium {}: {} of {classified} red cells classified as parasitized in {} \
             field(s).",
            finding_display.to_lowercase(),
            r.positive_count,
            src.fields.len()
        )
    };
    Ok((
        CodeableConcept::code(
            LOCAL,
            "malaria-smear-screen",
            "Malaria screen of a blood smear's uploaded fields",
        ),
        r.created_at.clone(),
        res.out,
        conclusion,
    ))
}

fn model_version(kind: &str, model: &str) -> DeviceVersion {
    DeviceVersion {
        kind: CodeableConcept::text(kind),
        value: model.into(),
    }
}

fn threshold(code: &str, display: &str, v: f32) -> Result<DeviceProperty, FhirError> {
    Ok(DeviceProperty {
        kind: CodeableConcept::code(LOCAL, code, display),
        value_quantity: vec![Quantity::plain(super::schema::short(v), "threshold")?],
    })
}

fn differential_device(
    versions: &mut Vec<DeviceVersion>,
    property: &mut Vec<DeviceProperty>,
    d: &DifferentialIn,
) -> Result<(), FhirError> {
    versions.push(model_version("white-cell classifier", &d.model));
    property.push(threshold(
        "min-confidence",
        "Top-class probability below which a white cell is left for review",
        d.min_confidence,
    )?);
    Ok(())
}

/// A `Bundle` (type `collection`) of reports, for the CLI's several tasks.
pub fn bundle(reports: &[DiagnosticReport], timestamp: &str) -> Value {
    let entries: Vec<Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "fullUrl": format!("urn:uuid:{}", Uuid::new_v4()),
                "resource": r,
            })
        })
        .collect();
    serde_json::json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "type": "collection",
        "timestamp": timestamp,
        "entry": entries,
    })
}
