//! TLS test fixtures: test CAs (made with rcgen), a loopback TLS upstream that echoes what it
//! received and counts connections, and a client that speaks HTTP/1.1 or HTTP/2 inside a
//! `CONNECT` tunnel while trusting a chosen root.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;

use super::{proxy_connect, read_response, Resp};

pub const TOLLGATE_CA_CN: &str = "tollgate interception CA";

pub const UPSTREAM_CA_CN: &str = "upstream test CA";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA made by the test: certificate PEM, key PEM (PKCS#8), signer.
pub struct TestCa {
    pub pem: String,
    pub key_pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn test_ca(cn: &str) -> TestCa {
    ca_with(cn, true)
}

pub fn ca_with(cn: &str, is_ca: bool) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    }
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `ca` as `NAME.pem` and `NAME.key` (mode 0600) in `dir`.
pub fn write_ca(dir: &Path, name: &str, ca: &TestCa) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &ca.pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// A loopback TLS upstream (ALPN h2 + http/1.1) with a certificate for `localhost` and
/// `127.0.0.1` signed by `ca`. It echoes what it received as JSON and counts TCP connections.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

pub async fn tls_upstream(ca: &TestCa) -> Upstream {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req| echo(req, alpn.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream { addr, connections }
}

pub async fn echo(
    req: Request<Incoming>,
    alpn: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(k.as_str().to_string(), v.to_str().unwrap_or("").to_string());
    }
    let out = serde_json::json!({
        "method": req.method().to_string(),
        "uri": req.uri().to_string(),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "version": format!("{:?}", req.version()),
        "alpn": alpn,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes()),
    });
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

pub fn client_config(root_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(root_pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

pub type Tls = tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>>;

/// CONNECT `target` through the proxy, then TLS with `server_name`, trusting `root_pem`.
pub async fn connect_tls(
    proxy: SocketAddr,
    target: &str,
    auth: &str,
    root_pem: &str,
    server_name: &str,
    alpn: &[&[u8]],
) -> Result<Tls, std::io::Error> {
    let (r, tunnel) = proxy_connect(proxy, target, &[("proxy-authorization", auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let connector = tokio_rustls::TlsConnector::from(client_config(root_pem, alpn));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    connector.connect(name, tunnel.unwrap()).await
}

/// The peer certificate's issuer CN and SAN list, as text.
pub fn peer_cert(tls: &Tls) -> (String, String) {
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .map(|s| format!("{:?}", s.value.general_names))
        .unwrap_or_default();
    (issuer, san)
}

pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// An HTTP/1.1 sender over `tls`.
pub async fn h1(tls: Tls) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An HTTP/2 sender over `tls`.
pub async fn h2(tls: Tls) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Reads a whole response (of a request sent inside a tunnel).
pub async fn read(resp: Response<Incoming>) -> Resp {
    read_response(resp).await
}
