//! Writing a sled store's records into PostgreSQL for `tollgate store copy`
//! ([`crate::store::copy`]), in one transaction: refused when the target holds records,
//! unless merging, which adds only what is missing.

use super::{pg, to_db, PgStore};
use crate::store::copy::{CopyReport, Dump};
use crate::store::{StoreError, StoreResult};

impl PgStore {
    /// Writes `dump`; see the module.
    pub(crate) async fn import(&self, dump: &Dump, merge: bool) -> StoreResult<CopyReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM apps) + (SELECT count(*) FROM tokens) \
                 + (SELECT count(*) FROM audit) + (SELECT count(*) FROM agent_revocations)",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if held > 0 && !merge {
            return Err(StoreError::Io(format!(
                "the target database already holds {held} records (a copy ran before, or \
                 tollgate used it): nothing was written; use --merge to add only what is missing"
            )));
        }
        let mut report = CopyReport::default();
        let count = |n: u64, kind: &mut usize, already: &mut usize| {
            if n == 1 {
                *kind += 1;
            } else {
                *already += 1;
            }
        };
        let mut already = 0;
        for (org, id, inc, generation, rec) in &dump.apps {
            let n = tx
                .execute(
                    "INSERT INTO apps (org, id, incarnation, generation, rec) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[org, id, &to_db(*inc), &to_db(*generation), rec],
                )
                .await
                .map_err(pg)?;
            count(n, &mut report.apps, &mut already);
        }
        for (org, app, inc, generation, user, version, rec) in &dump.grants {
            let n = tx
                .execute(
                    "INSERT INTO tokens (org, app, incarnation, generation, usr, version, rec) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[
                        org,
                        app,
                        &to_db(*inc),
                        &to_db(*generation),
                        user,
                        &to_db(*version),
                        rec,
                    ],
                )
                .await
                .map_err(pg)?;
            count(n, &mut report.grants, &mut already);
        }
        for (org, seq, at, rec) in &dump.audit {
            let n = tx
                .execute(
                    "INSERT INTO audit (org, seq, at, rec) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[org, &to_db(*seq), &to_db(*at), rec],
                )
                .await
                .map_err(pg)?;
            count(n, &mut report.audit, &mut already);
        }
        for (agent, rec) in &dump.revocations {
            let n = tx
                .execute(
                    "INSERT INTO agent_revocations (agent, rec) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[agent, rec],
                )
                .await
                .map_err(pg)?;
            count(n, &mut report.agent_revocations, &mut already);
        }
        // New events are numbered after the copied ones.
        tx.execute(
            "SELECT setval('audit_seq', (SELECT coalesce(max(seq), 0) + 1 FROM audit), false)",
            &[],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        report.already_present = already;
        Ok(report)
    }
}
