//! Crash points for tests: `TETHER_FAILPOINT=<name>` makes the process abort (as `kill -9`
//! would end it) when it reaches the named point. Names: `before_append` and `after_append`
//! (a session's publish, around its append to the shared log).

use std::sync::OnceLock;

/// Aborts the process if `TETHER_FAILPOINT` names this point.
pub(crate) fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("TETHER_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
