//! Policy decision cost on a large set: 10 000 host rules (half exact names, half `*.suffix`)
//! and 10 000 CIDR rules (IPv4 and IPv6, prefix lengths 12 to 32 / 32 to 64) over 200
//! policies, some of them org-scoped.
//!
//! `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`
//!
//! A second set gives every host rule method and path limits: 20 000 rules over the same
//! 10 000 names, two per name (a `read_only` rule with two path globs, then a `POST` rule with
//! one), so a request may be refused by the first and allowed by the second. Its decisions
//! include the path normalization the proxy runs first.
//!
//! The `cpu_` groups measure the calling thread's CPU time instead of wall time, so a figure
//! taken while other processes share the machine stays comparable.
//!
//! Also measured, to back the choices in `src/policy/index.rs`: host normalization (it runs
//! before every decision), loading the whole set, and globset answering the same suffix
//! question the matcher answers with hash probes.

use std::fmt::Write as _;
use std::hint::black_box;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use globset::{Glob, GlobSetBuilder};
use tollgate::policy::{normalize_host, normalize_path, PolicySet, RequestInfo};

const HOST_RULES: usize = 10_000;
const CIDR_RULES: usize = 10_000;
const POLICIES: usize = 200;

/// A deterministic xorshift generator: reproducible sets without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn exact_host(i: usize) -> String {
    format!("svc{i}.tenant{}.example.com", i % 97)
}

fn suffix(i: usize) -> String {
    format!("zone{i}.example.net")
}

/// One file per 20 policies, each policy with 50 host rules and 50 CIDR rules.
fn sources() -> Vec<(String, String)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per_policy = HOST_RULES / POLICIES;
    let mut files = Vec::new();
    let mut src = String::new();
    for p in 0..POLICIES {
        let orgs = if p.is_multiple_of(4) {
            "orgs = [\"acme\", \"globex\"]\n"
        } else {
            ""
        };
        let _ = write!(
            src,
            "[[policy]]\nname = \"policy-{p}\"\nroute = \"direct\"\n{orgs}"
        );
        for r in 0..per_policy {
            let i = p * per_policy + r;
            let host = if i.is_multiple_of(2) {
                exact_host(i)
            } else {
                format!("*.{}", suffix(i))
            };
            let _ = write!(
                src,
                "  [[policy.allow]]\n  hosts = [\"{host}\"]\n  ports = [443]\n"
            );
        }
        for _ in 0..CIDR_RULES / POLICIES {
            let cidr = if rng.next().is_multiple_of(8) {
                let len = 32 + rng.next() % 33;
                let net = (u128::from(rng.next()) << 64) & (u128::MAX << (128 - len));
                format!("{}/{len}", std::net::Ipv6Addr::from(net))
            } else {
                // From /12: with random /8s every IPv4 address would hit something.
                let len = 12 + rng.next() % 21;
                let net = (rng.next() as u32) & (u32::MAX << (32 - len));
                format!("{}/{len}", std::net::Ipv4Addr::from(net))
            };
            let _ = write!(src, "  [[policy.allow]]\n  cidrs = [\"{cidr}\"]\n");
        }
        if p % 20 == 19 {
            files.push((format!("{:03}.toml", files.len()), std::mem::take(&mut src)));
        }
    }
    files
}

/// The limited set: 200 policies of 100 rules, two per name.
fn limited_sources() -> Vec<(String, String)> {
    let per_policy = HOST_RULES / POLICIES;
    let mut files = Vec::new();
    let mut src = String::new();
    for p in 0..POLICIES {
        let _ = write!(
            src,
            "[[policy]]\nname = \"policy-{p}\"\nroute = \"direct\"\n"
        );
        for r in 0..per_policy {
            let host = exact_host(p * per_policy + r);
            let _ = write!(
                src,
                "  [[policy.allow]]\n  hosts = [\"{host}\"]\n  ports = [443]\n  read_only = true\n  \
                 paths = [\"/repos/*/*/issues\", \"/v{r}/**\"]\n\
                 [[policy.allow]]\n  hosts = [\"{host}\"]\n  ports = [443]\n  methods = [\"POST\"]\n  \
                 paths = [\"/upload/*\"]\n"
            );
        }
        if p % 20 == 19 {
            files.push((format!("{:03}.toml", files.len()), std::mem::take(&mut src)));
        }
    }
    files
}

/// Normalizes `path` and decides the request, as the proxy does for each request.
fn decide_request(
    set: &PolicySet,
    host: &tollgate::policy::Host,
    method: &str,
    path: &str,
) -> bool {
    let normalized = normalize_path(path);
    let info = RequestInfo {
        method,
        path: normalized.as_deref().map_err(|e| *e),
    };
    set.decide_request("acme", host, 443, &info).is_allowed()
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time, it does not
/// count the time the thread waits for a core, so a figure taken on a shared machine is not
/// inflated by the other processes' load.
struct ThreadCpu;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux provides.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_now().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

fn bench_limited<M: Measurement>(c: &mut Criterion<M>) {
    let sources = limited_sources();
    let set = PolicySet::load_from(&sources);
    let host = normalize_host(&exact_host(7_007)).expect("name");
    // (case, method, path, allowed)
    let cases = [
        ("first_rule_hit", "GET", "/repos/acme/widgets/issues", true),
        ("second_rule_hit", "POST", "/upload/report.csv", true),
        ("path_miss", "GET", "/orgs/acme/members", false),
        ("method_miss", "DELETE", "/repos/acme/widgets/issues", false),
        (
            "normalized_hit",
            "GET",
            "/repos/%61cme/./widgets/issues",
            true,
        ),
    ];
    let mut g = c.benchmark_group("decide_request_20k_limited");
    for (name, method, path, allowed) in cases {
        assert_eq!(decide_request(&set, &host, method, path), allowed, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| decide_request(&set, black_box(&host), black_box(method), black_box(path)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("normalize_path");
    g.bench_function("plain", |b| {
        b.iter(|| normalize_path(black_box("/repos/acme/widgets/issues")).is_ok())
    });
    g.bench_function("escapes_and_dots", |b| {
        b.iter(|| normalize_path(black_box("/repos/%61cme/./widgets/x/../issues")).is_ok())
    });
    g.finish();
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("20k_limited_rules", |b| {
        b.iter(|| PolicySet::load_from(black_box(&sources)))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let set = PolicySet::load_from(&sources);

    // A CIDR known to be in the set, from the middle of the last file.
    let last = &sources.last().expect("files").1;
    let cidr_line = last
        .lines()
        .filter(|l| l.contains("cidrs") && !l.contains(':'))
        .nth(500)
        .expect("an IPv4 CIDR rule");
    let net: ipnet::Ipv4Net = cidr_line
        .split('"')
        .nth(1)
        .expect("quoted")
        .parse()
        .expect("cidr");
    let cidr_hit =
        normalize_host(&net.hosts().next().unwrap_or(net.addr()).to_string()).expect("ip");

    let exact_hit = normalize_host(&exact_host(7_000)).expect("name");
    let suffix_hit = normalize_host(&format!("api.eu.{}", suffix(7_001))).expect("name");
    let miss_name = normalize_host("www.nothing-here.example.org").expect("name");
    let miss_ipv6 = normalize_host("[2001:db8::1]").expect("ip");
    // An IPv4 address no CIDR covers: every prefix length is probed.
    let miss_ipv4 = (0u32..)
        .map(|i| normalize_host(&std::net::Ipv4Addr::from(i.wrapping_mul(0x9e37_79b9)).to_string()))
        .map(|h| h.expect("ip"))
        .find(|h| !set.decide("acme", h, 443).is_allowed())
        .expect("an uncovered address");
    for (what, host) in [
        ("exact", &exact_hit),
        ("suffix", &suffix_hit),
        ("cidr", &cidr_hit),
    ] {
        let d = set.decide("acme", host, 443);
        assert!(d.is_allowed(), "{what} should hit: {host} {d:?}");
    }
    for host in [&miss_name, &miss_ipv6] {
        assert!(
            !set.decide("acme", host, 443).is_allowed(),
            "{host} should miss"
        );
    }

    let mut g = c.benchmark_group("decide");
    g.bench_function("exact_hit", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&exact_hit), 443))
    });
    g.bench_function("suffix_hit", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&suffix_hit), 443))
    });
    g.bench_function("cidr_hit", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&cidr_hit), 443))
    });
    g.bench_function("miss_name", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&miss_name), 443))
    });
    g.bench_function("miss_ipv4", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&miss_ipv4), 443))
    });
    g.bench_function("miss_ipv6", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&miss_ipv6), 443))
    });
    g.finish();

    let mut g = c.benchmark_group("normalize_host");
    g.bench_function("name", |b| {
        b.iter(|| normalize_host(black_box("API.GitHub.com.")))
    });
    g.bench_function("idn", |b| {
        b.iter(|| normalize_host(black_box("bücher.example")))
    });
    g.bench_function("ipv4_short", |b| {
        b.iter(|| normalize_host(black_box("0x7f.1")))
    });
    g.finish();

    // The same suffix question put to globset: which of the 5 000 `*.suffix` patterns match?
    // Reusing the output Vec keeps allocation out of the measurement; the matcher would
    // still have to rank the matches afterwards.
    let mut builder = GlobSetBuilder::new();
    for i in (1..HOST_RULES).step_by(2) {
        builder.add(Glob::new(&format!("*.{}", suffix(i))).expect("glob"));
    }
    let globs = builder.build().expect("globset");
    let name = suffix_hit.to_string();
    let mut matches = Vec::new();
    globs.matches_into(&name, &mut matches);
    assert_eq!(matches.len(), 1);
    let mut g = c.benchmark_group("globset_baseline");
    g.bench_function("suffix_hit", |b| {
        b.iter(|| {
            globs.matches_into(black_box(name.as_str()), &mut matches);
            matches.len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("20k_rules", |b| {
        b.iter(|| PolicySet::load_from(black_box(&sources)))
    });
    g.finish();
}

/// `from_sources`, failing loudly: a benchmark on a set that did not load measures nothing.
trait LoadFrom {
    fn load_from(sources: &[(String, String)]) -> PolicySet;
}

impl LoadFrom for PolicySet {
    fn load_from(sources: &[(String, String)]) -> PolicySet {
        match PolicySet::from_sources(sources) {
            Ok(set) => set,
            Err(errors) => panic!(
                "benchmark set does not load: {:?}",
                &errors[..errors.len().min(5)]
            ),
        }
    }
}

criterion_group!(benches, bench, bench_limited);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}

/// The plain exact-host decision and the limited set's decisions in thread CPU time.
fn bench_cpu(c: &mut Criterion<ThreadCpu>) {
    let sources = sources();
    let set = PolicySet::load_from(&sources);
    let exact_hit = normalize_host(&exact_host(7_000)).expect("name");
    let mut g = c.benchmark_group("cpu_decide");
    g.bench_function("exact_hit", |b| {
        b.iter(|| set.decide(black_box("acme"), black_box(&exact_hit), 443))
    });
    g.finish();
    let sources = limited_sources();
    let set = PolicySet::load_from(&sources);
    let host = normalize_host(&exact_host(7_007)).expect("name");
    let mut g = c.benchmark_group("cpu_decide_request_20k_limited");
    for (name, method, path) in [
        ("first_rule_hit", "GET", "/repos/acme/widgets/issues"),
        ("path_miss", "GET", "/orgs/acme/members"),
        ("normalized_hit", "GET", "/repos/%61cme/./widgets/issues"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| decide_request(&set, black_box(&host), black_box(method), black_box(path)))
        });
    }
    g.finish();
}
criterion_main!(benches, cpu);
