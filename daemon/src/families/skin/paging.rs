//! Django REST framework's page-number pagination, which every list of the
//! reference API uses: `?page=` (1-based) and `?page_size=` (default 20,
//! at most 100) → `{count, next, previous, results}`, where `next` and
//! `previous` are the request's own URL with `page` changed (null at the
//! ends). A page past the last (or not a number) is 404 and a page size
//! that is not a positive number means the default, as in DRF.

use uuid::Uuid;

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

/// What a list can be ordered by: a field's value as it sorts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Case-insensitive text (names).
    Text(String),
    /// A number (unix seconds).
    Num(u64),
    /// A time-ordered (v7) id: creation order.
    Id(Uuid),
}

/// A key and whether it sorts descending.
#[derive(PartialEq, Eq)]
struct Directed(Key, bool);

impl Ord for Directed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let o = self.0.cmp(&other.0);
        if self.1 {
            o.reverse()
        } else {
            o
        }
    }
}

impl PartialOrd for Directed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A field's key, and whether the order by it is descending.
type Wanted<T> = (fn(&T) -> Key, bool);

/// One orderable field of a list: its name in `ordering` and its key.
pub type Field<T> = (&'static str, fn(&T) -> Key);

/// DRF's ordering filter: `ordering=field` ascending, `-field` descending,
/// several comma-separated (each breaks the previous one's ties). Names not
/// in `fields` are ignored, as DRF ignores them. Returns false (and leaves
/// `items` alone) when no usable field was named, so the list keeps its
/// default order.
pub fn order<T>(items: &mut [T], ordering: Option<&str>, fields: &[Field<T>]) -> bool {
    let wanted: Vec<Wanted<T>> = ordering
        .unwrap_or("")
        .split(',')
        .filter_map(|f| {
            let f = f.trim();
            let (name, desc) = match f.strip_prefix('-') {
                Some(n) => (n, true),
                None => (f, false),
            };
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, key)| (*key, desc))
        })
        .collect();
    if wanted.is_empty() {
        return false;
    }
    // Each item's keys are made once (names are lowercased copies), not
    // at every comparison; the sort is stable.
    items.sort_by_cached_key(|x| {
        wanted
            .iter()
            .map(|(key, desc)| Directed(key(x), *desc))
            .collect::<Vec<_>>()
    });
    true
}

#[cfg(test)]
mod ordering_tests {
    use super::{order, Field, Key};

    const FIELDS: [Field<(&str, u64)>; 2] = [
        ("name", |x| Key::Text(x.0.to_lowercase())),
        ("creation_time", |x| Key::Num(x.1)),
    ];

    #[test]
    fn orders_as_drf_does() {
        let mut v = vec![("b", 2), ("A", 3), ("c", 1), ("a", 1)];
        assert!(order(&mut v, Some("-creation_time,name"), &FIELDS));
        assert_eq!(v, [("A", 3), ("b", 2), ("a", 1), ("c", 1)]);
        assert!(order(&mut v, Some(" name "), &FIELDS));
        assert_eq!(v[0].0.to_lowercase(), "a");
        // Unknown fields are ignored; none usable leaves the order alone.
        let before = v.clone();
        assert!(!order(&mut v, Some("colour,-"), &FIELDS));
        assert!(!order(&mut v, None, &FIELDS));
        assert_eq!(v, before);
    }
}
