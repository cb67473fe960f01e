//! A single server's sessions and topics across a restart: written by a draining server to its
//! `state_dir`, read back by the next start.
//!
//! The file is `tether-state.bin`: an 8-byte magic, the format version (u32, little endian),
//! the body's length (u64) and FNV-1a 64 checksum (u64), then the body (postcard). It is
//! written to a temporary file, synced, then renamed, so a crash mid-write leaves the previous
//! file or none; it is read whole and checked before anything is used, so a file that is
//! corrupt, truncated or from another version is refused, never loaded half-way. A loaded file
//! is removed: sessions are restored once.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_protocol::server::ServerSessionState;

const MAGIC: &[u8; 8] = b"TETHERST";
/// Bumped whenever the body's layout changes.
const VERSION: u32 = 1;
const FILE: &str = "tether-state.bin";

/// What was saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedState {
    /// When it was written (ms since the Unix epoch): retention counts from then.
    pub(crate) saved_at_ms: u64,
    pub(crate) topics: Vec<SavedTopic>,
    pub(crate) sessions: Vec<SavedSession>,
}

/// A topic's current value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedTopic {
    pub(crate) topic: String,
    pub(crate) value: Vec<u8>,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
}

/// A session, disconnected (its connection was sent away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedSession {
    pub(crate) id: [u8; 16],
    pub(crate) principal: Option<String>,
    pub(crate) token: [u8; 16],
    pub(crate) previous_token: Option<[u8; 16]>,
    pub(crate) subscriptions: Vec<String>,
    pub(crate) reconnect_timeout_ms: u64,
    /// Permissions a signed token granted (subscribe, publish).
    pub(crate) grant: Option<(Vec<String>, Vec<String>)>,
    pub(crate) proto: ServerSessionState,
}

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a state file of this version, or it is damaged.
    #[error(
        "state file {path} cannot be used: {problem}; nothing was loaded (move it away to start \
         without the saved sessions)"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The state file in `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `state` to `dir` (created if missing), atomically.
pub(crate) fn save(dir: &Path, state: &SavedState) -> Result<PathBuf, StateError> {
    let file = path(dir);
    let io = |source| StateError::Io {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let body = postcard::to_allocvec(state).map_err(|e| StateError::Unusable {
        path: file.clone(),
        problem: format!("cannot encode: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(28 + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&fnv1a64(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &file).map_err(io)?;
    Ok(file)
}

/// Reads the state in `dir`: `Ok(None)` when there is none.
pub(crate) fn load(dir: &Path) -> Result<Option<SavedState>, StateError> {
    let file = path(dir);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path: file, source }),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|problem| StateError::Unusable {
            path: file.clone(),
            problem,
        })
}

fn decode(bytes: &[u8]) -> Result<SavedState, String> {
    if bytes.len() < 28 || &bytes[..8] != MAGIC {
        return Err("not a Tether state file".into());
    }
    let word = |at: usize, len: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&bytes[at..at + len]);
        u64::from_le_bytes(b)
    };
    let version = word(8, 4);
    if version != u64::from(VERSION) {
        return Err(format!(
            "written by format version {version}, this server reads version {VERSION}"
        ));
    }
    let len = word(12, 8);
    let body = &bytes[28..];
    if body.len() as u64 != len {
        return Err(format!(
            "truncated or extended: {} body bytes, {len} expected",
            body.len()
        ));
    }
    if fnv1a64(body) != word(20, 8) {
        return Err("checksum mismatch (damaged)".into());
    }
    postcard::from_bytes(body).map_err(|e| format!("cannot decode: {e}"))
}

/// Removes a state file once loaded (sessions are restored once).
pub(crate) fn remove(dir: &Path) -> Result<(), StateError> {
    let file = path(dir);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io { path: file, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            saved_at_ms: 7,
            topics: vec![SavedTopic {
                topic: "a/b".into(),
                value: vec![1, 2],
                partition: 3,
                offset: 9,
            }],
            sessions: Vec::new(),
        }
    }

    #[test]
    fn a_saved_state_loads_back_and_a_damaged_one_is_refused_whole() {
        let dir = std::env::temp_dir().join(format!("tether-state-test-{}", std::process::id()));
        let file = save(&dir, &sample()).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(sample()));
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).expect("write");
        let err = load(&dir).expect_err("damaged");
        assert!(err.to_string().contains("checksum"), "{err}");
        bytes.truncate(last);
        std::fs::write(&file, &bytes).expect("write");
        assert!(
            load(&dir)
                .expect_err("truncated")
                .to_string()
                .contains("truncated")
        );
        let mut other = std::fs::read(&file).expect("read");
        other[8] = 99;
        std::fs::write(&file, &other).expect("write");
        assert!(
            load(&dir)
                .expect_err("version")
                .to_string()
                .contains("version 99")
        );
        remove(&dir).expect("remove");
        assert_eq!(load(&dir).expect("none"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
