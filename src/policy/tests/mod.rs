//! Tests of parsing, loading and matching across the policy modules (host normalization and
//! the watcher have their own, next to the code), split by topic.

mod decide;
mod limits;
mod limits_files;
mod load;
mod matching;
mod parse;
mod reach;
mod report;
mod set;

use super::*;

pub(super) fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

pub(super) fn set(files: &[(&str, &str)]) -> PolicySet {
    match PolicySet::from_sources(&sources(files)) {
        Ok(set) => set,
        Err(errors) => panic!("fixture does not load: {errors:#?}"),
    }
}

/// A policy file with one policy of one allow rule: `name`, `route` and `hosts`, starting with
/// an empty line so its `[[policy]]` is on line 2 and `hosts` on line 6.
pub(super) fn allow_policy(name: &str, route: &str, hosts: &[&str]) -> String {
    format!(
        "\n[[policy]]\nname = {name:?}\nroute = {route:?}\n  [[policy.allow]]\n  hosts = {hosts:?}\n"
    )
}

pub(super) fn host(s: &str) -> Host {
    normalize_host(s).unwrap_or_else(|e| panic!("{e}"))
}
