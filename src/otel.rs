//! Optional OpenTelemetry export (`--otlp-endpoint`): one span per proxied request, sent in
//! batches to an OTLP/HTTP collector (protobuf, `POST …/v1/traces`). Off by default; then
//! nothing here is built and a request pays one `Option` check.
//!
//! The span is filled from the access-log record, at the one place the access line is written
//! (`proxy::log`), so nothing is computed twice; this module knows nothing of the proxy (it
//! takes a [`RequestSpan`]). The spans never pass through `tracing`: they are built with the
//! OpenTelemetry SDK directly, so the log lines and their filters are untouched and no other
//! `tracing` span reaches the exporter. Spans wait in a bounded queue ([`QUEUE`]); when the
//! collector cannot keep up, the SDK drops the newest and logs it (`opentelemetry_sdk` target,
//! a warning at the first drop and the total at shutdown). The exporter posts with tollgate's
//! own hyper client and rustls (ring): no second HTTP or crypto stack. [`Otel::shutdown`]
//! flushes what is queued; the server runs it as a lifecycle shutdown hook.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

/// Most spans waiting for export; beyond it new spans are dropped (and the drop logged), so a
/// slow or absent collector costs bounded memory.
pub const QUEUE: usize = 4096;

/// Most spans in one export request (the SDK's default).
const BATCH: usize = 512;

/// How often queued spans are sent: short, so a span reaches the collector about a second
/// after its request ended.
const DELAY: Duration = Duration::from_secs(1);

/// Longest one export request may take (connect, send, response).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest collector response read (it is an empty or small protobuf message).
const MAX_RESPONSE: usize = 64 * 1024;

/// Longest the shutdown flush may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(4);

/// What one proxied request's span carries: the access line's fields, never a token or a
/// query string.
pub struct RequestSpan<'a> {
    /// When the request head was received.
    pub start: SystemTime,
    /// Request method.
    pub method: &'a str,
    /// `allowed`, `denied`, `error` or `would_deny`.
    pub decision: &'static str,
    /// The policy reason or the error code.
    pub reason: Option<&'a str>,
    /// Winning policy.
    pub policy: Option<&'a str>,
    /// Deciding rule (`file:line`).
    pub rule: Option<String>,
    /// Route taken.
    pub route: Option<String>,
    /// Outbound application whose token was (or would have been) injected.
    pub app: Option<&'a str>,
    /// Whether a token was injected.
    pub injected: bool,
    /// Whether the app's token was refreshed for this request.
    pub refreshed: bool,
    /// Status tollgate answered with.
    pub status: u16,
    /// Time from sending the request upstream to the response head, when it was sent.
    pub upstream_time: Option<Duration>,
    /// Caller's org and user.
    pub caller: Option<(&'a str, &'a str)>,
    /// Destination host.
    pub host: Option<&'a str>,
    /// Destination port.
    pub port: u16,
    /// Request path without the query.
    pub path: Option<&'a str>,
    /// Client address.
    pub peer: String,
    /// Bytes client → upstream and upstream → client.
    pub bytes: (u64, u64),
}

/// The exporter: a tracer whose spans go through the batch processor to the collector.
pub struct Otel {
    /// Owns the batch processor (its thread and queue); shut down to flush.
    provider: SdkTracerProvider,
    /// Builds the spans.
    tracer: SdkTracer,
}

impl Otel {
    /// An exporter posting to `traces_url` (`…/v1/traces`). Must run inside the runtime the
    /// export requests are sent on.
    pub fn start(traces_url: &str) -> anyhow::Result<Arc<Otel>> {
        let client = Client::new(tokio::runtime::Handle::current())?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("tollgate")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Arc::new(Otel { provider, tracer }))
    }

    /// Queues the span of one finished request.
    pub fn record(&self, s: RequestSpan<'_>) {
        let mut attrs = Vec::with_capacity(20);
        let mut put = |k: &'static str, v: Option<opentelemetry::Value>| {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, v));
            }
        };
        let text = |v: Option<&str>| v.map(|v| v.to_owned().into());
        put("http.request.method", Some(s.method.to_owned().into()));
        put("tollgate.decision", Some(s.decision.into()));
        put("tollgate.reason", text(s.reason));
        put("tollgate.policy", text(s.policy));
        put("tollgate.rule", s.rule.map(Into::into));
        put("tollgate.route", s.route.map(Into::into));
        put("tollgate.app", text(s.app));
        put("tollgate.injected", Some(s.injected.into()));
        put("tollgate.refreshed", Some(s.refreshed.into()));
        put(
            "http.response.status_code",
            Some(i64::from(s.status).into()),
        );
        put(
            "tollgate.upstream_time_ms",
            s.upstream_time.map(|d| (d.as_secs_f64() * 1000.0).into()),
        );
        put("tollgate.org", text(s.caller.map(|c| c.0)));
        put("tollgate.user", text(s.caller.map(|c| c.1)));
        put("server.address", text(s.host));
        put("server.port", Some(i64::from(s.port).into()));
        put("url.path", text(s.path));
        put("client.address", Some(s.peer.into()));
        put("tollgate.bytes_up", Some(clamp(s.bytes.0).into()));
        put("tollgate.bytes_down", Some(clamp(s.bytes.1).into()));
        let mut span = self
            .tracer
            .span_builder(s.method.to_owned())
            .with_kind(SpanKind::Server)
            .with_start_time(s.start)
            .with_attributes(attrs)
            .start(&self.tracer);
        if s.decision == "error" {
            span.set_status(Status::error(s.reason.unwrap_or("error").to_owned()));
        }
        span.end();
    }

    /// Flushes the queued spans and stops the exporter, for at most [`SHUTDOWN_TIMEOUT`]. The
    /// flush blocks, so it runs off the runtime's workers (which carry the export requests).
    pub async fn shutdown(self: Arc<Self>) {
        let flushed = tokio::task::spawn_blocking(move || {
            self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        })
        .await;
        match flushed {
            Ok(Ok(())) => tracing::info!("otlp: spans flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "otlp: flushing the spans failed"),
            Err(e) => tracing::warn!(error = %e, "otlp: flushing the spans failed"),
        }
    }
}

/// A counter as an OTLP integer (`i64`).
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Posts export requests with hyper (rustls on ring for `https://`). The SDK's batch thread
/// awaits them outside the runtime, so each one runs as a task on the server's runtime.
struct Client {
    /// The pooled HTTP client.
    inner: crate::tls::Http1Client,
    /// The runtime the requests run on.
    runtime: tokio::runtime::Handle,
}

impl Client {
    fn new(runtime: tokio::runtime::Handle) -> anyhow::Result<Client> {
        let inner = crate::tls::http1_client(crate::tls::upstream_client_config(None)?);
        Ok(Client { inner, runtime })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("otel::Client")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move {
            let sent = tokio::time::timeout(EXPORT_TIMEOUT, inner.request(request.map(Full::new)));
            let (parts, body) = sent.await??.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        });
        task.await?
    }
}
