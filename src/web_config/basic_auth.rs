//! `basic_auth_users`: user names and bcrypt hashes, checked with a short cache of successes
//! and a bound on the bcrypt work a flood of bad passwords can cause.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{WebConfigError, invalid};

/// A successful check is remembered this long after its last use. A user's hash changes
/// only with a new web configuration, which starts with an empty cache.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Most credentials remembered at once; past it the cache starts again.
const CACHE_CAPACITY: usize = 1024;
/// Checks waiting for a bcrypt slot, per slot, before requests are turned away (429).
const WAITING_PER_SLOT: usize = 4;

/// What a request's credentials earn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials match.
    Allowed,
    /// Missing or wrong credentials: 401.
    Denied,
    /// Too many checks are waiting already: 429, try again later.
    Busy,
}

/// The users of `basic_auth_users` and the state of their checks.
#[derive(Debug)]
pub struct BasicAuth {
    /// User name → bcrypt hash.
    users: HashMap<String, Arc<str>>,
    /// Successful checks: a keyed digest of user and password → last use.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    /// Random per configuration, so the cache's digests say nothing outside this process.
    cache_key: [u8; 32],
    /// bcrypt slots: at most half the cores hash at once, so scrapes keep the rest.
    slots: Arc<Semaphore>,
    /// Checks holding or waiting for a slot.
    in_line: Arc<AtomicUsize>,
    /// Checks allowed in line before requests are turned away.
    line_limit: usize,
}

impl BasicAuth {
    /// Users from the file; every hash must be a bcrypt hash.
    pub(super) fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, WebConfigError> {
        let mut checked = HashMap::new();
        for (user, hash) in users {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(invalid(key, "a user name cannot contain `:`"));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|_| {
                invalid(
                    &key,
                    "is not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                )
            })?;
            checked.insert(user, Arc::from(hash));
        }
        let slots = std::thread::available_parallelism()
            .map_or(1, |n| n.get() / 2)
            .max(1);
        let mut cache_key = [0u8; 32];
        cache_key.fill_with(|| fastrand::u8(..));
        Ok(BasicAuth {
            users: checked,
            cache: Mutex::new(HashMap::new()),
            cache_key,
            slots: Arc::new(Semaphore::new(slots)),
            in_line: Arc::new(AtomicUsize::new(0)),
            line_limit: slots * WAITING_PER_SLOT,
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no users (never: an empty map turns basic auth off).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks the `Authorization` header of a request.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Denied;
        };
        let digest = self.digest(&user, &password);
        if self.remembered(&digest) {
            return Verdict::Allowed;
        }
        let hash = self.users.get(&user).cloned();
        let known = hash.is_some();
        let Some(_place) = InLine::join(&self.in_line, self.line_limit) else {
            return Verdict::Busy;
        };
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return Verdict::Busy;
        };
        let matches = tokio::task::spawn_blocking(move || {
            // An unknown user costs a bcrypt check too, so timing does not tell which users
            // exist.
            let hash = hash.unwrap_or_else(unknown_user_hash);
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        if matches && known {
            self.remember(digest);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn remembered(&self, digest: &[u8; 32]) -> bool {
        let mut cache = match self.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        match cache.get_mut(digest) {
            Some(last_use) if last_use.elapsed() < CACHE_FOR => {
                *last_use = Instant::now();
                true
            }
            Some(_) => {
                cache.remove(digest);
                false
            }
            None => false,
        }
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut cache = match self.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, last_use| last_use.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(digest, Instant::now());
    }
}

/// A place in the line of bcrypt checks, given back when dropped.
struct InLine(Arc<AtomicUsize>);

impl InLine {
    fn join(counter: &Arc<AtomicUsize>, limit: usize) -> Option<InLine> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let place = InLine(counter.clone());
        (before < limit).then_some(place)
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// User and password of a `Basic` authorization header.
fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A hash no password is known for, checked for unknown users.
fn unknown_user_hash() -> Arc<str> {
    static HASH: OnceLock<Arc<str>> = OnceLock::new();
    HASH.get_or_init(|| {
        let password: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(32)
            .collect();
        Arc::from(
            bcrypt::hash(password, 10)
                .unwrap_or_else(|_| "$2y$10$invalid".to_string())
                .as_str(),
        )
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new(BTreeMap::from([("prometheus".to_string(), hash)])).unwrap()
    }

    #[tokio::test]
    async fn only_the_right_password_of_a_known_user_is_allowed() {
        let auth = auth();
        assert_eq!(
            auth.check(Some(&header("prometheus", "s3cret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(Some(&header("prometheus", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check(Some(&header("someone", "s3cret"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.check(None).await, Verdict::Denied);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(auth.check(Some(&bearer)).await, Verdict::Denied);
    }

    #[tokio::test]
    async fn a_success_is_remembered_and_a_failure_is_not() {
        let auth = auth();
        assert!(!auth.remembered(&auth.digest("prometheus", "s3cret")));
        auth.check(Some(&header("prometheus", "s3cret"))).await;
        assert!(auth.remembered(&auth.digest("prometheus", "s3cret")));
        auth.check(Some(&header("prometheus", "wrong"))).await;
        assert!(!auth.remembered(&auth.digest("prometheus", "wrong")));
    }

    #[tokio::test]
    async fn a_full_line_turns_checks_away_without_hashing() {
        let auth = auth();
        let places: Vec<InLine> = (0..auth.line_limit)
            .map(|_| InLine::join(&auth.in_line, auth.line_limit).unwrap())
            .collect();
        assert_eq!(
            auth.check(Some(&header("prometheus", "wrong"))).await,
            Verdict::Busy
        );
        drop(places);
        assert_eq!(
            auth.check(Some(&header("prometheus", "wrong"))).await,
            Verdict::Denied
        );
    }

    #[test]
    fn a_hash_that_is_not_bcrypt_names_the_user() {
        let err = BasicAuth::new(BTreeMap::from([("alice".to_string(), "plain".to_string())]))
            .unwrap_err();
        assert!(err.to_string().contains("basic_auth_users.alice"), "{err}");
    }
}
