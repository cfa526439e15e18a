//! The blood-smear (PBS) family's FHIR R4 reports: every one validated
//! against the official FHIR R4 JSON schema (tests/fixtures/fhir), built
//! from a hand-made differential and served by the real server for real
//! studies (`GET /pbs/{id}/report/{task}?format=fhir`), with the numbers
//! checked against the JSON report.

mod common;

use std::sync::OnceLock;

use argus::families::pbs::fhir::{self, Source, DIFFERENTIAL_LOINC, LOCAL, LOINC, SNOMED};
use argus::families::pbs::schema::{
    DifferentialCell, DifferentialClass, DifferentialFile, WbcDifferential, WbcDifferentialReport,
    DIFFERENTIAL_CLASSES,
};
use common::pbs::{call, configure, login, new_study, setup_org, upload, wait_ready};
use common::{fixture, start, ROOT};
use serde_json::{json, Value};

/// The official schema, compiled once (it is 3 MB; compiling takes a while).
fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/fhir/fhir.schema.json"))
            .expect("the FHIR schema fixture");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::draft6::new(&schema).expect("the FHIR schema compiles")
    })
}

/// Panics with every schema error of `resource`.
fn assert_valid_fhir(resource: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(resource)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid FHIR R4 ({} errors):\n{}\n{}",
        errors.len(),
        errors.join("\n"),
        serde_json::to_string_pretty(resource).unwrap()
    );
}

/// The contained resource with `id`.
fn contained<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["contained"]
        .as_array()
        .expect("contained")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no contained {id}: {report}"))
}

/// The contained observation coded `system|code`.
fn observation<'a>(report: &'a Value, system: &str, code: &str) -> &'a Value {
    report["contained"]
        .as_array()
        .expect("contained")
        .iter()
        .filter(|r| r["resourceType"] == "Observation")
        .find(|o| {
            o["code"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["system"] == system && c["code"] == code)
        })
        .unwrap_or_else(|| panic!("no observation {system}|{code}"))
}

/// Every `result` resolves to a contained Observation, and each contained
/// Observation is a result.
fn check_references(report: &Value) {
    let results: Vec<&str> = report["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|r| r["reference"].as_str().expect("local reference"))
        .collect();
    for r in &results {
        let id = r.strip_prefix('#').expect("a contained reference");
        assert_eq!(contained(report, id)["resourceType"], "Observation");
    }
    let observations = report["contained"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resourceType"] == "Observation")
        .count();
    assert_eq!(observations, results.len());
    assert_eq!(report["specimen"][0]["reference"], "#specimen");
    assert_eq!(contained(report, "specimen")["resourceType"], "Specimen");
    assert_eq!(contained(report, "device")["resourceType"], "Device");
}

fn cells(o: &Value) -> u64 {
    assert_eq!(o["valueQuantity"]["code"], "{cells}", "{o}");
    assert_eq!(o["valueQuantity"]["system"], "http://unitsofmeasure.org");
    o["valueQuantity"]["value"].as_u64().expect("a whole count")
}

fn hand_made_differential() -> WbcDifferentialReport {
    // 40 leukocytes classified (erythroblasts not among them), 3 for review.
    let counts = [14u64, 2, 12, 5, 3, 1, 3, 2];
    let leukocytes: u64 = counts[..7].iter().sum();
    let classes: Vec<DifferentialClass> = DIFFERENTIAL_CLASSES
        .iter()
        .zip(counts)
        .map(|(c, n)| DifferentialClass {
            class: c.to_string(),
            count: n,
            percent: 100.0 * n as f64 / leukocytes as f64,
        })
        .collect();
    let cell = |class: Option<&str>| DifferentialCell {
        x: 10,
        y: 20,
        width: 30,
        height: 30,
        class: class.map(String::from),
        probabilities: [("lymphocyte".to_string(), 0.4), ("monocyte".into(), 0.35)]
            .into_iter()
            .collect(),
    };
    WbcDifferentialReport {
        differential: WbcDifferential {
            leukocytes_classified: leukocytes,
            review: 3,
            classes: classes.clone(),
            files: vec![DifferentialFile {
                file_id: "sha224-i-00".into(),
                classes,
                review: 3,
                cells: vec![cell(None), cell(None), cell(None), cell(Some("lymphocyte"))],
                unlike_smear: false,
            }],
            model: "wbc_classifier (test)",
            min_confidence: 0.6,
        },
        created_at: "2025-05-01T09:31:12Z".into(),
    }
}

#[test]
fn a_differential_is_valid_fhir_with_each_loinc_code_on_its_class() {
    let r = hand_made_differential();
    let stored = serde_json::to_value(&r).unwrap();
    let src = Source {
        id: "c7d453a9-676d-4b9f-a505-8a9021b76dfd-wbc-differential-v1".into(),
        identifier: Some("c7d453a9-676d-4b9f-a505-8a9021b76dfd/WBC_DIFFERENTIAL/1".into()),
        patient_proxy_id: Some("PPID12345".into()),
        received_at: "2025-05-01T09:30:00Z".into(),
        fields: vec!["sha224-i-00".into()],
        field_ids: Vec::new(),
    };
    let report =
        serde_json::to_value(fhir::diagnostic_report("WBC_DIFFERENTIAL", &stored, &src).unwrap())
            .unwrap();
    assert_valid_fhir(&report);
    check_references(&report);
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(report["status"], "final");
    assert_eq!(report["code"]["coding"][0]["code"], "69738-3");
    assert_eq!(report["subject"]["identifier"]["value"], "PPID12345");
    assert_eq!(report["issued"], "2025-05-01T09:31:12Z");

    // Each class's observation: its LOINC term, its percent, its count.
    let d = &r.differential;
    for (class, code, _) in DIFFERENTIAL_LOINC {
        let c = d.classes.iter().find(|c| c.class == class).unwrap();
        let o = observation(&report, LOINC, code);
        let local = o["code"]["coding"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["system"] == LOCAL)
            .unwrap();
        assert_eq!(local["code"], class, "LOINC {code} is on {}", local["code"]);
        let v = o["valueQuantity"]["value"].as_f64().unwrap();
        assert!(
            (v - c.percent).abs() < 1e-3,
            "{class}: {v} vs {}",
            c.percent
        );
        let unit = if class == "erythroblast" {
            "/100{WBCs}"
        } else {
            "%"
        };
        assert_eq!(o["valueQuantity"]["code"], unit, "{class}");
        assert_eq!(o["component"][0]["valueQuantity"]["value"], c.count);
    }
    // The codes themselves, spelled out (a swapped table would pass above).
    for (class, code) in [
        ("neutrophil_segmented", "32200-8"),
        ("neutrophil_band", "764-1"),
        ("lymphocyte", "736-9"),
        ("monocyte", "5905-5"),
        ("eosinophil", "713-8"),
        ("basophil", "706-2"),
        ("immature_granulocyte", "71695-1"),
        ("erythroblast", "58413-6"),
    ] {
        let o = observation(&report, LOCAL, class);
        assert!(
            o["code"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["system"] == LOINC && c["code"] == code),
            "{class} is not coded {code}: {o}"
        );
    }
    // Neutrophils (770-8) are segmented + band.
    let n = observation(&report, LOINC, "770-8");
    let want = 100.0 * 16.0 / 40.0;
    assert!((n["valueQuantity"]["value"].as_f64().unwrap() - want).abs() < 1e-3);
    assert_eq!(n["component"][0]["valueQuantity"]["value"], 16);
    // The cells left for review, and the classifier with its threshold.
    assert_eq!(cells(observation(&report, LOCAL, "wbc-review")), 3);
    assert_eq!(
        cells(observation(&report, LOCAL, "leukocytes-classified")),
        40
    );
    let device = contained(&report, "device");
    assert!(device["version"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["value"] == "wbc_classifier (test)"));
    assert_eq!(device["property"][0]["valueQuantity"][0]["value"], 0.6);

    // No subject without a patient proxy id; the schema still holds.
    let anonymous = Source {
        patient_proxy_id: None,
        ..src
    };
    let report = serde_json::to_value(
        fhir::diagnostic_report("WBC_DIFFERENTIAL", &stored, &anonymous).unwrap(),
    )
    .unwrap();
    assert!(report.get("subject").is_none());
    assert!(contained(&report, "specimen").get("subject").is_none());
    assert_valid_fhir(&report);
}

#[test]
fn no_percentages_without_a_classified_leukocyte() {
    // Every white cell left for review: the counts, never "0 %" per class.
    let mut r = hand_made_differential();
    r.differential.leukocytes_classified = 0;
    for c in &mut r.differential.classes {
        c.count = 0;
        c.percent = 0.0;
    }
    let src = Source {
        id: "c7d453a9-676d-4b9f-a505-8a9021b76dfd-wbc-differential-v1".into(),
        identifier: None,
        patient_proxy_id: None,
        received_at: "2025-05-01T09:30:00Z".into(),
        fields: vec!["sha224-i-00".into()],
        field_ids: Vec::new(),
    };
    let stored = serde_json::to_value(&r).unwrap();
    let report =
        serde_json::to_value(fhir::diagnostic_report("WBC_DIFFERENTIAL", &stored, &src).unwrap())
            .unwrap();
    assert_valid_fhir(&report);
    check_references(&report);
    assert_eq!(cells(observation(&report, LOCAL, "wbc-review")), 3);
    assert_eq!(
        cells(observation(&report, LOCAL, "leukocytes-classified")),
        0
    );
    let text = report.to_string();
    for (_, code, _) in DIFFERENTIAL_LOINC {
        assert!(!text.contains(&format!("\"{code}\"")), "{code} in {text}");
    }
    assert!(!text.contains("\"770-8\""));
}

#[test]
fn no_negative_malaria_finding_without_a_cell_examined() {
    // A blank or cell-free photo: the coded finding must not read as a
    // negative result, and no "0 %" share is given.
    let src = Source {
        id: "c7d453a9-676d-4b9f-a505-8a9021b76dfd-malaria-any-any-v1".into(),
        identifier: None,
        patient_proxy_id: None,
        received_at: "2025-05-01T09:30:00Z".into(),
        fields: vec!["sha224-i-00".into()],
        field_ids: Vec::new(),
    };
    let stored = |pos: u64, neg: u64| {
        json!({
            "positive_count": pos,
            "negative_count": neg,
            "files": [],
            "model": "malaria-cnn",
            "parasite_threshold": 0.5,
            "created_at": "2025-05-01T09:31:00Z",
        })
    };
    let finding = |report: &Value| {
        observation(report, LOINC, "51587-4")["valueCodeableConcept"]["coding"][0]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let none = serde_json::to_value(
        fhir::diagnostic_report("MALARIA_ANY_ANY", &stored(0, 0), &src).unwrap(),
    )
    .unwrap();
    assert_valid_fhir(&none);
    check_references(&none);
    assert_eq!(finding(&none), "82334004", "{none}");
    assert!(!none.to_string().contains("260415000"));
    assert!(!none.to_string().contains("\"rbc-parasitized-percent\""));
    assert!(none["conclusion"]
        .as_str()
        .unwrap()
        .contains("indeterminate"));
    assert_eq!(cells(observation(&none, LOCAL, "rbc-classified")), 0);

    let negative = serde_json::to_value(
        fhir::diagnostic_report("MALARIA_ANY_ANY", &stored(0, 40), &src).unwrap(),
    )
    .unwrap();
    assert_valid_fhir(&negative);
    assert_eq!(finding(&negative), "260415000");
    // One or two cells called parasitized among many are within what the
    // classifier calls on normal smears: no finding either way.
    for (pos, neg, want) in [
        (1, 40, "82334004"),
        (2, 20, "82334004"),
        (3, 200, "82334004"),
        (3, 40, "260373001"),
        (30, 10, "260373001"),
    ] {
        let r = serde_json::to_value(
            fhir::diagnostic_report("MALARIA_ANY_ANY", &stored(pos, neg), &src).unwrap(),
        )
        .unwrap();
        assert_valid_fhir(&r);
        assert_eq!(finding(&r), want, "{pos} of {}", pos + neg);
        assert_eq!(cells(observation(&r, LOCAL, "rbc-parasitized")), pos);
    }
    let share = observation(&negative, LOCAL, "rbc-parasitized-percent");
    assert_eq!(share["valueQuantity"]["value"].as_f64(), Some(0.0));
    let positive = serde_json::to_value(
        fhir::diagnostic_report("MALARIA_ANY_ANY", &stored(4, 36), &src).unwrap(),
    )
    .unwrap();
    assert_eq!(finding(&positive), "260373001");
    assert_eq!(positive["status"], "final");

    // The same finding from a photo marked unlike a smear's monolayer is
    // preliminary, for review, report and observations alike.
    let mut marked = stored(4, 36);
    marked["files"] = json!([
        {"file_id": "sha224-i-00", "positive_count": 4, "negative_count": 36, "unlike_smear": true},
    ]);
    let held =
        serde_json::to_value(fhir::diagnostic_report("MALARIA_ANY_ANY", &marked, &src).unwrap())
            .unwrap();
    assert_valid_fhir(&held);
    assert_eq!(held["status"], "preliminary");
    assert_eq!(finding(&held), "260373001");
    for o in held["contained"].as_array().unwrap() {
        if o["resourceType"] == "Observation" {
            assert_eq!(o["status"], "preliminary", "{o}");
        }
    }
    let conclusion = held["conclusion"].as_str().unwrap();
    assert!(
        conclusion.starts_with("Preliminary, for review: 1 of 1 field(s) (sha224-i-00)"),
        "{conclusion}"
    );
}

#[test]
fn the_schema_check_catches_what_is_not_fhir() {
    // The validator is not vacuous: broken reports fail it.
    let src = Source {
        id: "x".into(),
        identifier: None,
        patient_proxy_id: None,
        received_at: "2025-05-01T09:30:00Z".into(),
        fields: vec![],
        field_ids: Vec::new(),
    };
    let stored = serde_json::to_value(hand_made_differential()).unwrap();
    let good =
        serde_json::to_value(fhir::diagnostic_report("WBC_DIFFERENTIAL", &stored, &src).unwrap())
            .unwrap();
    assert_valid_fhir(&good);
    let mut bad = good.clone();
    bad["status"] = json!("done");
    assert!(
        !validator().is_valid(&bad),
        "a status outside the code list"
    );
    let mut bad = good.clone();
    bad["issued"] = json!("yesterday");
    assert!(!validator().is_valid(&bad), "an instant that is not one");
    let mut bad = good.clone();
    bad["contained"][2]["valueQuantity"]["value"] = json!("12");
    assert!(!validator().is_valid(&bad), "a decimal given as a string");
    let mut bad = good;
    bad["conclusions"] = json!("typo");
    assert!(!validator().is_valid(&bad), "an element R4 does not have");
    // A report that is not the task's is refused, not guessed at.
    assert!(fhir::diagnostic_report("CBC_COUNTS", &stored, &src).is_err());
    assert!(fhir::diagnostic_report("PBS_V1", &stored, &src).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_served_as_fhir_and_agree_with_the_json() {
    let s = start(configure).await;
    setup_org(&s, "clinic-f").await;
    let token = login(&s, "lab@clinic-f.test").await;
    let id = new_study(&s, &token, json!({"patient_proxy_id": "PPID-F1"})).await;
    let (st, v) = upload(
        &s,
        &id,
        "file_name=full.jpg",
        &token,
        fixture("smear_cbc.jpg"),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["CBC_COUNTS", "MALARIA_ANY_ANY", "WBC_DIFFERENTIAL"]})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let done = wait_ready(&s, &id, &token).await;
    assert_eq!(done["results"]["report_status"], "ready", "{done}");

    let fhir_of = |task: &str, query: &str| {
        let url = s.url(&format!("/pbs/{id}/report/{task}?format=fhir{query}"));
        let rb = s.client.get(url).header("Authorization", &token);
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("application/fhir+json"), "{ct}");
            r.json::<Value>().await.unwrap()
        }
    };

    // CBC_COUNTS: the counts are the JSON report's, coded locally as counts.
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS"),
        &token,
        None,
    )
    .await;
    let cbc = &v["results"]["report"]["CBC_COUNTS"];
    let report = fhir_of("CBC_COUNTS", "").await;
    assert_valid_fhir(&report);
    check_references(&report);
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(report["status"], "final");
    assert_eq!(report["subject"]["identifier"]["value"], "PPID-F1");
    assert_eq!(
        report["identifier"][0]["value"],
        format!("{id}/CBC_COUNTS/1")
    );
    assert_eq!(report["issued"], cbc["created_at"]);
    for (code, key) in [
        ("rbc-seen", "rbc"),
        ("wbc-seen", "wbc"),
        ("platelets-seen", "platelets"),
    ] {
        let o = observation(&report, LOCAL, code);
        assert_eq!(cells(o), cbc[key].as_u64().unwrap(), "{code}");
        assert!(o["note"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not a concentration"));
    }
    assert!(cbc["rbc"].as_u64().unwrap() > 0, "{cbc}");
    // No concentration term anywhere (6690-2 WBC, 789-8 RBC, 777-3 PLT).
    let text = report.to_string();
    for code in ["6690-2", "789-8", "777-3", "57021-8"] {
        assert!(!text.contains(&format!("\"{code}\"")), "{code} in {text}");
    }
    let device = contained(&report, "device");
    assert!(device["version"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["value"] == cbc["model"]));
    // Explicit `version=1` and `format=json` keep answering as before.
    let again = fhir_of("CBC_COUNTS", "&version=1").await;
    assert_eq!(again["id"], report["id"]);
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS?format=json"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(&v["results"]["report"]["CBC_COUNTS"], cbc);

    // MALARIA_ANY_ANY: the finding and counts agree with the JSON report.
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/MALARIA_ANY_ANY"),
        &token,
        None,
    )
    .await;
    let m = &v["results"]["report"]["MALARIA_ANY_ANY"];
    let (pos, neg) = (
        m["positive_count"].as_u64().unwrap(),
        m["negative_count"].as_u64().unwrap(),
    );
    assert!(pos + neg > 0, "{m}");
    let report = fhir_of("MALARIA_ANY_ANY", "").await;
    assert_valid_fhir(&report);
    check_references(&report);
    let finding = observation(&report, LOINC, "51587-4");
    let value = &finding["valueCodeableConcept"]["coding"][0];
    assert_eq!(value["system"], SNOMED);
    let want = fhir::MalariaFinding::of(pos, pos + neg).code().0;
    assert_eq!(value["code"], want, "{pos} positive of {}", pos + neg);
    assert_eq!(cells(observation(&report, LOCAL, "rbc-parasitized")), pos);
    assert_eq!(
        cells(observation(&report, LOCAL, "rbc-classified")),
        pos + neg
    );
    let share = observation(&report, LOCAL, "rbc-parasitized-percent");
    assert_eq!(share["valueQuantity"]["code"], "%");
    let got = share["valueQuantity"]["value"].as_f64().unwrap();
    assert!((got - 100.0 * pos as f64 / (pos + neg) as f64).abs() < 1e-3);
    assert_eq!(
        contained(&report, "device")["property"][0]["valueQuantity"][0]["value"],
        m["parasite_threshold"]
    );

    // WBC_DIFFERENTIAL of the real cells: each class's percentage as the
    // JSON report has it, and the CBC report carries the same panel.
    let (_, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/WBC_DIFFERENTIAL"),
        &token,
        None,
    )
    .await;
    let d = &v["results"]["report"]["WBC_DIFFERENTIAL"];
    assert!(
        d["files"][0]["cells"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{d}"
    );
    let report = fhir_of("WBC_DIFFERENTIAL", "").await;
    assert_valid_fhir(&report);
    check_references(&report);
    assert_eq!(report["code"]["coding"][0]["code"], "69738-3");
    for (class, code, _) in DIFFERENTIAL_LOINC {
        let want = d["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == class)
            .unwrap();
        let o = observation(&report, LOINC, code);
        let got = o["valueQuantity"]["value"].as_f64().unwrap();
        let want = want["percent"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-3, "{class}: {got} vs {want}");
    }
    assert_eq!(
        cells(observation(&report, LOCAL, "wbc-review")),
        d["review"].as_u64().unwrap()
    );
    let cbc_fhir = fhir_of("CBC_COUNTS", "").await;
    observation(&cbc_fhir, LOINC, "770-8");

    // An unknown format: 400 in the PBS envelope.
    let (st, v) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS?format=xml"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("fhir"), "{v}");
    assert!(v["results"].is_null());
    // Errors stay enveloped with format=fhir too.
    let (st, _) = call(
        &s,
        "GET",
        &format!("/pbs/{id}/report/CBC_COUNTS?format=fhir&version=9"),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 404);

    // The OpenAPI document names the parameter and the FHIR answer.
    let doc: Value = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/pbs/{id}/report/{task}"]["get"];
    assert!(op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "format" && p["in"] == "query"));
    assert!(op["responses"]["200"]["content"]
        .get("application/fhir+json")
        .is_some());
    s.stop().await;
}

/// The standard output of `argusd pbs count <args> <photo>`, run offline on
/// the CPU with its state in `state` and no config file; it must succeed.
fn pbs_count(state: &std::path::Path, args: &[&str], photo: impl AsRef<std::ffi::OsStr>) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"))
        .current_dir(ROOT)
        .env("ARGUS_STATE_DIR", state)
        .env("ARGUS_LOG_FORMAT", "json")
        .env("ARGUS_BACKEND", "cpu")
        .env_remove("ARGUS_CONFIG")
        .args(["pbs", "count"])
        .args(args)
        .arg(photo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_prints_a_bundle_of_the_photos_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = format!("{ROOT}/tests/fixtures/smear_cbc.jpg");
    let run = |extra: &[&str]| {
        let args = [&["--rbc-diameter-px", "100"], extra].concat();
        pbs_count(tmp.path(), &args, &photo)
    };
    // The same photo's counts, as `--json` prints them.
    let plain: Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    let counts = &plain["analysis"]["counts"];
    // ...with the white-cell differential in the API's shape: every white
    // cell counted is in a class or left for review.
    let diff = &plain["differential"];
    assert_eq!(diff["files"][0]["file_id"], plain["file_id"]);
    let classed: u64 = diff["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        classed + diff["review"].as_u64().unwrap(),
        counts["wbc"].as_u64().unwrap(),
        "{diff}"
    );
    assert!(counts["wbc"].as_u64().unwrap() > 0);
    let bundle: Value = serde_json::from_str(&run(&["--fhir", "--malaria"])).unwrap();
    assert_valid_fhir(&bundle);
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    let reports: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(reports.len(), 2);
    let cbc = reports[0];
    check_references(cbc);
    assert!(cbc.get("subject").is_none(), "the CLI knows no patient");
    for (code, key) in [
        ("rbc-seen", "rbc"),
        ("wbc-seen", "wbc"),
        ("platelets-seen", "platelets"),
    ] {
        assert_eq!(
            cells(observation(cbc, LOCAL, code)),
            counts[key].as_u64().unwrap(),
            "{code}"
        );
    }
    let malaria = reports[1];
    check_references(malaria);
    let classified = cells(observation(malaria, LOCAL, "rbc-classified"));
    assert!(
        classified > 0 && classified <= counts["rbc"].as_u64().unwrap(),
        "{classified}"
    );
    observation(malaria, LOINC, "51587-4");
    // A smear's report is final; its photo is not marked.
    assert_eq!(
        (cbc["status"].as_str(), malaria["status"].as_str()),
        (Some("final"), Some("final"))
    );
    assert!(
        plain["analysis"]["rbc_size"].get("unlike_smear").is_none(),
        "{plain}"
    );
}

/// A photo of something else than a smear: the red-cell net takes parts of
/// it for red cells and the malaria classifier calls some parasitized, so
/// before the shape check the astronaut photo gave 35 red cells, 6 called
/// parasitized, and a final "Detected" finding (2026-12-07). Few of those cells have a red cell's
/// round outline: the photo is marked and its reports are preliminary.
#[test]
fn a_photo_that_is_no_smear_gives_preliminary_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = format!("{ROOT}/tests/fixtures/astronaut.jpg");
    let run = |extra: &[&str]| pbs_count(tmp.path(), &[&["--malaria"], extra].concat(), &photo);
    let plain: Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    let size = &plain["analysis"]["rbc_size"];
    assert_eq!(size["unlike_smear"], true, "{size}");
    let round = size["cells_round"].as_u64().unwrap();
    let counted = plain["analysis"]["counts"]["rbc"].as_u64().unwrap();
    assert!(round * 100 < counted * 10, "{round} of {counted}");
    assert!(
        size["warning"].as_str().unwrap().contains("round outline"),
        "{size}"
    );
    assert_eq!(plain["differential"]["files"][0]["unlike_smear"], true);
    let bundle: Value = serde_json::from_str(&run(&["--fhir"])).unwrap();
    assert_valid_fhir(&bundle);
    for e in bundle["entry"].as_array().unwrap() {
        let report = &e["resource"];
        assert_eq!(report["status"], "preliminary", "{report}");
        // Named as the specimen's note names it: by the photo's name.
        let conclusion = report["conclusion"].as_str().unwrap();
        assert!(
            conclusion.starts_with("Preliminary, for review: 1 of 1 field(s) (")
                && conclusion.contains("astronaut.jpg)")
                && !conclusion.contains("sha224"),
            "{conclusion}"
        );
    }
}

/// A photo of one flat colour, red cells' pink included, shows no cell to
/// examine: its malaria finding is Indeterminate, never "not detected"
/// (trying the API found a pink one counted as one red cell and reported
/// as a negative, 2026-12-07; at 400 x 300 the net's mask was a flat
/// patch, at 640 x 480 a thin lattice).
#[test]
fn a_photo_with_no_cell_is_indeterminate_not_negative() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, rgb, (w, h)) in [
        ("pink", [235u8, 200, 205], (400, 300)),
        ("pink_vga", [235, 200, 205], (640, 480)),
        ("white", [250, 250, 250], (400, 300)),
    ] {
        let photo = tmp.path().join(format!("{name}.png"));
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(&photo)
            .unwrap();
        let out = pbs_count(&tmp.path().join("state"), &["--fhir", "--malaria"], &photo);
        let bundle: Value = serde_json::from_str(&out).unwrap();
        assert_valid_fhir(&bundle);
        let malaria = &bundle["entry"][1]["resource"];
        assert_eq!(
            cells(observation(malaria, LOCAL, "rbc-classified")),
            0,
            "{name}"
        );
        let finding = observation(malaria, LOINC, "51587-4");
        assert_eq!(
            finding["valueCodeableConcept"]["coding"][0]["code"], "82334004",
            "{name}: {finding}"
        );
    }
}
