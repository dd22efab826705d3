//! Verified credentials, remembered for a short while, so that a client that logs
//! in again and again (a phone reconnecting every minute, a probe, a drill's
//! observers) does not cost a full argon2 verification each time.
//!
//! An entry is an HMAC, under a key drawn at random when the process starts and
//! never stored, of the account's stored password hash (its PHC string) and the
//! password that matched it. A login whose HMAC is present and fresh is accepted
//! without hashing. Because the stored hash is part of the key:
//! - a password change (on any site: the store is replicated) or the account's
//!   removal changes or removes the stored hash, and the old entry never matches
//!   again, at once, with no invalidation message;
//! - failures are never remembered: only a check that matched adds an entry.
//!
//! Entries live [`CREDENTIAL_CACHE_TTL`] and at most [`CREDENTIAL_CACHE_ENTRIES_MAX`]
//! are kept (the oldest goes first). The HMAC is fast to compute: whoever can read
//! this process's memory could try passwords against it far faster than against
//! argon2; the stored hashes themselves stay argon2.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a verified credential is remembered.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(300);
/// Most credentials remembered at once.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 10_000;

type Fingerprint = [u8; 32];

struct Cache {
    key: ring::hmac::Key,
    /// Fingerprint → when it was verified.
    verified: HashMap<Fingerprint, Instant>,
    /// When each entry was added, oldest first, for eviction.
    order: BTreeMap<(Instant, u64), Fingerprint>,
    seq: u64,
}

impl Cache {
    fn new() -> Cache {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Cache {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            verified: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    fn fingerprint(&self, phc: &str, password: &str) -> Fingerprint {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        // Length-prefixed, so no (hash, password) pair collides with another.
        ctx.update(&(phc.len() as u64).to_be_bytes());
        ctx.update(phc.as_bytes());
        ctx.update(password.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn contains(&mut self, phc: &str, password: &str, now: Instant) -> bool {
        let fp = self.fingerprint(phc, password);
        match self.verified.get(&fp) {
            Some(at) if now.duration_since(*at) < CREDENTIAL_CACHE_TTL => true,
            Some(_) => {
                self.verified.remove(&fp);
                false
            }
            None => false,
        }
    }

    fn insert(&mut self, phc: &str, password: &str, now: Instant) {
        let fp = self.fingerprint(phc, password);
        if self.verified.get(&fp).is_some_and(|at| now.duration_since(*at) < CREDENTIAL_CACHE_TTL) {
            // Still fresh: it expires a TTL after its first verification, so the
            // order list never holds more than one live entry per credential.
            return;
        }
        // Expired entries first, then the oldest, until there is room.
        while let Some(entry) = self.order.first_entry() {
            let ((at, _), old) = (*entry.key(), *entry.get());
            let expired = now.duration_since(at) >= CREDENTIAL_CACHE_TTL;
            if !expired && self.verified.len() < CREDENTIAL_CACHE_ENTRIES_MAX {
                break;
            }
            entry.remove();
            if self.verified.get(&old) == Some(&at) {
                self.verified.remove(&old);
            }
        }
        self.seq += 1;
        self.order.insert((now, self.seq), fp);
        self.verified.insert(fp, now);
        debug_assert!(self.verified.len() <= CREDENTIAL_CACHE_ENTRIES_MAX);
    }
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Cache::new()))
}

/// Whether `password` was verified against the stored hash `phc` within the TTL.
pub fn recently_verified(phc: &str, password: &str) -> bool {
    cache().lock().unwrap_or_else(|p| p.into_inner()).contains(phc, password, Instant::now())
}

/// Remember that `password` matched the stored hash `phc` (call only after a match).
pub fn remember_verified(phc: &str, password: &str) {
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(phc, password, Instant::now());
}

/// How many credentials are remembered now (for tests and metrics).
pub fn remembered() -> usize {
    cache().lock().unwrap_or_else(|p| p.into_inner()).verified.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_is_remembered_only_for_its_stored_hash_and_password_until_the_ttl() {
        let mut c = Cache::new();
        let t0 = Instant::now();
        assert!(!c.contains("$argon2id$a", "pw", t0));
        c.insert("$argon2id$a", "pw", t0);
        assert!(c.contains("$argon2id$a", "pw", t0 + Duration::from_secs(1)));
        // Another password, or the same password after a change of the stored hash.
        assert!(!c.contains("$argon2id$a", "pw2", t0));
        assert!(!c.contains("$argon2id$b", "pw", t0));
        // Not after the TTL; and the expired entry is gone.
        assert!(!c.contains("$argon2id$a", "pw", t0 + CREDENTIAL_CACHE_TTL));
        assert!(c.verified.is_empty());
    }

    #[test]
    fn the_cache_holds_at_most_its_limit_and_evicts_the_oldest() {
        let mut c = Cache::new();
        let t0 = Instant::now();
        for i in 0..=CREDENTIAL_CACHE_ENTRIES_MAX {
            c.insert("$argon2id$x", &format!("pw{i}"), t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(c.verified.len(), CREDENTIAL_CACHE_ENTRIES_MAX);
        let later = t0 + Duration::from_secs(1);
        assert!(!c.contains("$argon2id$x", "pw0", later), "the oldest went first");
        assert!(c.contains("$argon2id$x", "pw1", later));
        assert!(c.contains("$argon2id$x", &format!("pw{CREDENTIAL_CACHE_ENTRIES_MAX}"), later));
    }
}
