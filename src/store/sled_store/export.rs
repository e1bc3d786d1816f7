//! Reading every record of the sled store for `tollgate store copy` ([`crate::store::copy`]):
//! raw records, decoded once to check them and to read the columns the target needs.

use super::{io, SledStore};
use crate::store::copy::Dump;
use crate::store::record::agent::{agent_revocation_name, AgentRevocationRecord};
use crate::store::record::{audit_name, decode, parse_app_key, AppRecord, AuditRecord};
use crate::store::record::{TokenKey, TokenRecord};
use crate::store::{StoreError, StoreResult};

/// Text of a stored record (records are JSON).
fn text(name: &str, bytes: &[u8]) -> StoreResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
        record: name.to_owned(),
        reason: "not UTF-8 JSON".into(),
    })
}

impl SledStore {
    /// Every app, current grant, audit event and agent revocation, as stored. Blocking.
    pub(crate) fn export(&self) -> StoreResult<Dump> {
        let mut dump = Dump::default();
        let mut current = std::collections::HashMap::new();
        for item in self.apps.iter() {
            let (k, v) = item.map_err(io)?;
            let (org, id) = parse_app_key(&k).ok_or_else(|| StoreError::Corrupt {
                record: "apps/<unparsable key>".into(),
                reason: "key not written by this build".into(),
            })?;
            let rec = AppRecord::decode(&org, &id, &v)?;
            let (inc, generation) = (rec.incarnation, rec.generation);
            current.insert((org.clone(), id.clone()), (inc, generation));
            let t = text(&format!("app/{org}/{id}"), &v)?;
            dump.apps.push((org, id, inc, generation, t));
        }
        for item in self.tokens.iter() {
            let (k, v) = item.map_err(io)?;
            let tk = TokenKey::parse(&k).ok_or_else(|| StoreError::Corrupt {
                record: "tokens/<unparsable key>".into(),
                reason: "key not written by this build".into(),
            })?;
            let app = (tk.org.clone(), tk.app.clone());
            if current.get(&app) != Some(&(tk.incarnation, tk.generation)) {
                dump.skipped += 1;
                continue;
            }
            let version = TokenRecord::decode(&tk, &v)?.version();
            let t = text(&tk.name(), &v)?;
            let TokenKey {
                org,
                app,
                incarnation,
                generation,
                user,
            } = tk;
            dump.grants
                .push((org, app, incarnation, generation, user, version, t));
        }
        for item in self.audit.iter() {
            let (k, v) = item.map_err(io)?;
            let name = audit_name(&k);
            let e = decode::<AuditRecord>(&name, &v)?.into_event();
            dump.audit.push((e.org, e.seq, e.at, text(&name, &v)?));
        }
        for item in self.revocations()?.iter() {
            let (k, v) = item.map_err(io)?;
            let agent = text("agent_revocations/<key>", &k)?;
            AgentRevocationRecord::decode(&agent, &v)?;
            let t = text(&agent_revocation_name(&agent), &v)?;
            dump.revocations.push((agent, t));
        }
        dump.skipped += self.tickets.len() + self.pending.len();
        Ok(dump)
    }
}
