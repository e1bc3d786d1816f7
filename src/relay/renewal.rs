//! Agent credential renewal over the relay connection, relay side.
//!
//! A session's credential is renewed on the session itself, so an agent enrolled with a
//! short-lived credential never needs a manual re-enrolment, and a credential that is not
//! renewed ends its sessions when it expires.
//!
//! **Direction.** tollgate is the HTTP/2 *client* of every relay connection (the agent
//! serves), so the relay asks: when a session's credential passes two thirds of its lifetime
//! (plus a jitter of up to a thirtieth of it), [`Renewer::keep`] sends `POST`
//! [`CREDENTIAL_PATH`] on that connection with a fresh credential in [`CREDENTIAL_HEADER`]
//! and the `jti` of the credential it replaces in [`REPLACES_HEADER`]. This is the pattern
//! of the replica lists ([`super::replicas`]), and it needs no second channel: an
//! agent-initiated request would need a long-poll or a control stream that the relay keeps
//! open on every connection, for one request every few days. The relay also knows each
//! session's expiry from the handshake, so it is the side that must act anyway: it cuts the
//! session at expiry unless it was renewed on it.
//!
//! **One renewal for many sessions.** An agent process has several sessions (connections,
//! replicas) that authenticated with the same credential, and each one's timer fires. The
//! agent takes an offer only if it replaces the credential it holds (`204`); once it took
//! one, every other offer names a credential it no longer holds, and it answers `200` with
//! its current credential in [`CREDENTIAL_HEADER`] instead. The relay verifies that one
//! (signature, agent ID, a later expiry) and associates its expiry with the session. So each
//! lifetime sees one renewal, and only an accepted one is audited.
//!
//! **Issued.** The new credential has the same agent ID and lifetime, signed by the identity
//! key that signs at that moment (the key ring's, read from `keys/` at each renewal). It is
//! refused when the agent is revoked (in memory or in the store's record), audited
//! `agent.renew_refused`; the session then ends at expiry (a revocation by `tollgate agent
//! revoke` closes it at once anyway). A granted renewal is audited `agent.renew`. Neither
//! the audit nor the logs carry a credential, only its `jti` and expiry. Audit events of the
//! relay are deployment-wide: org [`AUDIT_ORG`] (as offline key operations), actor `relay`,
//! read by operators at `GET /v1/agents/audit`.
//!
//! **Failures.** An agent that answers `404`, `405` or `501` predates renewal: it is left
//! alone and its session ends at expiry, as its reconnections are then refused (`expired`).
//! Any other failure (no answer, an error status, the file not written) is retried with
//! exponential backoff (1 s, doubling, at most 30 s) until expiry, logged as a warning, and as
//! an error once less than a sixth of the lifetime is left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;

use super::credential::{self, CredentialVerifier, Verified};
use super::registry::RelayConn;
use crate::clock::Clock;
use crate::store::{AuditEvent, Store};

/// The request path of a renewal offer.
pub const CREDENTIAL_PATH: &str = "/tollgate/credential";

/// The header carrying a credential: the new one (relay → agent), or the agent's current one
/// when it declines an offer.
pub const CREDENTIAL_HEADER: &str = "tollgate-credential";

/// The header naming (by `jti`) the credential an offer replaces.
pub const REPLACES_HEADER: &str = "tollgate-credential-replaces";

/// The org of the relay's audit events: none, deployment-wide.
pub const AUDIT_ORG: &str = "";

/// Clock skew tolerated on `exp`, in seconds, as at the handshake.
const LEEWAY_SECS: u64 = 5;

/// When a session whose credential expires at `expires_at` (Unix seconds) is cut, in Unix
/// milliseconds: when the handshake starts refusing that credential too (it compares whole
/// seconds: `exp + LEEWAY_SECS < now`), so a cut session cannot come straight back with it.
fn end_ms(expires_at: u64) -> u64 {
    expires_at
        .saturating_add(LEEWAY_SECS + 1)
        .saturating_mul(1000)
}

/// How long an agent has to answer an offer (it writes a file first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// First retry delay after a failed renewal; doubles per failure.
const RETRY_BASE: Duration = Duration::from_secs(1);

/// Largest retry delay.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// When a credential issued at `issued_at_ns` and expiring at `expires_at` (Unix seconds) is
/// due for renewal, in Unix milliseconds: two thirds into its lifetime, plus a jitter of up to
/// a thirtieth of it taken from `random`.
pub fn due_at_ms(issued_at_ns: u64, expires_at: u64, random: u64) -> u64 {
    let iat = issued_at_ns / 1_000_000;
    let life = expires_at.saturating_mul(1000).saturating_sub(iat);
    iat + life / 3 * 2 + random % (life / 30 + 1)
}

/// How one offer ended.
#[derive(Debug)]
enum Outcome {
    /// The agent took the new credential (`204`).
    Renewed(Verified),
    /// The agent already holds a newer credential (`200`), verified here.
    Kept(Verified),
    /// The agent predates renewal (`404`, `405`, `501`).
    Unsupported(StatusCode),
    /// The agent is revoked: no credential issued.
    Refused,
    /// Anything else; retried.
    Failed(String),
}

/// Issues renewed credentials for the relay's sessions.
pub struct Renewer {
    /// The data directory's `keys/`: the key ring's signing key signs renewals.
    keys_dir: PathBuf,
    /// Checks the credentials issued and those an agent says it holds, and whose agent is
    /// revoked.
    verifier: Arc<CredentialVerifier>,
    /// Revocations (the authoritative record) and the audit.
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("keys_dir", &self.keys_dir)
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// Renews with the signing key of the ring in `keys_dir`, checking with `verifier`,
    /// auditing into `store`.
    pub fn new(
        keys_dir: PathBuf,
        verifier: Arc<CredentialVerifier>,
        store: Arc<dyn Store>,
    ) -> Self {
        Renewer {
            keys_dir,
            verifier,
            store,
        }
    }

    /// Keeps the credential of the session on `send` (connection `conn`, authenticated with
    /// `cred`) renewed, and closes the connection when its credential expires without a
    /// renewal. Returns then, or never for a credential without expiry; the caller drops it
    /// when the connection ends.
    pub async fn keep(
        self: Arc<Self>,
        mut send: SendRequest<Empty<Bytes>>,
        conn: Arc<RelayConn>,
        mut cred: Verified,
    ) {
        let agent = conn.agent().to_string();
        while let Some(expires_at) = cred.expires_at {
            let end_ms = end_ms(expires_at);
            sleep_until_ms(due_at_ms(cred.issued_at_ns, expires_at, random_u64())).await;
            let life = cred.lifetime().unwrap_or_default();
            let mut attempt = 0u32;
            let outcome = loop {
                match self.offer(&mut send, &conn, &cred).await {
                    Outcome::Failed(why) => {
                        let left = Duration::from_millis(end_ms.saturating_sub(now_ms()));
                        if left.is_zero() {
                            break Outcome::Failed(why);
                        }
                        if left < life / 6 {
                            tracing::error!(%agent, conn = conn.id(), reason = %why, left = ?left,
                                "agent credential renewal failing; the session ends when it expires");
                        } else {
                            tracing::warn!(%agent, conn = conn.id(), reason = %why,
                                "agent credential renewal failed; retrying");
                        }
                        let delay = RETRY_BASE
                            .saturating_mul(1u32 << attempt.min(5))
                            .min(RETRY_CAP)
                            .min(left);
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(delay).await;
                    }
                    other => break other,
                }
            };
            match outcome {
                Outcome::Renewed(next) | Outcome::Kept(next) => cred = next,
                Outcome::Unsupported(status) => {
                    tracing::info!(%agent, conn = conn.id(), %status,
                        "agent does not renew its credential: the session ends when it expires");
                    break;
                }
                Outcome::Refused | Outcome::Failed(_) => break,
            }
        }
        let Some(expires_at) = cred.expires_at else {
            return std::future::pending().await;
        };
        sleep_until_ms(end_ms(expires_at)).await;
        tracing::warn!(%agent, conn = conn.id(), open_tunnels = conn.in_flight(),
            "agent credential expired: session closed");
        conn.expire();
    }

    /// One offer of a new credential replacing `cred` on `send`.
    async fn offer(
        &self,
        send: &mut SendRequest<Empty<Bytes>>,
        conn: &RelayConn,
        cred: &Verified,
    ) -> Outcome {
        let agent = conn.agent();
        match self.revoked(agent, cred.issued_at_ns).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(
                    agent,
                    conn = conn.id(),
                    "renewal refused: the agent is revoked"
                );
                self.audit(
                    "agent.renew_refused",
                    agent,
                    serde_json::json!({"instance": conn.instance(), "reason": "revoked",
                        "jti": cred.jti}),
                )
                .await;
                return Outcome::Refused;
            }
            Err(e) => return Outcome::Failed(e),
        }
        let (fresh, issued) = match self.issue(agent, cred) {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(e),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(CREDENTIAL_PATH)
            .header(CREDENTIAL_HEADER, fresh)
            .header(REPLACES_HEADER, &cred.jti)
            .body(Empty::new());
        let Ok(req) = req else {
            return Outcome::Failed("cannot build the offer".into());
        };
        if send.ready().await.is_err() {
            return Outcome::Failed("the relay connection is closed".into());
        }
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, send.send_request(req)).await {
            Err(_) => return Outcome::Failed(format!("no answer within {ANSWER_TIMEOUT:?}")),
            Ok(Err(e)) => return Outcome::Failed(e.to_string()),
            Ok(Ok(a)) => a,
        };
        match answer.status() {
            StatusCode::NO_CONTENT => {
                tracing::info!(
                    agent,
                    conn = conn.id(),
                    instance = conn.instance(),
                    expires_at = issued.expires_at,
                    "agent credential renewed"
                );
                self.audit(
                    "agent.renew",
                    agent,
                    serde_json::json!({"instance": conn.instance(), "jti": issued.jti,
                        "replaces": cred.jti, "expires_at": issued.expires_at}),
                )
                .await;
                Outcome::Renewed(issued)
            }
            StatusCode::OK => self.kept(agent, cred, answer.headers()),
            s @ (StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED) => Outcome::Unsupported(s),
            s => Outcome::Failed(format!("the agent answered {s}")),
        }
    }

    /// The agent declined: it holds a newer credential, which it sent back.
    fn kept(&self, agent: &str, cred: &Verified, headers: &http::HeaderMap) -> Outcome {
        let Some(current) = headers.get(CREDENTIAL_HEADER).and_then(|v| v.to_str().ok()) else {
            return Outcome::Failed("the agent declined without its credential".into());
        };
        match self.verifier.check(current) {
            Ok(v) if v.agent == agent && v.jti != cred.jti && v.expires_at >= cred.expires_at => {
                Outcome::Kept(v)
            }
            Ok(_) => Outcome::Failed("the agent holds no newer credential".into()),
            Err(e) => Outcome::Failed(format!("the agent's credential: {e}")),
        }
    }

    /// A credential replacing `cred`: same agent and lifetime, the signing key's.
    fn issue(&self, agent: &str, cred: &Verified) -> Result<(String, Verified), String> {
        let now = Clock::system().now().map_err(|e| e.to_string())?;
        let ring = crate::keys::IdentityRing::load(&self.keys_dir).map_err(|e| e.to_string())?;
        let key = ring.signing(now);
        let fresh = credential::enroll(key, agent, cred.lifetime())?;
        let issued = self
            .verifier
            .check(&fresh)
            .map_err(|e| format!("the renewed credential does not verify: {e}"))?;
        Ok((fresh, issued))
    }

    /// Whether credentials of `agent` issued at `issued_at_ns` are revoked: in memory, or
    /// in the store's record (a revocation another replica took, not followed here yet).
    async fn revoked(&self, agent: &str, issued_at_ns: u64) -> Result<bool, String> {
        if self.verifier.revocations().refuses(agent, issued_at_ns) {
            return Ok(true);
        }
        let stored = self
            .store
            .get_agent_revocation(agent)
            .await
            .map_err(|e| format!("cannot read the agent's revocation: {e}"))?;
        Ok(stored.is_some_and(|r| issued_at_ns <= r.revoked_at_ns))
    }

    async fn audit(&self, action: &str, agent: &str, detail: serde_json::Value) {
        let event = AuditEvent::new(AUDIT_ORG, "relay", action, format!("agent:{agent}"), detail);
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(action, agent, error = %e, "cannot audit an agent credential renewal");
        }
    }
}

fn now_ms() -> u64 {
    // An unusable clock reads as the epoch: every deadline is then in the future, and the
    // handshake refuses new connections anyway.
    Clock::system().now_nanos().unwrap_or(0) / 1_000_000
}

async fn sleep_until_ms(at_ms: u64) {
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms()))).await;
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // A failing system RNG only removes the jitter.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
#[path = "renewal_tests.rs"]
mod tests;
