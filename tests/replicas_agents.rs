//! Agents on every replica (issue 14), when `TOLLGATE_TEST_POSTGRES` names a database
//! (`.ci/run` starts one; without it the test prints that it was skipped): 3 replicas on one
//! PostgreSQL, 2 agent processes given one relay URL → a session from each agent on each
//! replica; a 4th replica started gets both; a replica stopped is dropped by both; requests
//! through the agent route succeed on every replica. The measured times are printed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::agent::{echo_through, free_port, Agent, KEEPALIVE};
use common::policies::AGENT_LOOPBACK as POLICY;
use common::postgres::{fresh_database, replica_dir};
use common::*;

/// One replica: the process and its relay address.
struct Replica {
    tg: Tollgate,
    relay: SocketAddr,
}

/// Replica flags: the shared store, a relay on a fixed port, short keep-alives.
fn replica_args(url: &str, relay: SocketAddr) -> Vec<String> {
    [
        "--store",
        url,
        "--relay-listen",
        &relay.to_string(),
        "--relay-keepalive",
        KEEPALIVE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts a replica; the first makes the keys, the others copy them from `first`.
fn start_replica(url: &str, first: Option<&Tollgate>) -> Replica {
    let relay: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = replica_args(url, relay);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tg = match first {
        None => Tollgate::start(POLICY, &args),
        Some(first) => Tollgate::start_in(replica_dir(&first.data, POLICY), &args),
    };
    Replica { tg, relay }
}

/// The agent processes `GET /v1/agents` lists on `r` (ID and instance).
async fn listed(r: &Replica) -> Vec<(String, String)> {
    let resp = r.tg.operator_get("/v1/agents").await;
    if resp.status != 200 {
        return vec![];
    }
    let body = resp.json();
    let agents = body["agents"].as_array().cloned().unwrap_or_default();
    agents
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_string(),
                a["instance"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until every replica in `rs` lists `n` agent processes; returns how long it took.
async fn all_list(rs: &[&Replica], n: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let ok = wait_until(limit, async || {
        for r in rs {
            if listed(r).await.len() != n {
                return false;
            }
        }
        true
    })
    .await;
    ok.then(|| start.elapsed())
}

/// Whether the agent logged that it left the replica at `relay`.
fn left(agent: &Agent, relay: SocketAddr) -> bool {
    let url = format!("https://{relay}");
    agent.logs.lock().unwrap().iter().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["message"] == "leaving a replica" && v["relay"] == url.as_str())
    })
}

/// A tunnel through the agent route of every replica in `rs` echoes.
async fn route_works_on(rs: &[&Replica], echo: SocketAddr) {
    for r in rs {
        let auth = r.tg.bearer("acme", "alice");
        echo_through(r.tg.proxy, &auth, &echo.to_string(), b"via the agent")
            .await
            .unwrap_or_else(|e| panic!("through replica {}: {e}\n{}", r.relay, r.tg.logs()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_keep_a_session_to_every_replica() {
    let Some((url, _db)) = fresh_database("agents").await else {
        return;
    };
    let a = start_replica(&url, None);
    let b = start_replica(&url, Some(&a.tg));
    let c = start_replica(&url, Some(&a.tg));
    let echo = tcp_echo().await;

    // Both agents are given replica A's relay only.
    let agent_args = ["--keepalive", KEEPALIVE, "--connections", "1"];
    let start = Instant::now();
    let agents: Vec<Agent> = (0..2)
        .map(|_| Agent::start(&a.tg, a.relay, "onprem-1", &["127.0.0.0/8"], &agent_args))
        .collect();
    let logs = |agents: &[Agent]| {
        agents
            .iter()
            .map(|x| x.logs())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let took = all_list(&[&a, &b, &c], 2, Duration::from_secs(20)).await;
    let took =
        took.unwrap_or_else(|| panic!("not 2 agents on each of 3 replicas\n{}", logs(&agents)));
    eprintln!(
        "replicas_agents: 2 agents x 3 replicas: 6 sessions in {} ms (from agent start)",
        start.elapsed().as_millis()
    );
    assert!(took < Duration::from_secs(5), "6 sessions took {took:?}");
    route_works_on(&[&a, &b, &c], echo).await;

    // A 4th replica: both agents attach to it.
    let d = start_replica(&url, Some(&a.tg));
    let started = Instant::now();
    let took = all_list(&[&d], 2, Duration::from_secs(20)).await;
    let took = took.unwrap_or_else(|| panic!("the 4th replica got no agents\n{}", logs(&agents)));
    eprintln!(
        "replicas_agents: 4th replica: both agents attached in {} ms (from its start)",
        took.as_millis()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    route_works_on(&[&d], echo).await;

    // B stops (SIGTERM): both agents leave it; the others keep both agents.
    b.tg.signal(libc::SIGTERM);
    let stopped = Instant::now();
    let ok = wait_until(Duration::from_secs(20), async || {
        agents.iter().all(|x| left(x, b.relay))
    })
    .await;
    assert!(
        ok,
        "the agents did not drop the stopped replica\n{}",
        logs(&agents)
    );
    eprintln!(
        "replicas_agents: replica stopped: both agents dropped it in {} ms",
        stopped.elapsed().as_millis()
    );
    assert!(all_list(&[&a, &c, &d], 2, Duration::from_secs(5))
        .await
        .is_some());
    route_works_on(&[&a, &c, &d], echo).await;
}
