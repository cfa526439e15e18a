//! The audit trail (HIPAA 164.312(b) asks clinics to keep one): an
//! append-only log of security events, shared by every family: logins and
//! failed logins, credentials refused, keys, tokens and users created or
//! revoked, studies and reports read, images deleted or erased.
//!
//! One JSON object per line in `state_dir/audit/audit.log`:
//! `{time, family, action, outcome, actor, address, object, detail, prev}`,
//! where `outcome` is `ok`, `denied` or `failed` and `prev` is the
//! SHA-256 (hex) of the line before it (the previous file's last line
//! across a rotation), so a line changed or removed later breaks the chain
//! ([`AuditLog::verify_chain`]). Never a secret: user names, key ids and prefixes,
//! object ids, not passwords or tokens.
//!
//! Files are created owner-only, opened for append, and each line is
//! written whole and synced before the call returns. Past
//! `audit.max_file_bytes` the file rotates to `audit.log.1` (older ones
//! shift up; `audit.keep_files` are kept). Read with
//! `GET /api/v1/admin/audit` or `argusd audit`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::{now_rfc3339, sha256_hex, unix_now};

/// The outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Refused: bad credentials, no permission, rate limited.
    Denied,
    Failed,
}

/// One audit record as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Record {
    pub time: String,
    pub unix: u64,
    pub family: String,
    /// e.g. `login`, `credential_refused`, `key_created`, `report_read`.
    pub action: String,
    pub outcome: Outcome,
    /// Who: a user name, key id or `cli`; None when unknown.
    pub actor: Option<String>,
    /// The client's address; None for the command line.
    pub address: Option<String>,
    /// What it was done to: an id.
    pub object: Option<String>,
    pub detail: Option<String>,
    /// SHA-256 of the previous line ("" for the first ever).
    pub prev: String,
}

/// An event to record (the log adds time and chain).
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub family: &'a str,
    pub action: &'a str,
    pub actor: Option<&'a str>,
    pub address: Option<&'a str>,
    pub object: Option<&'a str>,
    pub detail: Option<&'a str>,
}

struct Current {
    file: File,
    bytes: u64,
    last_hash: String,
}

/// Refused or failed events of one kind from one address written per
/// minute; past it they are counted, and the count is written with the
/// next such event after the minute. Without it a client sending bad keys
/// (2,000 a second, unauthenticated) could push every earlier record out
/// of the rotation in minutes; a person mistyping a password never nears
/// it. Events that succeed are always written.
pub const REPEATS_PER_MINUTE: u32 = 30;

/// Repeats of (family, action, address) in the current minute.
#[derive(Default)]
struct Repeats {
    by_key: std::collections::HashMap<(String, String, String), Window>,
}

struct Window {
    minute: u64,
    written: u32,
    /// Counted, not written, in `since`'s minute and any after it.
    suppressed: u64,
    since: u64,
}

/// What to do with one refused event.
#[derive(Debug, PartialEq)]
enum Admit {
    Write,
    /// The last one written this minute: say that more are counted.
    WriteLast,
    /// A new minute after suppressed ones: write their count first.
    WriteAfter {
        suppressed: u64,
        since: u64,
    },
    Count,
}

impl Repeats {
    fn admit(&mut self, key: (String, String, String), now: u64) -> Admit {
        let minute = now / 60;
        if self.by_key.len() > 10_000 {
            // Bounded memory: forget windows of past minutes.
            self.by_key
                .retain(|_, w| w.minute + 1 >= minute || w.suppressed > 0 && w.minute == minute);
        }
        let w = self.by_key.entry(key).or_insert(Window {
            minute,
            written: 0,
            suppressed: 0,
            since: now,
        });
        let mut after = None;
        if w.minute != minute {
            if w.suppressed > 0 {
                after = Some((w.suppressed, w.since));
            }
            *w = Window {
                minute,
                written: 0,
                suppressed: 0,
                since: now,
            };
        }
        if w.written >= REPEATS_PER_MINUTE {
            if w.suppressed == 0 {
                w.since = now;
            }
            w.suppressed += 1;
            return Admit::Count;
        }
        w.written += 1;
        match after {
            Some((suppressed, since)) => Admit::WriteAfter { suppressed, since },
            None if w.written == REPEATS_PER_MINUTE => Admit::WriteLast,
            None => Admit::Write,
        }
    }
}

/// The appliance's audit log.
pub struct AuditLog {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    current: Mutex<Option<Current>>,
    repeats: Mutex<Repeats>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::store::perms::FILE_MODE)
        .open(path)
}

/// The hash of a file's last line, or None when it has none.
fn last_line_hash(path: &Path) -> Option<String> {
    let f = File::open(path).ok()?;
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .last()
        .map(|l| sha256_hex(l.as_bytes()))
}

impl AuditLog {
    /// The log in `state_dir/audit` (created owner-only at the first record).
    pub fn new(state_dir: &Path, max_bytes: u64, keep: usize) -> Self {
        Self {
            dir: state_dir.join("audit"),
            max_bytes: max_bytes.max(4096),
            keep: keep.max(1),
            current: Mutex::new(None),
            repeats: Mutex::new(Repeats::default()),
        }
    }

    fn path(&self, n: usize) -> PathBuf {
        if n == 0 {
            self.dir.join("audit.log")
        } else {
            self.dir.join(format!("audit.log.{n}"))
        }
    }

    fn rotate(&self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.path(self.keep));
        for n in (0..self.keep).rev() {
            let from = self.path(n);
            if from.exists() {
                std::fs::rename(&from, self.path(n + 1))?;
            }
        }
        Ok(())
    }

    fn current<'a>(&self, slot: &'a mut Option<Current>) -> std::io::Result<&'a mut Current> {
        if slot.is_none() {
            crate::store::perms::create_dir(&self.dir)?;
            let path = self.path(0);
            let last_hash = last_line_hash(&path)
                .or_else(|| last_line_hash(&self.path(1)))
                .unwrap_or_default();
            let file = open_append(&path)?;
            let bytes = file.metadata()?.len();
            *slot = Some(Current {
                file,
                bytes,
                last_hash,
            });
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// Append `ev` with `outcome`. A failure to write is logged, never
    /// fails the request it describes.
    /// Refused and failed events beyond [`REPEATS_PER_MINUTE`] of a kind
    /// from one address are counted, not written; the count is written as
    /// a `repeats_not_written` record (its `detail` says how many, since
    /// when) before the next such event after that minute.
    pub fn record(&self, ev: Event<'_>, outcome: Outcome) {
        let mut summary = None;
        if outcome != Outcome::Ok {
            let key = (
                ev.family.to_string(),
                ev.action.to_string(),
                ev.address.unwrap_or_default().to_string(),
            );
            let admit = self
                .repeats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(key, unix_now());
            match admit {
                Admit::Count => return,
                Admit::Write => {}
                Admit::WriteLast => {
                    summary = Some(format!(
                        "{REPEATS_PER_MINUTE} {} events from this address this minute; further \
                         ones this minute are counted, not written",
                        ev.action
                    ));
                }
                Admit::WriteAfter { suppressed, since } => {
                    let detail = format!(
                        "{suppressed} more {} events from this address were counted, not \
                         written, from unix time {since}",
                        ev.action
                    );
                    let note = Event {
                        action: "repeats_not_written",
                        detail: Some(&detail),
                        object: Some(ev.action),
                        ..ev.clone()
                    };
                    self.write(&note, outcome);
                }
            }
        }
        self.write(&ev, outcome);
        if let Some(detail) = summary {
            let note = Event {
                action: "repeats_not_written",
                detail: Some(&detail),
                object: Some(ev.action),
                ..ev
            };
            self.write(&note, outcome);
        }
    }

    fn write(&self, ev: &Event<'_>, outcome: Outcome) {
        if let Err(e) = self.try_record(ev, outcome) {
            tracing::error!(action = ev.action, error = %e, "writing the audit log failed");
        }
    }

    fn try_record(&self, ev: &Event<'_>, outcome: Outcome) -> std::io::Result<()> {
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| c.bytes >= self.max_bytes) {
            let last = slot.take().map(|c| c.last_hash).unwrap_or_default();
            self.rotate()?;
            let file = open_append(&self.path(0))?;
            *slot = Some(Current {
                file,
                bytes: 0,
                last_hash: last,
            });
        }
        let cur = self.current(&mut slot)?;
        let s = |v: Option<&str>| v.map(|x| x.chars().take(512).collect::<String>());
        let rec = Record {
            time: now_rfc3339(),
            unix: unix_now(),
            family: ev.family.to_string(),
            action: ev.action.to_string(),
            outcome,
            actor: s(ev.actor),
            address: s(ev.address),
            object: s(ev.object),
            detail: s(ev.detail),
            prev: cur.last_hash.clone(),
        };
        let line = serde_json::to_string(&rec).map_err(std::io::Error::other)?;
        let mut buf = line.clone().into_bytes();
        buf.push(b'\n');
        cur.file.write_all(&buf)?;
        cur.file.sync_data()?;
        cur.bytes += buf.len() as u64;
        cur.last_hash = sha256_hex(line.as_bytes());
        Ok(())
    }

    /// Records, oldest first, from the kept files: those at or after
    /// `since` (unix seconds), of `action` when given, the last `limit`.
    pub fn read(
        &self,
        since: u64,
        action: Option<&str>,
        limit: usize,
    ) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for n in (0..=self.keep).rev() {
            let Ok(f) = File::open(self.path(n)) else {
                continue;
            };
            for line in BufReader::new(f).lines() {
                let line = line?;
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    if r.unix >= since && action.is_none_or(|a| r.action == a) {
                        out.push(r);
                    }
                }
            }
        }
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    /// Check the hash chain over the kept files: Ok(lines checked), or the
    /// file and line number where it breaks.
    pub fn verify_chain(&self) -> Result<usize, String> {
        let mut prev: Option<String> = None;
        let mut n = 0;
        for i in (0..=self.keep).rev() {
            let path = self.path(i);
            let Ok(f) = File::open(&path) else {
                continue;
            };
            for (k, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| e.to_string())?;
                let r: Record = serde_json::from_str(&line)
                    .map_err(|e| format!("{}:{}: not a record: {e}", path.display(), k + 1))?;
                // The oldest kept line's predecessor may have been rotated away.
                if prev.as_ref().is_some_and(|p| *p != r.prev) {
                    return Err(format!(
                        "{}:{}: the chain breaks here",
                        path.display(),
                        k + 1
                    ));
                }
                prev = Some(sha256_hex(line.as_bytes()));
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(action: &'a str, actor: &'a str) -> Event<'a> {
        Event {
            family: "test",
            action,
            actor: Some(actor),
            address: Some("127.0.0.1"),
            ..Default::default()
        }
    }

    #[test]
    fn refused_repeats_are_counted_past_the_minutes_share() {
        let mut r = Repeats::default();
        let key = || {
            (
                "faces".to_string(),
                "credential_refused".to_string(),
                "10.0.0.9".to_string(),
            )
        };
        let t0 = 60 * 1000;
        let got: Vec<Admit> = (0..REPEATS_PER_MINUTE + 5)
            .map(|i| r.admit(key(), t0 + u64::from(i) % 60))
            .collect();
        assert!(got[..REPEATS_PER_MINUTE as usize - 1]
            .iter()
            .all(|a| *a == Admit::Write));
        assert_eq!(got[REPEATS_PER_MINUTE as usize - 1], Admit::WriteLast);
        assert!(got[REPEATS_PER_MINUTE as usize..]
            .iter()
            .all(|a| *a == Admit::Count));
        // Another address is its own count.
        let other = (
            "faces".into(),
            "credential_refused".into(),
            "10.0.0.8".into(),
        );
        assert_eq!(r.admit(other, t0 + 1), Admit::Write);
        // The next minute: the count first, then writing again.
        match r.admit(key(), t0 + 61) {
            Admit::WriteAfter {
                suppressed: 5,
                since,
            } => assert!(since >= t0),
            a => panic!("{a:?}"),
        }
        assert_eq!(r.admit(key(), t0 + 62), Admit::Write);
    }

    #[test]
    fn a_flood_of_refusals_writes_a_bounded_number_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), 1 << 20, 3);
        for i in 0..1000 {
            log.record(ev("credential_refused", &format!("k{i}")), Outcome::Denied);
        }
        // Successes are never held back.
        for i in 0..50 {
            log.record(ev("login", &format!("user{i}")), Outcome::Ok);
        }
        let all = log.read(0, None, 10_000).unwrap();
        let refused = all
            .iter()
            .filter(|r| r.action == "credential_refused")
            .count();
        // Within one minute: the share and one note; across a minute's
        // edge, at most twice that and the count.
        assert!(
            (REPEATS_PER_MINUTE as usize..=2 * REPEATS_PER_MINUTE as usize).contains(&refused),
            "{refused}"
        );
        assert!(all.iter().any(|r| r.action == "repeats_not_written"));
        assert_eq!(all.iter().filter(|r| r.action == "login").count(), 50);
        assert!(log.verify_chain().is_ok());
    }

    #[test]
    fn appends_rotates_and_chains_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), 4096, 3);
        for i in 0..60 {
            log.record(ev("login", &format!("user{i}")), Outcome::Ok);
        }
        drop(log);
        // A new process continues the chain.
        let log = AuditLog::new(dir.path(), 4096, 3);
        log.record(ev("logout", "user60"), Outcome::Denied);
        assert!(dir.path().join("audit/audit.log.1").exists(), "rotated");
        assert!(
            !dir.path().join("audit/audit.log.4").exists(),
            "only `keep` files are kept"
        );
        let n = log.verify_chain().unwrap();
        let all = log.read(0, None, usize::MAX).unwrap();
        assert_eq!(n, all.len());
        assert_eq!(all.last().unwrap().action, "logout");
        assert_eq!(log.read(0, Some("logout"), 10).unwrap().len(), 1);
        assert_eq!(log.read(0, None, 5).unwrap().len(), 5);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("audit/audit.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
        // An edited line breaks the chain.
        let p = dir.path().join("audit/audit.log.1");
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text.replacen("\"ok\"", "\"denied\"", 1);
        assert_ne!(edited, text);
        std::fs::write(&p, edited).unwrap();
        assert!(log.verify_chain().is_err());
    }
}
