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

/// Refused or failed events of one kind from one address (an IPv6
/// client's /64) written per minute; past it they are counted, and the
/// count is written as a `repeats_not_written` record once the minute is
/// over. Without it a client sending bad keys (2,000 a second,
/// unauthenticated) could push every earlier record out of the rotation
/// in minutes; a person mistyping a password never nears it. Events that
/// succeed are always written.
pub const REPEATS_PER_MINUTE: u32 = 30;
/// The same for one kind of event from all addresses together, against a
/// flood from many addresses.
pub const KIND_PER_MINUTE: u32 = 300;
/// Distinct actors (user names, key ids) a count names.
const ACTORS_NAMED: usize = 10;
/// Addresses followed at once; past it new ones share one count.
const ADDRESSES_FOLLOWED: usize = 10_000;

type Key = (String, String, String);

/// Refused events per (family, action, address) in the current minute.
#[derive(Default)]
struct Repeats {
    minute: u64,
    by_key: std::collections::HashMap<Key, Window>,
    by_kind: std::collections::HashMap<(String, String), u32>,
}

#[derive(Default)]
struct Window {
    written: u32,
    /// Counted, not written.
    counted: u64,
    /// Distinct actors of the counted ones, at most [`ACTORS_NAMED`].
    actors: Vec<String>,
    more_actors: bool,
}

/// What was counted, not written, in a minute that is over.
struct Counted {
    family: String,
    action: String,
    address: String,
    minute: u64,
    counted: u64,
    actors: Vec<String>,
    more_actors: bool,
}

/// The part of an address that names a client: the whole IPv4 address,
/// an IPv6 address's /64 (a single client may hold all of it).
fn client_prefix(address: &str) -> String {
    match address.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => address.to_string(),
    }
}

impl Repeats {
    /// Whether to write a refused event now (`true`) or only count it, and
    /// the counts of the minute that is over, to write first.
    fn admit(
        &mut self,
        family: &str,
        action: &str,
        address: &str,
        actor: Option<&str>,
        now: u64,
    ) -> (bool, Vec<Counted>) {
        let minute = now / 60;
        let mut over = Vec::new();
        if minute != self.minute {
            let past = self.minute;
            over = std::mem::take(&mut self.by_key)
                .into_iter()
                .filter(|(_, w)| w.counted > 0)
                .map(|((family, action, address), w)| Counted {
                    family,
                    action,
                    address,
                    minute: past,
                    counted: w.counted,
                    actors: w.actors,
                    more_actors: w.more_actors,
                })
                .collect();
            over.sort_by(|a, b| {
                (&a.family, &a.action, &a.address).cmp(&(&b.family, &b.action, &b.address))
            });
            self.by_kind.clear();
            self.minute = minute;
        }
        let key_of = |address: &str| (family.to_string(), action.to_string(), address.to_string());
        let mut key = key_of(&client_prefix(address));
        if self.by_key.len() >= ADDRESSES_FOLLOWED && !self.by_key.contains_key(&key) {
            key = key_of("(other addresses)");
        }
        let kind = self
            .by_kind
            .entry((family.to_string(), action.to_string()))
            .or_default();
        let w = self.by_key.entry(key).or_default();
        if w.written < REPEATS_PER_MINUTE && *kind < KIND_PER_MINUTE {
            w.written += 1;
            *kind += 1;
            return (true, over);
        }
        w.counted += 1;
        if let Some(a) = actor {
            if !w.actors.iter().any(|x| x == a) {
                if w.actors.len() < ACTORS_NAMED {
                    w.actors.push(a.chars().take(128).collect());
                } else {
                    w.more_actors = true;
                }
            }
        }
        (false, over)
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
    ///
    /// Refused and failed events beyond [`REPEATS_PER_MINUTE`] of a kind
    /// from one address, or [`KIND_PER_MINUTE`] from all, are counted, not
    /// written. Once their minute is over (at the next refused event of
    /// any kind) each count is written as a `repeats_not_written` record:
    /// `object` the action, `address` the client, `detail` how many, in
    /// which minute, and which actors (user names, key ids) they named.
    /// Counts of the minute the daemon stops in are lost.
    pub fn record(&self, ev: Event<'_>, outcome: Outcome) {
        if outcome != Outcome::Ok {
            let (write, over) = self
                .repeats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(
                    ev.family,
                    ev.action,
                    ev.address.unwrap_or_default(),
                    ev.actor,
                    unix_now(),
                );
            for c in over {
                self.write_count(&c);
            }
            if !write {
                return;
            }
        }
        self.write(&ev, outcome);
    }

    fn write_count(&self, c: &Counted) {
        let mut actors = c.actors.join(", ");
        if c.more_actors {
            actors.push_str(", and others");
        }
        let named = if actors.is_empty() {
            String::new()
        } else {
            format!("; actors: {actors}")
        };
        let detail = format!(
            "{} more {} events counted, not written, in the minute from unix time {}{named}",
            c.counted,
            c.action,
            c.minute * 60
        );
        let note = Event {
            family: &c.family,
            action: "repeats_not_written",
            actor: None,
            address: Some(&c.address),
            object: Some(&c.action),
            detail: Some(&detail),
        };
        self.write(&note, Outcome::Denied);
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
        let t0 = 60 * 1000;
        let n = REPEATS_PER_MINUTE as usize;
        let kind = ("faces", "credential_refused");
        let got: Vec<bool> = (0..n + 5)
            .map(|i| {
                let actor = format!("k{}", i % 3);
                let at = t0 + i as u64 % 60;
                r.admit(kind.0, kind.1, "10.0.0.9", Some(&actor), at).0
            })
            .collect();
        assert!(got[..n].iter().all(|w| *w) && got[n..].iter().all(|w| !*w));
        // Another address is its own count; an IPv6 client is its /64.
        assert!(r.admit(kind.0, kind.1, "10.0.0.8", None, t0 + 1).0);
        for i in 0..n {
            let a = format!("2001:db8:1:2::{i:x}");
            assert!(r.admit(kind.0, kind.1, &a, None, t0 + 2).0);
        }
        assert!(
            !r.admit(kind.0, kind.1, "2001:db8:1:2::ffff", None, t0 + 2)
                .0
        );
        // The next minute: the counts of the last, then writing again.
        let (write, over) = r.admit(kind.0, kind.1, "10.0.0.9", None, t0 + 61);
        assert!(write);
        assert_eq!(over.len(), 2, "the IPv4 client and the /64");
        let c = over.iter().find(|c| c.address == "10.0.0.9").unwrap();
        assert_eq!((c.counted, c.actors.len(), c.minute), (5, 3, t0 / 60));
        assert!(over
            .iter()
            .any(|c| c.address == "2001:db8:1:2::/64" && c.counted == 1));
    }

    #[test]
    fn many_addresses_together_are_bounded_too() {
        let mut r = Repeats::default();
        let written = (0..2000)
            .filter(|i| {
                let a = format!("10.1.{}.{}", i / 250, i % 250);
                r.admit("pbs", "credential_refused", &a, None, 600).0
            })
            .count();
        assert_eq!(written, KIND_PER_MINUTE as usize);
        // Another kind of event is not held back by this one.
        assert!(r.admit("pbs", "login", "10.9.9.9", None, 600).0);
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
        // The count is written once the minute is over, at the next
        // refused event.
        log.repeats.lock().unwrap().minute -= 1;
        log.record(ev("credential_refused", "late"), Outcome::Denied);
        let all = log.read(0, None, 10_000).unwrap();
        let refused = all
            .iter()
            .filter(|r| r.action == "credential_refused")
            .count();
        // Within one minute: the share and "late"; across a minute's edge,
        // at most twice the share and "late".
        let share = REPEATS_PER_MINUTE as usize;
        assert!((share + 1..=2 * share + 1).contains(&refused), "{refused}");
        let notes: Vec<&Record> = all
            .iter()
            .filter(|r| r.action == "repeats_not_written")
            .collect();
        assert!(!notes.is_empty());
        assert!(notes.iter().all(|r| r.actor.is_none()));
        let counted: usize = notes
            .iter()
            .map(|r| {
                let d = r.detail.as_deref().unwrap();
                d.split(' ').next().unwrap().parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(counted + refused, 1001, "each refusal written or counted");
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
