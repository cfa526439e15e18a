//! A study's files: the upload and how its type is told.

use super::*;

/// Why the atomic update refused to add a file.
enum Refused {
    Frozen,
    Full,
}

/// How the type of an uploaded file is told: one of the two is needed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name; its extension gives the type (`.jpg`, `.jpeg`,
    /// `.png`, `.tif`, `.tiff`, `.bmp`, `.webp`).
    #[param(example = "MS12_12.jpg")]
    file_name: Option<String>,
    /// The file's type (`image/jpeg`, `image/png`, `image/tiff`,
    /// `image/bmp`, `image/webp`); wins over `file_name`, which is used
    /// when this is absent or not one of those.
    #[param(example = "image/jpeg")]
    content_type: Option<String>,
}

/// The declared type: from `content_type`, else `file_name`'s extension.
fn declared_type(q: &UploadQuery) -> Option<&'static str> {
    let by_mime = |m: &str| match m.trim().to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" => Some("image/jpeg"),
        "image/png" => Some("image/png"),
        "image/tiff" => Some("image/tiff"),
        "image/bmp" => Some("image/bmp"),
        "image/webp" => Some("image/webp"),
        _ => None,
    };
    // A generic content_type (`application/octet-stream`, what many HTTP
    // tools send) does not hide a file_name that tells the type.
    if let Some(t) = q.content_type.as_deref().and_then(by_mime) {
        return Some(t);
    }
    let name = q.file_name.as_deref()?;
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "tif" | "tiff" => Some("image/tiff"),
        "bmp" => Some("image/bmp"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

/// Add a photo of the smear to a study.
///
/// The whole body is the image (not multipart, not a form); its type comes
/// from the `content_type` or `file_name` query parameter, not from the
/// `Content-Type` header. At most `pbs.max_file_bytes` per file and
/// `pbs.max_files_per_study` files. The image is decoded on arrival, so a
/// file the analysis could not read (or one too small to analyse, under
/// 75 px a side) is refused here; a file whose bytes are another accepted
/// type than declared is kept as what its bytes are. Idempotent: the same
/// bytes again answer 201 as the first time, with `duplicate: true`, and
/// change nothing. No more files once tasks were requested (409). Roles:
/// admin, user, device.
#[utoipa::path(
    post,
    path = "/pbs/{id}/files",
    operation_id = "pbs_upload_file",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("id" = Uuid, Path, description = "The study's `pbs_study_id`."),
        UploadQuery,
    ),
    request_body(
        description = "The image file's bytes, as the whole body.",
        content(
            ("image/jpeg"),
            ("image/png"),
            ("image/tiff"),
            ("image/bmp"),
            ("image/webp"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 201, description = "The file was added, or these bytes were already in \
         the study (`duplicate: true`, nothing changed).", body = EnvelopeBody<schema::FileAdded>),
        (status = 400, description = "No usable `file_name` or `content_type`, an empty \
         body, a file that is not a usable image, or one too small to analyse.",
         body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not upload files.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 409, description = "Tasks were already requested for the study, or it \
         holds the most files allowed.", body = ErrorBody),
        (status = 413, description = "The file is over `pbs.max_file_bytes`, its image \
         over `limits.max_pixels`, or too large to decode.", body = ErrorBody),
        (status = 503, description = "The appliance's decode memory is in use; try again.",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn upload_file(
    State(app): State<Arc<Pbs>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    caller: Caller<access::Upload>,
    body: axum::body::Body,
) -> Res {
    let started = Instant::now();
    let limit = app.config.pbs.max_file_bytes;
    let checked = async {
        let p = caller.0;
        let study = own_study(&app, &p, &id).await?;
        let Some(content_type) = declared_type(&q) else {
            return Err(PbsError::BadRequest(match (&q.file_name, &q.content_type) {
                (None, None) => "give file_name (e.g. MS12_12.jpg) or content_type (e.g. image/jpeg) so the file type can be determined".into(),
                _ => "the file type could not be determined; accepted: JPEG, PNG, TIFF, BMP, WebP (by file_name extension or content_type)".into(),
            }));
        };
        if study.frozen {
            return Err(PbsError::Conflict(
                "tasks were already requested for this study; no more files can be added".into(),
            ));
        }
        Ok((study, content_type))
    }
    .await;
    // A refused upload's body is read to the end by http::linger.
    let (study, content_type) = checked?;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        PbsError::TooLarge(format!(
            "the body is over the limit of {limit} bytes (or the upload broke off)"
        ))
    })?;
    if body.is_empty() {
        return Err(PbsError::BadRequest(
            "the body is empty; send the image bytes as the body".into(),
        ));
    }
    let file_id = format!("sha224-i-{}", hex::encode(sha2::Sha224::digest(&body)));
    if study.files.iter().any(|f| f.file_id == file_id) {
        // The reference's answer to a repeated upload is its 201: a client
        // retrying after a lost response sees what the first try got.
        return Ok(Envelope::ok(
            StatusCode::CREATED,
            schema::FileAdded {
                pbs_study_id: study.id,
                file_id,
                duplicate: true,
            },
            started,
        ));
    }
    if study.files.len() >= app.config.pbs.max_files_per_study {
        return Err(PbsError::Conflict(format!(
            "the study already holds {} files, the most allowed",
            app.config.pbs.max_files_per_study
        )));
    }
    // Decode now, so a file the analysis could not read is refused here.
    let (w, h, content_type) = usable_image(&app, &body, content_type).await?;
    let ext = content_type.rsplit('/').next().unwrap_or("bin");
    // One blob per study and content: a refused upload's blob can then be
    // removed without asking whether another study holds the same bytes.
    let blob = format!("pbs/{}-{}.{ext}", study.id, &file_id["sha224-i-".len()..]);
    {
        let (store, blob, data) = (app.store.clone(), blob.clone(), body.clone());
        tokio::task::spawn_blocking(move || store.blobs.put(&blob, &data))
            .await
            .map_err(|e| PbsError::Internal(e.to_string()))??;
    }
    let rec = FileRecord {
        file_id: file_id.clone(),
        file_name: q.file_name.clone(),
        content_type: content_type.into(),
        bytes: body.len(),
        width: w,
        height: h,
        blob: blob.clone(),
        uploaded_at: now_rfc3339(),
    };
    add_file(&app, study.id, rec).await?;
    Ok(Envelope::ok(
        StatusCode::CREATED,
        schema::FileAdded {
            pbs_study_id: study.id,
            file_id,
            duplicate: false,
        },
        started,
    ))
}

/// Add a photo of the smear to a study, posted to the study's own path.
///
/// The same call as `POST /pbs/{id}/files`, with the same query, body,
/// answers and roles: the reference's Go example posts the file to
/// `/pbs/{id}?file_name=...`.
#[utoipa::path(
    post,
    path = "/pbs/{id}",
    operation_id = "pbs_upload_file_at_study",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(
        ("id" = Uuid, Path, description = "The study's `pbs_study_id`."),
        UploadQuery,
    ),
    request_body(
        description = "The image file's bytes, as the whole body.",
        content(
            ("image/jpeg"),
            ("image/png"),
            ("image/tiff"),
            ("image/bmp"),
            ("image/webp"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 201, description = "As `POST /pbs/{id}/files`.",
         body = EnvelopeBody<schema::FileAdded>),
        (status = 400, description = "As `POST /pbs/{id}/files`.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role may not upload files.",
         body = ErrorBody),
        (status = 404, description = "No such study in the caller's organisation.",
         body = ErrorBody),
        (status = 409, description = "As `POST /pbs/{id}/files`.", body = ErrorBody),
        (status = 413, description = "As `POST /pbs/{id}/files`.", body = ErrorBody),
        (status = 503, description = "The appliance's decode memory is in use; try again.",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn upload_file_at_study(
    app: State<Arc<Pbs>>,
    id: Path<String>,
    q: Query<UploadQuery>,
    caller: Caller<access::Upload>,
    body: axum::body::Body,
) -> Res {
    upload_file(app, id, q, caller, body).await
}

/// A hint for a body that is a multipart form rather than the photo's own
/// bytes (the upload takes the raw file, as the cloud API does; `curl -F`
/// is a plausible mistake): empty for anything else.
fn form_hint(body: &[u8]) -> &'static str {
    const PART_HEADER: &[u8] = b"content-disposition";
    let head = &body[..body.len().min(512)];
    let looks_like_form = head.starts_with(b"--")
        && head
            .windows(PART_HEADER.len())
            .any(|w| w.eq_ignore_ascii_case(PART_HEADER));
    if looks_like_form {
        " (the body looks like a multipart form: send the image's own bytes as the body, \
         e.g. curl --data-binary @photo.jpg)"
    } else {
        ""
    }
}

/// Decode `body` (within the decode budget) and check the analysis can
/// use it; its width, height and its type as its bytes say
/// (`declared` when they say nothing more precise).
async fn usable_image(
    app: &Pbs,
    body: &Bytes,
    declared: &'static str,
) -> Result<(u32, u32, &'static str), PbsError> {
    let _reservation = app.decode_budget.reserve(body).await?;
    let limits = crate::imaging::DecodeLimits {
        max_pixels: app.config.limits.max_pixels,
        formats: ["jpeg", "png", "webp", "bmp", "tiff"]
            .map(String::from)
            .to_vec(),
    };
    let data = body.clone();
    let (w, h, format) = tokio::task::spawn_blocking(move || {
        crate::imaging::decode(&data, &limits)
            .map(|d| (d.image.width(), d.image.height(), d.format))
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))?
    .map_err(|e| match e {
        // As the faces family answers it (and the README's limits table):
        // the image is well formed, only too large for `limits.max_pixels`.
        crate::imaging::ImagingError::TooManyPixels { .. } => {
            PbsError::TooLarge(format!("the image is too large to analyse: {e}"))
        }
        e => PbsError::BadRequest(format!(
            "the file is not a usable image: {e}{}",
            form_hint(body)
        )),
    })?;
    // The analysis resamples each photo to the nets' scale, at most by
    // MIN_SCALE; a side that would shrink under 8 px there fails the whole
    // study later, so it is refused now, while the client can still act.
    let min_side = crate::families::pbs::pipeline::min_analysable_side();
    if w.min(h) < min_side {
        return Err(PbsError::BadRequest(format!(
            "the image is {w}x{h} px; a smear photo needs at least {min_side} px on each side \
             to be analysed"
        )));
    }
    // The bytes say what the file is; a mislabelled upload is kept as
    // what it really is.
    let content_type = match crate::imaging::decode::format_name(format) {
        "jpeg" => "image/jpeg",
        "png" => "image/png",
        "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        _ => declared,
    };
    Ok((w, h, content_type))
}

/// Add `rec` (its blob already written) to study `sid`, checking inside
/// the atomic update that the study still takes files; a refused file's
/// blob is removed. Flushed before it returns.
async fn add_file(app: &Pbs, sid: Uuid, rec: FileRecord) -> Result<(), PbsError> {
    let pbs = app.clinic.pbs.clone();
    let max_files = app.config.pbs.max_files_per_study;
    let blob = rec.blob.clone();
    let outcome = blocking(move || {
        pbs.update_study(sid, |s| {
            if s.frozen {
                return Ok(Err(Refused::Frozen));
            }
            if !s.files.iter().any(|f| f.file_id == rec.file_id) {
                // Checked again here, inside the atomic update: parallel
                // uploads all passed the first check on an older record.
                if s.files.len() >= max_files {
                    return Ok(Err(Refused::Full));
                }
                s.files.push(rec.clone());
            }
            Ok(Ok(()))
        })
    })
    .await?;
    if !matches!(outcome, Some(Ok(()))) {
        // Not added: the blob goes, unless the study holds the same bytes
        // from a parallel upload (refused uploads must not fill the disk).
        let (pbs, store) = (app.clinic.pbs.clone(), app.store.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let held = pbs
                .get_study(sid)?
                .is_some_and(|s| s.files.iter().any(|f| f.blob == blob));
            if !held {
                store.blobs.delete(&blob)?;
            }
            Ok::<_, StoreError>(())
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, "could not remove the blob of a refused upload");
        }
    }
    match outcome {
        Some(Ok(())) => {}
        Some(Err(Refused::Frozen)) => {
            return Err(PbsError::Conflict(
                "tasks were requested for this study meanwhile; the file was not added".into(),
            ))
        }
        Some(Err(Refused::Full)) => {
            return Err(PbsError::Conflict(format!(
                "the study already holds {max_files} files, the most allowed"
            )))
        }
        None => return Err(PbsError::NotFound(format!("no PBS study {sid}"))),
    }
    app.store.flush_async().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::form_hint;

    #[test]
    fn a_multipart_body_gets_a_hint_and_other_bytes_none() {
        let form = b"--------------------------a1b2\r\nContent-Disposition: form-data; \
                     name=\"file\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8";
        assert!(form_hint(form).contains("--data-binary"));
        assert_eq!(form_hint(b"\xff\xd8\xff\xe0 not a jpeg"), "");
        assert_eq!(form_hint(b"--just text"), "");
        assert_eq!(form_hint(b""), "");
    }
}
