//! Policy file model (STUB).

use std::fmt;

/// One problem found in a policy file, displayed as `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File name relative to the policies directory (or the path given).
    pub file: String,
    /// 1-based line of the offending item (0 when the whole file or directory is at fault).
    pub line: usize,
    /// What is wrong, naming the offending value.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for PolicyError {}
