//! Django REST framework's page-number pagination, which every list of the
//! reference API uses: `?page=` (1-based) and `?page_size=` (default 20,
//! at most 100) → `{count, next, previous, results}`, where `next` and
//! `previous` are the request's own URL with `page` changed (null at the
//! ends). A page past the last (or not a number) is 404 and a page size
//! that is not a positive number means the default, as in DRF.

use super::error::{SkinError, SkinResult};
use super::views::Page;
use axum::http::request::Parts;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

fn link(origin: &str, parts: &Parts, page: u64) -> String {
    let mut q: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "page")
                .collect()
        })
        .unwrap_or_default();
    q.push(("page".into(), page.to_string()));
    let qs = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q)
        .finish();
    format!("{origin}{}?{qs}", parts.uri.path())
}

/// Page `page` of `items`; `origin` is `scheme://host` of the appliance
/// as the client reached it.
pub fn page<T>(
    origin: &str,
    parts: &Parts,
    items: Vec<T>,
    page: Option<&str>,
    size: Option<&str>,
) -> SkinResult<Page<T>> {
    // As DRF: a page size that is not a positive number means the default.
    let size = size
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .min(MAX_PAGE_SIZE);
    let count = items.len() as u64;
    let last = count.div_ceil(size).max(1);
    let page = match page.map(str::trim) {
        None => 1,
        Some("last") => last,
        Some(p) => p.parse::<u64>().unwrap_or(0),
    };
    if page == 0 || page > last {
        return Err(SkinError::NotFound("Invalid page.".into()));
    }
    let results: Vec<T> = items
        .into_iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .collect();
    Ok(Page {
        count,
        next: (page < last).then(|| link(origin, parts, page + 1)),
        previous: (page > 1).then(|| link(origin, parts, page - 1)),
        results,
    })
}
