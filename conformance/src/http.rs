//! The fixture over HTTP, for runners in other languages: `GET /<verb>?key=value...`, one
//! request per connection, answered `200 ok [words]` or `500 error <message>` in plain text.
//!
//! | request | effect | answer |
//! | --- | --- | --- |
//! | `/env?recovery=&ping_ms=&tls=&drain=&retry_after_ms=` | a fresh server and proxy | `ok url=URL [ca=PEM-FILE]` |
//! | `/cut?mode=rst` `/stall` `/refuse` `/heal` | a fault (see the testkit) | `ok` |
//! | `/wait_refused?n=N` | waits until the proxy refused N connections | `ok` |
//! | `/publish?topic=&value=&count=` | another party publishes | `ok` |
//! | `/drain` | drain and restart the server in place | `ok` |
//! | `/end` | ends the environment | `ok` |

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixture::{Fixture, FixtureError};

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Serves `fixture` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, fixture: Arc<Fixture>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let fixture = fixture.clone();
        tokio::spawn(async move {
            let _ = handle(stream, &fixture).await;
        });
    }
}

async fn handle(mut stream: TcpStream, fixture: &Fixture) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let target = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let (status, body) = match answer(fixture, target).await {
        Ok(words) if words.is_empty() => ("200 OK", "ok".to_owned()),
        Ok(words) => ("200 OK", format!("ok {words}")),
        Err(e) => ("500 Internal Server Error", format!("error {e}")),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Runs one request: `target` is the path and query.
async fn answer(fixture: &Fixture, target: &str) -> Result<String, FixtureError> {
    let url = url::Url::parse(&format!("http://fixture{target}"))
        .map_err(|e| FixtureError::Argument(format!("bad request {target:?}: {e}")))?;
    let args: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let arg = |k: &str| {
        args.get(k)
            .cloned()
            .ok_or_else(|| FixtureError::Argument(format!("{k} is missing")))
    };
    match url.path() {
        "/env" => Ok(fixture.env(&args).await?.words()),
        "/cut" => {
            let mode = args.get("mode").map_or("rst", String::as_str);
            Ok(format!("cut={}", fixture.cut(mode).await?))
        }
        "/stall" => Ok(format!("stalled={}", fixture.stall().await?)),
        "/refuse" => fixture.refuse().await.map(|()| String::new()),
        "/heal" => fixture.heal().await.map(|()| String::new()),
        "/wait_refused" => {
            let n = arg("n")?
                .parse()
                .map_err(|_| FixtureError::Argument("n is not a number".into()))?;
            fixture.wait_refused(n).await.map(|()| String::new())
        }
        "/publish" => {
            let count = match args.get("count") {
                Some(c) => c
                    .parse()
                    .map_err(|_| FixtureError::Argument("count is not a number".into()))?,
                None => 1,
            };
            fixture
                .publish(&arg("topic")?, &arg("value")?, count)
                .await
                .map(|()| String::new())
        }
        "/drain" => fixture.drain().await.map(|()| String::new()),
        "/end" => {
            fixture.end().await;
            Ok(String::new())
        }
        other => Err(FixtureError::Argument(format!("unknown request {other}"))),
    }
}
