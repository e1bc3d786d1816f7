//! `tollgate keys`: list the identity and session keys and the interception CAs, rotate,
//! retire. With a token (`--token` /
//! `TOLLGATE_TOKEN`, the operator role) through the server's `/v1/keys`; without one offline
//! against the data directory (and its store, where the operation is audited: with a running
//! sled server, go through the server).

use serde_json::Value;

use crate::keys::admin::{Actor, KeyAdmin};

/// `tollgate keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List the identity, session and store keys (active, verifying, retired) and the
    /// interception CAs (signing, pending, trusted, retired): id, state, times; online also how
    /// many records each store key seals and the re-seal's progress.
    List(super::Place),
    /// Add a new key of KIND (`identity`, `session` or `store`) that signs (seals) from a few
    /// seconds on; the previous one keeps verifying until retired (or what it signed
    /// expired). A new store key starts a re-seal of every record. `ca`: a new interception
    /// CA that signs after `--switch-after` (clients must trust it by then:
    /// `tollgate ca export --all`).
    Rotate {
        /// The key to rotate: `identity`, `session`, `store` or `ca`.
        kind: String,
        /// For `ca`: how long the new CA is pending before it signs (e.g. `24h`, `0s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        switch_after: Option<std::time::Duration>,
        #[command(flatten)]
        place: super::Place,
    },
    /// Retire key ID: tokens, agent credentials or sessions it signed are refused from now on.
    Retire {
        /// The key's id (`keys list`).
        id: String,
        #[command(flatten)]
        place: super::Place,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let place = match &cmd {
        KeysCommand::List(p) | KeysCommand::Rotate { place: p, .. } => p,
        KeysCommand::Retire { place: p, .. } => p,
    };
    if place.online() {
        let api = super::app::Api::new(&place.target)?;
        let (method, path) = match &cmd {
            KeysCommand::List(_) => (http::Method::GET, "/v1/keys".to_owned()),
            KeysCommand::Rotate {
                kind, switch_after, ..
            } => {
                let query = switch_after
                    .map(|d| format!("?switch_after={}", d.as_secs()))
                    .unwrap_or_default();
                (http::Method::POST, format!("/v1/keys/{kind}/rotate{query}"))
            }
            KeysCommand::Retire { id, .. } => (http::Method::POST, format!("/v1/keys/{id}/retire")),
        };
        let out = api.call(method, &path, None).await?;
        return print(&cmd, place.target.json, &out);
    }
    if let KeysCommand::List(p) = &cmd {
        let keys_dir = p.data.join("keys");
        let now = crate::clock::Clock::system().now()?;
        let out = serde_json::json!(crate::keys::admin::KeyLists {
            identity: crate::keys::IdentityRing::load(&keys_dir)?.list(now),
            session: crate::keys::SessionRing::load(&keys_dir)?.list(now),
            ca: crate::keys::ca_ring::load_if_present(&crate::keys::ca_ring::ca_dir(&p.data))?
                .map(|ring| crate::keys::ca_ring::list(&ring, now))
                .unwrap_or_default(),
            store: crate::keys::StoreRing::load(&keys_dir)?.list(now),
            store_records: None,
            reseal: None,
        });
        return print(&cmd, p.target.json, &out);
    }
    let store = super::open_store(&place.data, place.store.as_deref()).await?;
    let admin = KeyAdmin::new(
        place.data.join("keys"),
        store.clone(),
        crate::clock::Clock::system(),
        None,
    )
    .with_ca(Some(crate::keys::ca_ring::ca_dir(&place.data)), None);
    let out = match &cmd {
        KeysCommand::Rotate {
            kind,
            switch_after: Some(after),
            ..
        } if kind == "ca" => {
            let kid = admin
                .rotate_ca(&Actor::offline(), Some(after.as_secs()))
                .await?;
            serde_json::json!({ "kind": kind, "kid": kid })
        }
        KeysCommand::Rotate { kind, .. } => {
            let kid = admin.rotate(kind, &Actor::offline()).await?;
            serde_json::json!({ "kind": kind, "kid": kid })
        }
        KeysCommand::Retire { id, .. } => {
            admin.retire(id, &Actor::offline()).await?;
            serde_json::json!({ "kid": id, "retired": true })
        }
        KeysCommand::List(_) => Value::Null,
    };
    store.flush().await?;
    print(&cmd, place.target.json, &out)
}

fn print(cmd: &KeysCommand, json: bool, out: &Value) -> anyhow::Result<()> {
    if json {
        println!("{out}");
        return Ok(());
    }
    match cmd {
        KeysCommand::List(_) => {
            println!(
                "{:<9} {:<18} {:<10} {:<9} {:<21} {:<21} RETIRED",
                "KIND", "KID", "STATE", "ORIGINAL", "CREATED", "SUPERSEDED"
            );
            let kinds = ["identity", "session", "store", "ca"];
            for (kind, k) in kinds.iter().flat_map(|kind| {
                out[kind]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |k| (kind, k))
            }) {
                println!(
                    "{:<9} {:<18} {:<10} {:<9} {:<21} {:<21} {}",
                    kind,
                    k["kid"].as_str().unwrap_or("-"),
                    k["state"].as_str().unwrap_or("-"),
                    if k["original"] == true { "yes" } else { "no" },
                    time(&k["created_at"]),
                    time(&k["superseded_at"]),
                    time(&k["retired_at"]),
                );
            }
            print_store_usage(out);
        }
        KeysCommand::Rotate { kind, .. } if kind == "ca" => println!(
            "rotated: CA {} is pending and signs new leaf certificates after the switch delay; \
             give clients every CA now (`tollgate ca export --all`), retire the old CA once \
             no client needs it (`tollgate keys retire`)",
            out["kid"].as_str().unwrap_or("?")
        ),
        KeysCommand::Rotate { kind, .. } if kind == "store" => println!(
            "rotated: key {} seals from a few seconds on; every record is then re-sealed with it \
             in the background (`tollgate keys list` shows the progress); retire the previous \
             key once nothing uses it",
            out["kid"].as_str().unwrap_or("?")
        ),
        KeysCommand::Rotate { kind, .. } if kind == "session" => println!(
            "rotated: key {} signs new sessions from a few seconds on; the previous key keeps \
             verifying until `tollgate keys retire` (or 8 hours)",
            out["kid"].as_str().unwrap_or("?")
        ),
        KeysCommand::Rotate { .. } => println!(
            "rotated: key {} signs new tokens and agent credentials from a few seconds on; the \
             previous key keeps verifying until `tollgate keys retire` (or 30 days)",
            out["kid"].as_str().unwrap_or("?")
        ),
        KeysCommand::Retire { .. } => println!(
            "retired key {}: what it signed is refused",
            out["kid"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

/// Below the list: how many records each store key seals, and the re-seal's progress.
fn print_store_usage(out: &Value) {
    if let Some(records) = out["store_records"].as_object() {
        for (kid, n) in records {
            println!("store key {kid} seals {n} records");
        }
    }
    let r = &out["reseal"];
    if let (Some(target), Some(scanned), Some(total)) = (
        r["target"].as_str(),
        r["scanned"].as_u64(),
        r["total"].as_u64(),
    ) {
        if r["finished_at"].is_null() {
            println!("re-seal to {target} in progress: {scanned}/{total} records");
        } else {
            println!(
                "re-seal to {target} complete at {} ({} records sealed again)",
                time(&r["finished_at"]),
                r["resealed"]
            );
        }
    }
}

/// Unix seconds as RFC 3339, or `-`.
fn time(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_owned(), crate::clock::rfc3339)
}
