//! Passwords (argon2id PHC hashes, from the `argon2` crate) and topic permissions.

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tether_protocol::Selector;

/// Hashes a password for the configuration file (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    match Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(hash) => hash.to_string(),
        // Only reachable with invalid argon2 parameters, and the defaults are valid.
        Err(e) => unreachable!("argon2 with default parameters failed: {e}"),
    }
}

/// A hash no password matches in practice (a random one's), checked for unknown principals
/// so that they cost what a wrong password costs. Made once.
pub(crate) fn unknown_principal_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        hash_password(&hex::encode(secret))
    })
}

/// Checks that `hash` is a PHC string argon2 can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash).map(|_| ()).map_err(|e| {
        format!("not a password hash ({e}); generate one with `tether-server hash-password`")
    })
}

/// Verifies a password; slow on purpose (run it off the async workers).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Runs password checks on the blocking pool, a bounded number at once; the others wait their
/// turn. argon2id takes about 19 MiB and 28 ms of a core per check: unbounded, a login storm
/// ran hundreds at once and the server was killed for memory.
pub(crate) struct PasswordChecks {
    turns: std::sync::Arc<tokio::sync::Semaphore>,
}

impl PasswordChecks {
    /// At most `at_once` checks at a time (at least one).
    pub(crate) fn new(at_once: usize) -> Self {
        PasswordChecks {
            turns: std::sync::Arc::new(tokio::sync::Semaphore::new(at_once.max(1))),
        }
    }

    /// One check per core.
    pub(crate) fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    }

    /// Runs `check` when its turn comes. The turn goes with the check: an open abandoned
    /// meanwhile keeps it until its check ends.
    pub(crate) async fn run<F>(&self, check: F) -> bool
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let Ok(turn) = self.turns.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let ok = check();
            drop(turn);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// Verifies signed tokens (JWT): signature, expiry, and issuer and audience when configured;
/// the principal is the token's `sub`, its permissions the `subscribe` and `publish` claims.
/// Verification costs microseconds (no password hashing), so fleets can log in thousands of
/// sessions at once.
pub struct TokenVerifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

/// The claims a token carries.
#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// From the configuration; the error names the field.
    pub fn new(
        config: &crate::config::TokensConfig,
    ) -> Result<TokenVerifier, (&'static str, String)> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let algorithm = match config.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err((
                    "algorithm",
                    format!("{other:?} is not one of HS256, RS256, ES256"),
                ));
            }
        };
        let key = match algorithm {
            Algorithm::HS256 => {
                let secret = config
                    .secret
                    .as_deref()
                    .filter(|s| s.len() >= 32)
                    .ok_or(("secret", "HS256 needs a secret of at least 32 bytes".into()))?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            _ => {
                let path = config.public_key.as_ref().ok_or((
                    "public_key",
                    format!("{} needs a public key file", config.algorithm),
                ))?;
                let pem = std::fs::read(path)
                    .map_err(|e| ("public_key", format!("cannot read {}: {e}", path.display())))?;
                let key = if algorithm == Algorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                };
                key.map_err(|e| ("public_key", format!("not a usable PEM key: {e}")))?
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(TokenVerifier { key, validation })
    }

    /// The principal and its permissions, or why the token is refused (never echoing it).
    pub fn verify(&self, token: &str) -> Result<(String, Permissions), String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("token refused: {}", describe(e.kind())))?;
        let claims = data.claims;
        for s in claims.subscribe.iter().chain(&claims.publish) {
            Selector::parse(s).map_err(|e| format!("token refused: bad permission {s:?}: {e}"))?;
        }
        if claims.sub.is_empty() {
            return Err("token refused: empty subject".into());
        }
        Ok((
            claims.sub,
            Permissions::granted_by_token(&claims.subscribe, &claims.publish),
        ))
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired",
        K::InvalidSignature => "bad signature",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::ImmatureSignature => "not valid yet",
        K::InvalidAlgorithm => "wrong algorithm",
        K::MissingRequiredClaim(_) => "a required claim is missing",
        _ => "malformed",
    }
}

/// What one principal (or anonymous) may do.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    subscribe: Vec<Selector>,
    publish: Vec<Selector>,
    /// Granted by a signed token (kept with the session, since no configuration names
    /// them): the selector texts.
    token_grant: Option<(Vec<String>, Vec<String>)>,
}

impl Permissions {
    /// From validated selector lists (invalid entries are skipped; validation happens earlier).
    pub fn new(subscribe: &[String], publish: &[String]) -> Permissions {
        let parse = |list: &[String]| {
            list.iter()
                .filter_map(|s| Selector::parse(s).ok())
                .collect()
        };
        Permissions {
            subscribe: parse(subscribe),
            publish: parse(publish),
            token_grant: None,
        }
    }

    /// Permissions a signed token granted (they travel with the session: across nodes of a
    /// cluster and restarts).
    pub fn granted_by_token(subscribe: &[String], publish: &[String]) -> Permissions {
        Permissions {
            token_grant: Some((subscribe.to_vec(), publish.to_vec())),
            ..Permissions::new(subscribe, publish)
        }
    }

    /// The selectors a token granted (subscribe, publish), if a token granted these.
    pub fn token_grant(&self) -> Option<&(Vec<String>, Vec<String>)> {
        self.token_grant.as_ref()
    }

    /// Whether a subscription with this selector is allowed: one permission must cover it.
    pub fn may_subscribe(&self, selector: &Selector) -> bool {
        self.subscribe.iter().any(|p| p.covers(selector))
    }

    /// Whether the topic's values may be delivered (a second check at delivery time).
    pub fn may_read(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    /// Whether publishing on `topic` is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen checks with room for two: all run, never more than two at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_run_a_bounded_number_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let checks = Arc::new(PasswordChecks::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (checks, running, peak) = (checks.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        true
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.expect("task"), "every check ran");
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "at most two at once, saw {peak}");
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let h1 = hash_password("secret");
        let h2 = hash_password("secret");
        assert_ne!(h1, h2);
        assert!(verify_password(&h1, "secret"));
        assert!(!verify_password(&h1, "Secret"));
        assert!(!verify_password("garbage", "secret"));
        assert!(check_hash(&h1).is_ok());
        assert!(check_hash("password").is_err());
    }

    #[test]
    fn permissions_check_coverage() {
        let p = Permissions::new(&["public/**".into()], &["public/chat".into()]);
        assert!(p.may_subscribe(&Selector::parse("public/a/b").expect("valid")));
        assert!(!p.may_subscribe(&Selector::parse("**").expect("valid")));
        assert!(p.may_publish("public/chat"));
        assert!(!p.may_publish("public/other"));
        assert!(p.may_read("public/x"));
        assert!(!p.may_read("secret/x"));
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&crate::config::TokensConfig {
            algorithm: "HS256".into(),
            secret: Some(SECRET.into()),
            leeway_s: 0,
            ..Default::default()
        })
        .expect("verifier")
    }

    fn token(exp_from_now: i64, secret: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let claims = serde_json::json!({
            "sub": "device-7",
            "exp": now + exp_from_now,
            "subscribe": ["sensors/**"],
            "publish": ["sensors/device-7/*"],
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_permissions() {
        let (who, perms) = verifier().verify(&token(60, SECRET)).expect("valid");
        assert_eq!(who, "device-7");
        assert!(perms.may_publish("sensors/device-7/t"));
        assert!(!perms.may_publish("sensors/device-8/t"));
        assert!(perms.may_read("sensors/a/b"));
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused_with_a_reason() {
        let v = verifier();
        assert!(
            v.verify(&token(-60, SECRET))
                .expect_err("expired")
                .contains("expired")
        );
        let forged = token(60, "another secret, also 32 bytes long!!");
        assert!(
            v.verify(&forged)
                .expect_err("forged")
                .contains("bad signature")
        );
        assert!(
            v.verify("not.a.token")
                .expect_err("garbage")
                .contains("malformed")
        );
    }

    #[test]
    fn a_short_secret_or_an_unknown_algorithm_is_a_configuration_error() {
        let short = TokenVerifier::new(&crate::config::TokensConfig {
            algorithm: "HS256".into(),
            secret: Some("short".into()),
            ..Default::default()
        });
        assert_eq!(short.err().map(|e| e.0), Some("secret"));
        let unknown = TokenVerifier::new(&crate::config::TokensConfig {
            algorithm: "none".into(),
            ..Default::default()
        });
        assert_eq!(unknown.err().map(|e| e.0), Some("algorithm"));
    }
}
