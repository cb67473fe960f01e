//! Passwords (argon2id PHC hashes, from the `argon2` crate) and topic permissions.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
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

/// What one principal (or anonymous) may do.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    subscribe: Vec<Selector>,
    publish: Vec<Selector>,
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
        }
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
