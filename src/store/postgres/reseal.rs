//! The PostgreSQL side of the store key re-seal (`store::reseal`): the progress is the `meta`
//! row `reseal`, and each batch is one transaction that locks that row (`FOR UPDATE`, so the
//! batches of several replicas never interleave), takes or renews its lease (so one replica
//! does the work), reads the next rows of the walked table by primary key after the cursor,
//! and writes each re-sealed record with a compare-and-set on the text it read (a record
//! written since is skipped).

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;

use super::super::record::sealed::{kids, reseal, Table};
use super::super::record::KEY_CHECK_KEY;
use super::super::reseal::ResealProgress;
use super::super::{StoreError, StoreResult};
use super::rows::pg;
use super::PgStore;

/// A parameter of a query built here.
type Param = Box<dyn ToSql + Sync + Send>;

/// How a table is walked: its name and primary key columns, and how a row's key reads.
struct Walk {
    /// The table.
    table: &'static str,
    /// Its primary key columns, in order.
    pk: &'static [&'static str],
}

fn walk(t: Table) -> Walk {
    let (table, pk): (&str, &[&str]) = match t {
        Table::Apps => ("apps", &["org", "id"]),
        Table::Tokens => (
            "tokens",
            &["org", "app", "incarnation", "generation", "usr"],
        ),
        Table::Tickets => ("consent_tickets", &["hash"]),
        Table::Pending => ("consent_pending", &["hash"]),
        Table::Meta => ("meta", &["k"]),
    };
    Walk { table, pk }
}

/// One row as read: its primary key (as JSON, the cursor), the key the record is sealed
/// under (a consent record's hash, the key check's name; empty otherwise), and its text.
struct Row {
    pk: Vec<serde_json::Value>,
    key: Vec<u8>,
    rec: String,
}

fn read_row(t: Table, row: &tokio_postgres::Row) -> Row {
    use serde_json::Value;
    let (pk, key) = match t {
        Table::Apps => (
            vec![
                Value::from(row.get::<_, String>(0)),
                Value::from(row.get::<_, String>(1)),
            ],
            Vec::new(),
        ),
        Table::Tokens => (
            vec![
                Value::from(row.get::<_, String>(0)),
                Value::from(row.get::<_, String>(1)),
                Value::from(row.get::<_, i64>(2)),
                Value::from(row.get::<_, i64>(3)),
                Value::from(row.get::<_, String>(4)),
            ],
            Vec::new(),
        ),
        Table::Tickets | Table::Pending => {
            let hash: Vec<u8> = row.get(0);
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            (vec![Value::from(hex)], hash)
        }
        Table::Meta => (
            vec![Value::from(row.get::<_, String>(0))],
            KEY_CHECK_KEY.to_vec(),
        ),
    };
    Row {
        pk,
        key,
        rec: row.get(walk(t).pk.len()),
    }
}

/// The primary key values of a row as query parameters.
fn params(t: Table, pk: &[serde_json::Value]) -> StoreResult<Vec<Param>> {
    let bad = || StoreError::Corrupt {
        record: "meta/reseal".into(),
        reason: "the cursor does not fit its table".into(),
    };
    let cols = walk(t).pk;
    if pk.len() != cols.len() {
        return Err(bad());
    }
    pk.iter()
        .zip(cols)
        .map(|(v, col)| -> StoreResult<Param> {
            Ok(match *col {
                "incarnation" | "generation" => Box::new(v.as_i64().ok_or_else(bad)?),
                "hash" => {
                    let hex = v.as_str().ok_or_else(bad)?;
                    let bytes: Option<Vec<u8>> = (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                        .collect();
                    Box::new(bytes.ok_or_else(bad)?)
                }
                _ => Box::new(v.as_str().ok_or_else(bad)?.to_owned()),
            })
        })
        .collect()
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `(a, b) = ($n, $n+1)` or `> (...)` over the primary key, parameters from `$first`.
fn pk_cond(w: &Walk, op: &str, first: usize) -> String {
    let ph: Vec<String> = (0..w.pk.len()).map(|i| format!("${}", first + i)).collect();
    format!("({}) {op} ({})", w.pk.join(", "), ph.join(", "))
}

fn only_key_check(t: Table) -> &'static str {
    if t == Table::Meta {
        " AND k = 'key-check'"
    } else {
        ""
    }
}

fn corrupt_progress(reason: String) -> StoreError {
    StoreError::Corrupt {
        record: "meta/reseal".into(),
        reason,
    }
}

fn progress_text(p: &ResealProgress) -> StoreResult<String> {
    serde_json::to_string(p)
        .map_err(|e| StoreError::Io(format!("encoding the re-seal progress: {e}")))
}

impl PgStore {
    pub(super) async fn seal_usage_rows(&self) -> StoreResult<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let mut out = BTreeMap::new();
        for t in Table::ALL {
            let w = walk(t);
            let sql = format!(
                "SELECT {}, rec FROM {} WHERE true{}",
                w.pk.join(", "),
                w.table,
                only_key_check(t)
            );
            for row in client.query(&sql, &[]).await.map_err(pg)? {
                let row = read_row(t, &row);
                for kid in kids(t, &row.key, row.rec.as_bytes(), &self.key)? {
                    *out.entry(kid).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn reseal_progress_row(&self) -> StoreResult<Option<ResealProgress>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT rec FROM meta WHERE k = 'reseal'", &[])
            .await
            .map_err(pg)?;
        row.map(|r| {
            serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| corrupt_progress(e.to_string()))
        })
        .transpose()
    }

    pub(super) async fn start_reseal_row(&self, target: &str) -> StoreResult<ResealProgress> {
        let client = self.client().await?;
        let mut total = 0u64;
        for t in Table::ALL {
            let w = walk(t);
            let sql = format!(
                "SELECT count(*) FROM {} WHERE true{}",
                w.table,
                only_key_check(t)
            );
            let n: i64 = client.query_one(&sql, &[]).await.map_err(pg)?.get(0);
            total += u64::try_from(n).unwrap_or(0);
        }
        let p = ResealProgress::start(target, total, self.clock.now()?);
        client
            .execute(
                "INSERT INTO meta (k, rec) VALUES ('reseal', $1) \
                 ON CONFLICT (k) DO UPDATE SET rec = EXCLUDED.rec",
                &[&progress_text(&p)?],
            )
            .await
            .map_err(pg)?;
        Ok(p)
    }

    pub(super) async fn reseal_batch_rows(
        &self,
        limit: usize,
        owner: &str,
    ) -> StoreResult<Option<ResealProgress>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt("SELECT rec FROM meta WHERE k = 'reseal' FOR UPDATE", &[])
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let mut p: ResealProgress = serde_json::from_str(row.get::<_, &str>(0))
            .map_err(|e| corrupt_progress(e.to_string()))?;
        let Some(t) = p.current() else {
            return Ok(None);
        };
        let now = self.clock.now()?;
        if !p.begin_batch(owner, now, &self.key.sealing_kid())? {
            return Ok(Some(p));
        }
        let w = walk(t);
        let limit = limit.max(1);
        let after: Option<Vec<serde_json::Value>> = p
            .cursor_bytes()
            .map(|b| serde_json::from_slice(&b).map_err(|e| corrupt_progress(e.to_string())))
            .transpose()?;
        let (cond, args) = match &after {
            Some(pk) => (pk_cond(&w, ">", 1), params(t, pk)?),
            None => ("true".to_owned(), Vec::new()),
        };
        let sql = format!(
            "SELECT {cols}, rec FROM {table} WHERE {cond}{only} ORDER BY {cols} LIMIT {limit}",
            cols = w.pk.join(", "),
            table = w.table,
            only = only_key_check(t),
        );
        let rows: Vec<Row> = tx
            .query(&sql, &refs(&args))
            .await
            .map_err(pg)?
            .iter()
            .map(|r| read_row(t, r))
            .collect();
        let update = format!(
            "UPDATE {} SET rec = $1 WHERE {} AND rec = $2",
            w.table,
            pk_cond(&w, "=", 3)
        );
        let mut written = 0;
        for row in &rows {
            let Some(new) = reseal(t, &row.key, row.rec.as_bytes(), &self.key)? else {
                continue;
            };
            let new = String::from_utf8(new).map_err(|e| StoreError::Io(e.to_string()))?;
            let mut args: Vec<Param> = vec![Box::new(new), Box::new(row.rec.clone())];
            args.extend(params(t, &row.pk)?);
            written += tx.execute(&update, &refs(&args)).await.map_err(pg)?;
        }
        let last = rows
            .last()
            .map(|r| serde_json::to_vec(&r.pk).unwrap_or_default());
        p.advance(
            rows.len() as u64,
            written,
            last.as_deref(),
            rows.len() < limit,
            now,
        );
        tx.execute(
            "UPDATE meta SET rec = $1 WHERE k = 'reseal'",
            &[&progress_text(&p)?],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(p))
    }
}
