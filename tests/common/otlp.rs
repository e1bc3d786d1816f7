//! An OTLP/HTTP collector on 127.0.0.1:0 for `--otlp-endpoint`: it accepts
//! `POST /v1/traces` (protobuf), decodes the request with opentelemetry-proto's types and keeps
//! every span it received, with its attributes as strings.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;

/// One received span: its name, its attributes (values as strings) and the service name of
/// its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub service: Option<String>,
    pub attrs: BTreeMap<String, String>,
}

/// The collector: where it listens and what it received.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Requests that were not a decodable `POST /v1/traces`.
    rejected: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (keep, bad) = (spans.clone(), rejected.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (keep, bad) = (keep.clone(), bad.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        receive(req, keep.clone(), bad.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            rejected,
        }
    }

    /// The base URL to give `--otlp-endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }
}

async fn receive(
    req: Request<Incoming>,
    keep: Arc<Mutex<Vec<ReceivedSpan>>>,
    bad: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let what = format!(
        "{} {} {:?}",
        req.method(),
        req.uri(),
        req.headers().get("content-type")
    );
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    let post = req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let decoded = ExportTraceServiceRequest::decode(body);
    let Ok(export) = decoded.ok().filter(|_| post && protobuf).ok_or(()) else {
        bad.lock().unwrap().push(what);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    for rs in export.resource_spans {
        let service = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref().map(text))
        });
        for ss in rs.scope_spans {
            for span in ss.spans {
                let attrs = span
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)))
                    })
                    .collect();
                keep.lock().unwrap().push(ReceivedSpan {
                    name: span.name,
                    service: service.clone(),
                    attrs,
                });
            }
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    resp.headers_mut()
        .insert("content-type", "application/x-protobuf".parse().unwrap());
    Ok(resp)
}

/// An attribute value as a string (arrays and maps are not used by tollgate).
fn text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}
