//! A receiver for `--events-webhook` on 127.0.0.1:0: it checks each delivery's
//! `Tollgate-Signature` itself (HMAC-SHA256 of `"<t>.<body>"` with the shared secret, `t` no
//! older than 5 minutes, as docs/events.md tells receivers to) and keeps every delivery, good
//! or bad. It can be told to answer `500` to the next deliveries, to exercise retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::hmac;
use serde_json::Value;
use tokio::net::TcpListener;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The JSON body.
    pub body: Value,
    /// The raw body, for secret checks.
    pub raw: String,
    /// The `Tollgate-Signature` header as received.
    pub signature: String,
    /// Whether the signature verified with the receiver's secret and a fresh `t`.
    pub signed: bool,
    /// The status the receiver answered.
    pub answered: u16,
}

/// State shared with the server task.
struct Shared {
    key: hmac::Key,
    got: Mutex<Vec<Delivery>>,
    fail_next: AtomicUsize,
}

/// The receiver: where it listens and what it received.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Starts a receiver verifying with `secret`.
    pub async fn start(secret: &[u8]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            got: Mutex::new(Vec::new()),
            fail_next: AtomicUsize::new(0),
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| receive(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, shared }
    }

    /// The URL to give `--events-webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/tollgate-events", self.addr)
    }

    /// Answers `500` to the next `n` deliveries.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every delivery so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.got.lock().unwrap().clone()
    }

    /// The events answered 2xx, in order.
    pub fn delivered(&self) -> Vec<Value> {
        let got = self.deliveries().into_iter();
        got.filter(|d| d.answered == 200).map(|d| d.body).collect()
    }
}

/// Whether `header` is a valid signature of `body` under `key`, made within 5 minutes.
pub fn verify(key: &hmac::Key, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = hex_decode(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if super::oauth::now().abs_diff(t) > 300 {
        return false;
    }
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    hmac::verify(key, &signed, &v1).is_ok()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn receive(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = req
        .headers()
        .get("tollgate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let raw = req.into_body().collect().await.unwrap().to_bytes();
    let signed = verify(&shared.key, &header, &raw);
    let fail = shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if fail || !signed { 500 } else { 200 };
    shared.got.lock().unwrap().push(Delivery {
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw: String::from_utf8_lossy(&raw).into_owned(),
        signature: header,
        signed,
        answered,
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(answered).unwrap();
    Ok(r)
}
