//! Studies: create one, find them.

use super::*;

/// `POST /pbs`: optional tags to find the study by later. No personal
/// data (PII, PHI) in tags.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = pbs::CreateStudy, example = json!({"tags": {"patient_proxy_id": "PPID12345"}}))]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// At most 64; keys 1 to 128 bytes, values at most 512 bytes. Values
    /// are strings (numbers and booleans are stored as strings).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    tags: BTreeMap<String, Value>,
}

fn check_tags(tags: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, PbsError> {
    if tags.len() > 64 {
        return Err(PbsError::BadRequest("at most 64 tags per study".into()));
    }
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        let v = match v {
            Value::String(s) => s,
            // Integers are kept exactly up to 64 bits; a longer one, or one
            // with a fraction or exponent, was parsed as an f64, and past
            // 2^53 that has lost digits: the tag would not be the one sent.
            Value::Number(n)
                if n.is_f64()
                    && n.as_f64()
                        .is_some_and(|f| f.abs() >= 9_007_199_254_740_992.0) =>
            {
                return Err(PbsError::BadRequest(format!(
                    "tag {k:?}: the number is too long to keep exactly; send it as a string"
                )))
            }
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(PbsError::BadRequest(format!(
                    "tag {k:?}: values are strings"
                )))
            }
        };
        if k.chars().any(char::is_control) {
            return Err(PbsError::BadRequest(format!(
                "tag {k:?}: keys may not hold control characters"
            )));
        }
        if k.is_empty() || k.len() > 128 || v.len() > 512 {
            return Err(PbsError::BadRequest(format!(
                "tag {k:?}: keys are 1 to 128 bytes, values at most 512"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Create a study (a PBS id) to upload a smear's photos into.
///
/// The body is optional (empty means no tags). Answers 201 with
/// `results.pbs_study_id`. Roles: admin, user, device.
#[utoipa::path(
    post,
    path = "/pbs",
    operation_id = "pbs_create_study",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    request_body(content = Option<CreateBody>, content_type = "application/json",
                 description = "Tags; the body may be empty."),
    responses(
        (status = 201, description = "The study was created.",
         body = EnvelopeBody<schema::StudyCreated>),
        (status = 400, description = "The body is not the expected JSON, or a tag breaks \
         the limits.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not create studies.",
         body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn create_study(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::CreateStudy>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let b: CreateBody = parse_json(&body)?;
    let tags = check_tags(b.tags)?;
    let rec = StudyRecord {
        id: Uuid::new_v4(),
        org: p.org.clone(),
        created_by: p.user.email.clone(),
        created_at: now_rfc3339(),
        tags,
        files: Vec::new(),
        frozen: false,
        tasks: Vec::new(),
        callback_url: None,
        status: ReportStatus::Open,
        progress: 0.0,
        progress_message: "waiting for files".into(),
        reports: BTreeMap::new(),
        partial: BTreeMap::new(),
        error: None,
    };
    let pbs = app.clinic.pbs.clone();
    let rec = blocking(move || pbs.put_study(&rec).map(|_| rec)).await?;
    app.store.flush_async().await?;
    Ok(Envelope::ok(
        StatusCode::CREATED,
        schema::StudyCreated {
            pbs_study_id: rec.id,
            tags: rec.tags.clone(),
        },
        started,
    ))
}

/// Find the organisation's studies by tags.
///
/// Every query parameter is a tag filter `tag.KEY=VALUE`; a study must
/// carry all of them. No parameter lists every study of the caller's
/// organisation. Roles: admin, user, service.
#[utoipa::path(
    get,
    path = "/pbs",
    operation_id = "pbs_find_studies",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("tags" = Option<BTreeMap<String, String>>, Query, style = Form, explode,
         description = "Tag filters, each written `tag.KEY=VALUE` \
         (`?tag.patient_proxy_id=PPID12345`). Any other parameter is a 400.",
         example = json!({"tag.patient_proxy_id": "PPID12345"})),
    ),
    responses(
        (status = 200, description = "The studies that carry every tag asked for.",
         body = EnvelopeBody<schema::StudyList>),
        (status = 400, description = "A query parameter that is not `tag.KEY`.",
         body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not search studies.",
         body = ErrorBody),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn find_studies(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::Search>,
    ClientIp(ip): ClientIp,
    Query(q): Query<Vec<(String, String)>>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    app.audit.record(
        Event {
            family: "pbs",
            action: "studies_searched",
            actor: Some(&p.user.email),
            address: Some(&ip),
            detail: Some(&format!("{q:?}")),
            ..Default::default()
        },
        Outcome::Ok,
    );
    let mut tags = Vec::new();
    for (k, v) in q {
        match k.strip_prefix("tag.") {
            Some(t) if !t.is_empty() => tags.push((t.to_string(), v)),
            _ => {
                return Err(PbsError::BadRequest(format!(
                    "unknown query parameter {k:?}; search with tag.KEY=VALUE"
                )))
            }
        }
    }
    let (pbs, org) = (app.clinic.pbs.clone(), p.org.clone());
    let found = blocking(move || pbs.find_studies(&org, &tags)).await?;
    Ok(Envelope::ok(
        StatusCode::OK,
        schema::StudyList {
            pbs_studies: found.iter().map(schema::StudySummary::from).collect(),
            count: found.len(),
        },
        started,
    ))
}
