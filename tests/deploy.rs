//! The files in `deploy/` and the examples in the docs, checked against the real thing:
//! `deploy/tollgate.toml` loads with the real config loader and names every key; the systemd
//! units pass `systemd-analyze verify` and keep their hardening; the container file is
//! multi-stage, non-root, with a health check on a real endpoint; the Kubernetes manifests
//! parse (Python's `yaml`) and their probes, ports and policies fit a real tollgate; the app
//! examples of docs/apps.md validate against its policy. Tools that are missing (systemd,
//! Python `yaml`) skip their test with a printed notice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tollgate::config::serve::FileConfig;
use tollgate::config::{Config, ServeOverrides};
use tollgate::policy::PolicySet;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_example_config_loads_with_the_real_loader() {
    let config = Config::resolve(&ServeOverrides {
        config: Some(repo("deploy/tollgate.toml")),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("deploy/tollgate.toml: {e}"));
    assert_eq!(config.proxy_listen.to_string(), "0.0.0.0:3128");
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://tollgate.example.com")
    );
    assert_eq!(config.data_dir, Path::new("/var/lib/tollgate"));
}

/// Every key `FileConfig` accepts, as its own "unknown field" error lists them.
fn file_config_keys() -> BTreeSet<String> {
    let err = toml::from_str::<FileConfig>("__probe__ = 1")
        .expect_err("an unknown key is refused")
        .to_string();
    let expected = err
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in: {err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_example_config_names_every_key_and_each_commented_one_parses() {
    let text = read("deploy/tollgate.toml");
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim();
        let Some((key, _)) = bare.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        // The line alone, uncommented, is a valid setting of that key.
        toml::from_str::<FileConfig>(bare)
            .unwrap_or_else(|e| panic!("deploy/tollgate.toml: {bare:?}: {e}"));
        named.insert(key.to_string());
    }
    let keys = file_config_keys();
    assert!(keys.len() > 30, "{keys:?}");
    let missing: Vec<_> = keys.difference(&named).collect();
    assert!(missing.is_empty(), "deploy/tollgate.toml lacks {missing:?}");
}

/// A unit file copied to a temporary directory with `ExecStart` pointing at the built binary
/// (verify checks the executable exists).
fn unit_copy(dir: &Path, name: &str) -> PathBuf {
    let text = read(&format!("deploy/systemd/{name}"));
    assert!(text.contains("/usr/local/bin/tollgate "), "{name}");
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/tollgate ", &format!("{} ", common::bin())),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_units_verify_and_stay_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: systemd-analyze is not installed (Debian package systemd; .ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["tollgate.service", "tollgate-agent.service"] {
        let text = read(&format!("deploy/systemd/{name}"));
        for directive in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "StateDirectory=",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(directive), "{name} lacks {directive}");
        }
        let unit = unit_copy(dir.path(), name);
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("Failed to") && stderr.contains("bus") {
            println!("SKIPPED: systemd-analyze verify cannot run here: {stderr}");
            return;
        }
        assert!(out.status.success(), "{name}: {stderr}");
        // Unknown or malformed directives are only warnings: none may name the unit.
        let complaints: Vec<_> = stderr.lines().filter(|l| l.contains(name)).collect();
        assert!(complaints.is_empty(), "{name}: {complaints:?}");
        // The exposure score (systemd 250 and later can compute it offline).
        let sec = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&sec.stdout);
        match text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
        {
            Some(rest) => {
                let score: f64 = rest
                    .split(": ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10.0);
                println!("{name}: systemd exposure {score}");
                assert!(score <= 2.0, "{name}: exposure {score}\n{text}");
            }
            None => println!("{name}: no offline security score from this systemd"),
        }
    }
}

/// `KEY=VALUE` pairs of the container file's `ENV` instructions.
fn dockerfile_env(text: &str) -> BTreeMap<String, String> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_container_file_is_multi_stage_non_root_with_a_real_health_check() {
    let text = read("deploy/Dockerfile");
    let stages: Vec<_> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let last = text.rfind("\nFROM ").unwrap();
    let runtime = &text[last..];
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "USER {user}");
    // Everything COPY takes from the build context exists.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<_> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY {src}: not in the repository");
        }
    }
    let env = dockerfile_env(&text);
    let web_port = env["TOLLGATE_WEB_LISTEN"].rsplit(':').next().unwrap();
    let proxy_port = env["TOLLGATE_PROXY_LISTEN"].rsplit(':').next().unwrap();
    let exposed: Vec<&str> = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(exposed.contains(&web_port) && exposed.contains(&proxy_port));
    let health = text.replace("\\\n", " ");
    let health = health
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains(&format!("http://127.0.0.1:{web_port}/healthz")),
        "{health}"
    );
    assert_eq!(env["TOLLGATE_POLICIES"], "/etc/tollgate/policies");
}

/// Every YAML document of `path`, as JSON, through Python's `yaml`; `None` when it is
/// missing (notice printed).
fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            println!(
                "SKIPPED: Python's yaml is missing (Debian python3-yaml; .ci/run installs it)"
            );
            None
        }
        Ok(o) => panic!(
            "{}: not valid YAML: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => {
            println!("SKIPPED: python3 is not installed");
            None
        }
    }
}

/// Every object of the Kubernetes manifests, by kind.
fn manifests() -> Option<BTreeMap<String, Value>> {
    let dir = repo("deploy/kubernetes");
    let mut by_kind = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        for doc in yaml_documents(&path)? {
            let kind = doc["kind"].as_str().unwrap_or("?").to_string();
            by_kind.insert(kind, doc);
        }
    }
    Some(by_kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_fit_a_real_tollgate() {
    let Some(k) = manifests() else { return };
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
    ] {
        assert!(k.contains_key(kind), "no {kind} in deploy/kubernetes");
    }
    let pod = &k["Deployment"]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let env: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let ports: BTreeMap<&str, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    // The named ports are where tollgate listens.
    let listen_port = |var: &str| env[var].rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(ports["web"], listen_port("TOLLGATE_WEB_LISTEN"));
    assert_eq!(ports["proxy"], listen_port("TOLLGATE_PROXY_LISTEN"));
    // The Service targets those ports.
    for p in k["Service"]["spec"]["ports"].as_array().unwrap() {
        let target = p["targetPort"].as_str().unwrap();
        assert!(ports.contains_key(target), "Service targets {target}");
    }
    // Every probe names the web port and a path a real tollgate answers 200 on.
    let tg = common::Tollgate::start("", &[]);
    let mut probes = 0;
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "web", "{probe}");
        let path = get["path"].as_str().unwrap();
        let r = common::consent::Browser::default().get(tg.web, path).await;
        assert_eq!(r.status, 200, "{probe} {path}: {}", r.text());
        probes += 1;
    }
    assert_eq!(probes, 3);
    // The ConfigMap is mounted where TOLLGATE_POLICIES points, and its files load.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volume_at = |path: &str| {
        let name = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))["name"]
            .clone();
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    let policies = volume_at(env["TOLLGATE_POLICIES"]);
    assert_eq!(
        policies["configMap"]["name"],
        k["ConfigMap"]["metadata"]["name"]
    );
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in k["ConfigMap"]["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(file), text.as_str().unwrap()).unwrap();
    }
    let set = PolicySet::load_dir(dir.path())
        .unwrap_or_else(|e| panic!("the ConfigMap's policies: {e:?}"));
    assert!(set.policy_count() >= 1);
    // The Secret holds every key the init container copies and the CA the env names.
    let secret = volume_at("/etc/tollgate/keys");
    assert_eq!(
        secret["secret"]["secretName"],
        k["Secret"]["metadata"]["name"]
    );
    let held: BTreeSet<&str> = k["Secret"]["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let init = pod["initContainers"][0]["command"].to_string();
    for key in ["identity.key", "store.key", "session.key"] {
        assert!(init.contains(key) && held.contains(key), "{key}");
    }
    for var in ["TOLLGATE_CA_CERT", "TOLLGATE_CA_KEY"] {
        let file = env[var].strip_prefix("/etc/tollgate/keys/").unwrap();
        assert!(held.contains(file), "{var}");
    }
    drop(tg);
}

/// The policy of docs/apps.md's provider examples (`oauth-providers`).
fn providers_policy() -> String {
    fenced(&read("docs/apps.md"), "toml")
        .into_iter()
        .find(|b| b.contains("name = \"oauth-providers\""))
        .expect("the providers' policy block in docs/apps.md")
}

#[test]
fn the_provider_examples_in_docs_apps_validate_against_its_policy() {
    let blocks = fenced(&read("docs/apps.md"), "toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), providers_policy()).unwrap();
    let set = PolicySet::load_dir(&dir.path().join("policies")).unwrap();
    let mut checked = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if !block.contains("authorize_url") || block.contains("handshake = \"webhook\"") {
            continue;
        }
        let file = dir.path().join(format!("app{i}.toml"));
        std::fs::write(&file, block).unwrap();
        std::env::set_var("GITHUB_CLIENT_SECRET", "example");
        std::env::set_var("GOOGLE_CLIENT_SECRET", "example");
        let map = tollgate::cli::app::load_app_file(&file).unwrap();
        let app = tollgate::oauth::app::new_app(&map, "acme", &set, &Default::default())
            .unwrap_or_else(|e| panic!("docs/apps.md block {i}: {e:?}"));
        checked.push(app.id.clone());
    }
    assert!(
        checked.contains(&"github".to_string()) && checked.contains(&"google-calendar".to_string()),
        "{checked:?}"
    );
}

/// `(METHOD, path)` of every route under `src/web` that belongs in docs/openapi.yaml: the
/// `/v1/` API and the health endpoints (the consent and sign-in pages are for browsers).
fn source_routes() -> BTreeSet<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo("src/web"), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            // The call's arguments, up to its closing parenthesis.
            let rest = &text[at + ".route(".len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let args = &rest[..end];
            let Some(path) = args.split('"').nth(1) else {
                continue;
            };
            let api =
                path.starts_with("/v1/") || ["/healthz", "/readyz", "/metrics"].contains(&path);
            if !api {
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    routes.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    routes
}

/// A documented path with its parameters replaced by their examples.
fn example_path(path: &str, params: &[Value]) -> String {
    let mut out = path.to_string();
    for p in params {
        if p["in"] == "path" {
            let name = p["name"].as_str().unwrap();
            let example = p["example"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}: {name} has no example"));
            out = out.replace(&format!("{{{name}}}"), example);
        }
    }
    out
}

/// `$ref`s into `components` resolved one level (parameters and responses are written so).
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(spec, |node, key| &node[key]),
        None => v,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_running_server() {
    let Some(docs) = yaml_documents(&repo("docs/openapi.yaml")) else {
        return;
    };
    let spec = &docs[0];
    let paths = spec["paths"].as_object().unwrap();
    // Every route the server has is documented, and nothing else is.
    let mut documented = BTreeSet::new();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            let mut params: Vec<Value> = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| resolve(spec, p).clone())
                .collect();
            params.retain(|p| p["in"] == "path");
            operations.push((
                method.to_uppercase(),
                path.clone(),
                example_path(path, &params),
                op.clone(),
            ));
        }
    }
    assert_eq!(
        documented,
        source_routes(),
        "docs/openapi.yaml and the routes in src/web differ"
    );
    // Every operation answers a documented status on a real tollgate, and, called as its
    // role with its example, a success.
    // With docs/apps.md's policy for the providers, which the example app names.
    let tg = common::Tollgate::start(&providers_policy(), &[]);
    let admin = tg.admin_token("acme", "root");
    let operator = tg.operator_token();
    let caller = tg.token("acme", "alice");
    // Creations first, deletions last, the app itself after its authorizations.
    operations.sort_by_key(|(method, path, _, _)| match method.as_str() {
        "POST" if path == "/v1/apps" => (0, 0),
        "DELETE" => (2, usize::MAX - path.len()),
        _ => (1, 0),
    });
    let mut seen = Vec::new();
    for (method, path, target, op) in &operations {
        let token = match op["x-tollgate-role"].as_str() {
            Some("admin") => Some(&admin),
            Some("operator") => Some(&operator),
            Some("caller") => Some(&caller),
            _ => None,
        };
        let body = &op["requestBody"]["content"]["application/json"]["example"];
        let mut req = hyper::Request::builder()
            .method(method.as_str())
            .uri(target.as_str())
            .header("host", tg.web.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let bytes = if body.is_null() {
            bytes::Bytes::new()
        } else {
            req = req.header("content-type", "application/json");
            bytes::Bytes::from(body.to_string())
        };
        let r = common::send_one(tg.web, req.body(http_body_util::Full::new(bytes)).unwrap()).await;
        let status = r.status.to_string();
        assert!(
            op["responses"].get(&status).is_some(),
            "{method} {path}: {status} is not documented: {}",
            r.text()
        );
        // Nobody consented on this instance: revoking alice's authorization finds none; and
        // the example key id names no key of this instance's ring.
        let expected_miss = (op["operationId"] == "revokeAuthorization"
            || op["operationId"] == "retireKey")
            && r.status == 404;
        assert!(
            r.status < 300 || expected_miss,
            "{method} {target}: {status} {}",
            r.text()
        );
        // Without a token, a protected operation answers a documented 401.
        if token.is_some() {
            let bare = common::send_one(
                tg.web,
                hyper::Request::builder()
                    .method(method.as_str())
                    .uri(target.as_str())
                    .header("host", tg.web.to_string())
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await;
            assert_eq!(bare.status, 401, "{method} {path} without a token");
            assert!(op["responses"].get("401").is_some(), "{method} {path}");
        }
        seen.push(format!("{method} {path} {status}"));
    }
    println!("{}", seen.join("\n"));
    assert!(seen.len() >= 15, "{seen:?}");
    drop(tg);
}

/// The fenced blocks of `lang` in a Markdown file.
fn fenced(markdown: &str, lang: &str) -> Vec<String> {
    markdown
        .split(&format!("```{lang}\n"))
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// The block of docs/clients.md fenced as `lang` that contains `needle`, written to a file
/// in `dir`.
fn clients_block(dir: &Path, lang: &str, needle: &str) -> PathBuf {
    let block = fenced(&read("docs/clients.md"), lang)
        .into_iter()
        .find(|b| b.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} block in docs/clients.md"));
    let file = dir.join("block");
    std::fs::write(&file, block).unwrap();
    file
}

#[test]
fn the_nftables_example_in_docs_clients_parses() {
    let dir = tempfile::tempdir().unwrap();
    let file = clients_block(dir.path(), "", "table inet");
    // `nft -c` parses and checks the ruleset without applying it.
    let out = match Command::new("nft").arg("-c").arg("-f").arg(&file).output() {
        Ok(o) => o,
        Err(_) => {
            println!("SKIPPED: nft is not installed (Debian nftables; .ci/run installs it)");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation not permitted") {
        println!("SKIPPED: nft -c needs CAP_NET_ADMIN here: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "docs/clients.md's nftables example: {stderr}"
    );
}

#[test]
fn the_network_policy_in_docs_clients_fits_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let file = clients_block(dir.path(), "yaml", "kind: NetworkPolicy");
    let (Some(np), Some(k)) = (yaml_documents(&file), manifests()) else {
        return;
    };
    let np = &np[0];
    assert_eq!(np["spec"]["policyTypes"][0], "Egress");
    let to_tollgate = &np["spec"]["egress"][0];
    let peer = &to_tollgate["to"][0];
    // The peer is tollgate's namespace and pods, as deploy/kubernetes names and labels them.
    assert_eq!(
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        k["Namespace"]["metadata"]["name"]
    );
    let pod_labels = &k["Deployment"]["spec"]["template"]["metadata"]["labels"];
    for (label, value) in peer["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[label], value, "pod label {label}");
    }
    let proxy_port = k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "proxy")
        .unwrap()["containerPort"]
        .clone();
    let ports: Vec<&Value> = to_tollgate["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, vec![&proxy_port], "only the proxy port");
}
