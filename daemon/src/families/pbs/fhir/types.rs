//! The FHIR R4 data types and resources the reports use (only the
//! elements used), serialized as the R4 JSON schema has them.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct Coding {
    pub system: &'static str,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CodeableConcept {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    pub(super) fn code(system: &'static str, code: &str, display: &str) -> Self {
        Self {
            coding: vec![Coding {
                system,
                code: code.into(),
                display: display.into(),
            }],
            text: None,
        }
    }

    pub(super) fn text(text: &str) -> Self {
        Self {
            coding: Vec::new(),
            text: Some(text.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Quantity {
    pub value: serde_json::Number,
    pub unit: &'static str,
    pub system: &'static str,
    pub code: &'static str,
}

impl Quantity {
    /// Cells counted: UCUM `{cells}` (a count, no dimension).
    pub(super) fn cells(n: u64) -> Self {
        Self {
            value: n.into(),
            unit: "cells",
            system: UCUM,
            code: "{cells}",
        }
    }

    pub(super) fn percent(v: f64, what: &'static str) -> Result<Self, FhirError> {
        Ok(Self {
            value: number(v, what)?,
            unit: "%",
            system: UCUM,
            code: "%",
        })
    }

    /// Per 100 leukocytes (LOINC's unit for nucleated red cells).
    pub(super) fn per_100_wbc(v: f64, what: &'static str) -> Result<Self, FhirError> {
        Ok(Self {
            value: number(v, what)?,
            unit: "/100 WBC",
            system: UCUM,
            code: "/100{WBCs}",
        })
    }

    pub(super) fn plain(v: f64, what: &'static str) -> Result<Self, FhirError> {
        Ok(Self {
            value: number(v, what)?,
            unit: "1",
            system: UCUM,
            code: "1",
        })
    }
}

/// `v` as a JSON number, rounded to 4 decimals (no float noise in reports).
fn number(v: f64, what: &'static str) -> Result<serde_json::Number, FhirError> {
    let r = (v * 1e4).round() / 1e4;
    serde_json::Number::from_f64(r).ok_or(FhirError::NotFinite(what))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Identifier {
    pub system: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Reference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
}

impl Reference {
    pub(super) fn local(id: &str) -> Self {
        Self {
            reference: Some(format!("#{id}")),
            ..Self::default()
        }
    }

    /// The patient behind a study, by its proxy identifier only.
    pub(super) fn patient(proxy_id: &str) -> Self {
        Self {
            reference: None,
            kind: Some("Patient"),
            identifier: Some(Identifier {
                system: PATIENT_PROXY_IDS,
                value: proxy_id.into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub text: String,
}

pub(super) fn note(text: impl Into<String>) -> Vec<Annotation> {
    vec![Annotation { text: text.into() }]
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub code: CodeableConcept,
    pub value_quantity: Quantity,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub(super) resource_type: &'static str,
    pub id: String,
    pub status: &'static str,
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    pub effective_date_time: String,
    pub issued: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub note: Vec<Annotation>,
    pub specimen: Reference,
    pub device: Reference,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub derived_from: Vec<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub component: Vec<Component>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Specimen {
    pub(super) resource_type: &'static str,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    pub received_time: String,
    pub note: Vec<Annotation>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceName {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceVersion {
    #[serde(rename = "type")]
    pub kind: CodeableConcept,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    #[serde(rename = "type")]
    pub kind: CodeableConcept,
    pub value_quantity: Vec<Quantity>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub(super) resource_type: &'static str,
    pub id: String,
    pub device_name: Vec<DeviceName>,
    #[serde(rename = "type")]
    pub kind: CodeableConcept,
    pub version: Vec<DeviceVersion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub property: Vec<DeviceProperty>,
}

/// A resource inside the report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Contained {
    Specimen(Specimen),
    Device(Device),
    Observation(Box<Observation>),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticReport {
    pub(super) resource_type: &'static str,
    pub id: String,
    pub contained: Vec<Contained>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub status: &'static str,
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    pub effective_date_time: String,
    pub issued: String,
    pub specimen: Vec<Reference>,
    pub result: Vec<Reference>,
    pub conclusion: String,
}
