//! Per-client token buckets: `limit` requests per minute, refilled smoothly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Refused: retry after this many whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
    pub limit: u32,
}

/// Buckets kept before full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.per_minute
    }

    pub fn check(&self, client: &str) -> Result<(), Limited> {
        self.check_at(client, Instant::now())
    }

    /// Whether `client` has a token left, without taking it.
    pub fn peek(&self, client: &str) -> Result<(), Limited> {
        self.peek_at(client, Instant::now())
    }

    pub fn peek_at(&self, client: &str, now: Instant) -> Result<(), Limited> {
        let cap = self.per_minute as f64;
        let rate = cap / 60.0;
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some((tokens, at)) = map.get(client) else {
            return Ok(());
        };
        let t = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(cap);
        if t >= 1.0 {
            Ok(())
        } else {
            Err(Limited {
                retry_after_secs: ((1.0 - t) / rate).ceil().max(1.0) as u64,
                limit: self.per_minute,
            })
        }
    }

    /// The gate of a credential check: refused while either the address
    /// or the user name has no attempt left, before any password is
    /// verified (so a limited guess costs no argon2 run and cannot succeed).
    pub fn gate(&self, ip: &str, user: &str) -> Result<(), Limited> {
        self.peek(&format!("ip:{ip}"))?;
        self.peek(&format!("user:{}", user.trim().to_lowercase()))
    }

    /// Count a failed credential check against the address and the user.
    pub fn charge(&self, ip: &str, user: &str) {
        let _ = self.check(&format!("ip:{ip}"));
        let _ = self.check(&format!("user:{}", user.trim().to_lowercase()));
    }

    pub fn check_at(&self, client: &str, now: Instant) -> Result<(), Limited> {
        let cap = self.per_minute as f64;
        let rate = cap / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(client) {
            map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
        }
        let (tokens, at) = map.entry(client.to_string()).or_insert((cap, now));
        let t = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(cap);
        *at = now;
        if t >= 1.0 {
            *tokens = t - 1.0;
            Ok(())
        } else {
            *tokens = t;
            Err(Limited {
                retry_after_secs: ((1.0 - t) / rate).ceil().max(1.0) as u64,
                limit: self.per_minute,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_limit_then_refuses_then_refills() {
        let rl = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check_at("k", t0).unwrap();
        }
        let e = rl.check_at("k", t0).unwrap_err();
        assert_eq!(e.retry_after_secs, 20);
        rl.check_at("other", t0).unwrap();
        rl.check_at("k", t0 + Duration::from_secs(20)).unwrap();
        assert!(rl.check_at("k", t0 + Duration::from_secs(21)).is_err());
    }

    #[test]
    fn peeking_takes_nothing_and_the_gate_covers_address_and_user() {
        let rl = RateLimiter::new(2);
        for _ in 0..5 {
            rl.gate("1.2.3.4", "admin").unwrap();
        }
        rl.charge("1.2.3.4", "admin");
        rl.charge("5.6.7.8", "Admin");
        assert!(
            rl.gate("9.9.9.9", "ADMIN").is_err(),
            "user exhausted from two addresses"
        );
        assert!(rl.gate("1.2.3.4", "other").is_ok(), "address has one left");
        rl.charge("1.2.3.4", "other");
        assert!(rl.gate("1.2.3.4", "third").is_err(), "address exhausted");
    }
}
