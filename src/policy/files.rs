//! Reading a policy directory: which files are policy files, in which order, and what could
//! not be read. The first step of a load, before parsing.

use std::fs;
use std::path::Path;

use super::model::PolicyError;

/// What [`read_dir_files`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DirFiles {
    /// `(file name, contents)` of the files that could be read, sorted by name.
    pub sources: Vec<(String, String)>,
    /// Files that could not be read (line 0).
    pub unreadable: Vec<PolicyError>,
    /// Problems with the directory itself (named by its path, line 0).
    pub dir_errors: Vec<PolicyError>,
}

#[cfg(test)]
impl DirFiles {
    pub(super) fn into_errors(self) -> Vec<PolicyError> {
        let mut errors = self.dir_errors;
        errors.extend(self.unreadable);
        errors
    }
}

/// Reads the `*.toml` files of `dir`: `(file name, contents)` for every regular, non-hidden
/// `*.toml` file (editors' lock and swap files are hidden), sorted by name.
pub(crate) fn read_dir_files(dir: &Path) -> DirFiles {
    let dir_err = |message: String| PolicyError {
        file: dir.display().to_string(),
        line: 0,
        message,
    };
    let mut found = DirFiles {
        sources: Vec::new(),
        unreadable: Vec::new(),
        dir_errors: Vec::new(),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            found
                .dir_errors
                .push(dir_err(format!("cannot read the policy directory: {e}")));
            return found;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found
                    .dir_errors
                    .push(dir_err(format!("cannot list the policy directory: {e}")));
                continue;
            }
        };
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            if os_name.as_encoded_bytes().ends_with(b".toml") {
                found
                    .dir_errors
                    .push(dir_err(format!("file name {os_name:?} is not UTF-8")));
            }
            continue;
        };
        if !name.ends_with(".toml") || name.starts_with('.') {
            continue;
        }
        // Follows symlinks (Kubernetes ConfigMap volumes are made of them).
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => names.push(name.to_owned()),
            Ok(_) => {}
            Err(e) => found.unreadable.push(PolicyError {
                file: name.to_owned(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    names.sort();
    for name in names {
        match fs::read_to_string(dir.join(&name)) {
            Ok(src) => found.sources.push((name, src)),
            Err(e) => found.unreadable.push(PolicyError {
                file: name,
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    found
}
