//! (g) Login storm: N fresh opens at once, each authenticated with a password (argon2id on
//! the server) or with a signed token (a JWT, HS256): time until every session is connected,
//! and the server's CPU time for them. The server is a child process.

use std::time::Instant;

use tether::Session;

use super::child::{self, Launcher};
use super::report::{Sample, Target, Unit};
use super::{close_all, on_tether, open_many};

const PARALLEL: usize = 256;
/// Each open's limit: 256 password opens in flight queue behind about 28 ms of hashing each.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
const SECRET: &str = "the bench's HS256 secret, 32 bytes or more";

fn server_toml() -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\
         [limits]\nmax_sessions_per_principal = 1000000\n\
         connection_attempts_per_second_per_address = 0\nmax_pending_upgrades = 100000\n\
         [tokens]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
         [[principals]]\nname = \"bench\"\npassword_hash = \"{}\"\n\
         subscribe = [\"**\"]\npublish = [\"**\"]\n",
        tether_server::auth::hash_password("bench password")
    )
}

fn token() -> Result<String, String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({
        "sub": "fleet", "exp": exp, "subscribe": ["**"], "publish": ["**"],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state, ppid, ..., utime is field 14 and stime 15 of the whole line.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let (u, s) = (ticks(11), ticks(12));
    let hz = 100.0;
    match (u, s) {
        (Some(u), Some(s)) => Ok((u + s) / hz),
        _ => Err(format!("unexpected /proc/{pid}/stat")),
    }
}

pub(crate) async fn run(launcher: &Launcher, n: usize) -> Result<Vec<Sample>, String> {
    let token = token()?;
    let mut samples = Vec::new();
    for (key, label) in [("password", "a password"), ("token", "a signed token")] {
        let (l, toml) = (launcher.clone(), server_toml());
        let server = tokio::task::spawn_blocking(move || child::spawn_tether_server(&l, &toml))
            .await
            .map_err(|e| e.to_string())??;
        let pid = server.pid();
        let cpu_before = cpu_seconds(pid)?;
        let url = server.url();
        let t = token.clone();
        let by_token = key == "token";
        let started = Instant::now();
        let opened = on_tether(async move {
            let sessions = open_many(
                n,
                PARALLEL,
                move |_| {
                    // The measure is the time until all are connected: an open waiting its
                    // turn behind the server's hashing is slow, not failed.
                    let b = Session::builder(&url)
                        .no_reconnection()
                        .connect_timeout(CONNECT_TIMEOUT);
                    if by_token {
                        b.token(t.clone())
                    } else {
                        b.principal("bench").password("bench password")
                    }
                },
                None,
            )
            .await?;
            let elapsed = started.elapsed();
            close_all(sessions.into_iter().map(|(s, _)| s).collect()).await;
            Ok(elapsed)
        })
        .await;
        let cpu = cpu_seconds(pid)? - cpu_before;
        drop(server);
        let elapsed = opened?;
        let mut time = Sample::new(
            &format!("g.{key}.time"),
            &format!("login storm ({label}): {n} opens → all connected"),
            Unit::Seconds,
            elapsed.as_secs_f64(),
        )
        .note(format!("{PARALLEL} opens in flight at a time"));
        if by_token {
            time = time.target(Target::Below(5.0));
        }
        samples.push(time);
        samples.push(
            Sample::new(
                &format!("g.{key}.cpu"),
                &format!("login storm ({label}): server CPU per open"),
                Unit::Ms,
                cpu * 1e3 / n as f64,
            )
            .note(format!("{cpu:.2} s of server CPU in all")),
        );
    }
    Ok(samples)
}
