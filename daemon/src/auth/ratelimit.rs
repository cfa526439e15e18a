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

    /// The gate of a credential check, before any password is verified:
    /// one attempt is taken from the address's and the user name's bucket
    /// (within `scope`, e.g. "admin" or "pbs") together, under one lock, or
    /// neither when either is empty. Parallel guesses therefore count one
    /// by one, and a limited guess costs no argon2 run and cannot succeed.
    /// A successful check gives its attempt back ([`RateLimiter::refund`]).
    pub fn gate(&self, scope: &str, ip: &str, user: &str) -> Result<(), Limited> {
        let (a, b) = Self::login_keys(scope, ip, user);
        let now = Instant::now();
        let cap = self.per_minute as f64;
        let rate = cap / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        Self::prune(&mut map, now, cap, rate);
        let level = |map: &HashMap<String, (f64, Instant)>, k: &str| {
            map.get(k).map_or(cap, |(t, at)| {
                (t + now.saturating_duration_since(*at).as_secs_f64() * rate).min(cap)
            })
        };
        let (ta, tb) = (level(&map, &a), level(&map, &b));
        let low = ta.min(tb);
        if low < 1.0 {
            return Err(Limited {
                retry_after_secs: ((1.0 - low) / rate).ceil().max(1.0) as u64,
                limit: self.per_minute,
            });
        }
        map.insert(a, (ta - 1.0, now));
        map.insert(b, (tb - 1.0, now));
        Ok(())
    }

    /// Give back the attempt [`RateLimiter::gate`] took, after the right
    /// password: only failures count.
    pub fn refund(&self, scope: &str, ip: &str, user: &str) {
        let (a, b) = Self::login_keys(scope, ip, user);
        let cap = self.per_minute as f64;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for k in [a, b] {
            if let Some((t, _)) = map.get_mut(&k) {
                *t = (*t + 1.0).min(cap);
            }
        }
    }

    /// Bucket keys of a login: the user name is hashed, so a long or
    /// made-up name costs the map a fixed size.
    fn login_keys(scope: &str, ip: &str, user: &str) -> (String, String) {
        use sha2::Digest;
        let name = user.trim().to_lowercase();
        let h = sha2::Sha256::digest(name.as_bytes());
        (
            format!("{scope}:ip:{ip}"),
            format!("{scope}:user:{}", hex::encode(&h[..16])),
        )
    }

    /// Forget full (idle) buckets once the map is large.
    fn prune(map: &mut HashMap<String, (f64, Instant)>, now: Instant, cap: f64, rate: f64) {
        if map.len() >= MAX_BUCKETS {
            map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
        }
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
    fn the_gate_takes_from_address_and_user_together_and_refunds_successes() {
        let rl = RateLimiter::new(2);
        rl.gate("admin", "1.2.3.4", "ops").unwrap();
        rl.refund("admin", "1.2.3.4", "ops");
        for _ in 0..2 {
            rl.gate("admin", "1.2.3.4", "ops").unwrap();
        }
        assert!(
            rl.gate("admin", "1.2.3.4", "ops").is_err(),
            "two failures used it up"
        );
        assert!(
            rl.gate("admin", "9.9.9.9", " OPS ").is_err(),
            "the user, from anywhere"
        );
        assert!(
            rl.gate("admin", "1.2.3.4", "other").is_err(),
            "the address, for anyone"
        );
        assert!(
            rl.gate("pbs", "1.2.3.4", "ops").is_ok(),
            "another family's logins"
        );
        assert!(rl.gate("admin", "5.6.7.8", "someone").is_ok());
        // A refused gate took nothing from the other bucket.
        let rl = RateLimiter::new(1);
        rl.gate("admin", "1.1.1.1", "a").unwrap();
        assert!(rl.gate("admin", "1.1.1.1", "b").is_err());
        assert!(
            rl.gate("admin", "2.2.2.2", "b").is_ok(),
            "b was not charged"
        );
    }
}
