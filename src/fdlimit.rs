//! The process's open-file limit. Every connection is a file descriptor, and running out of
//! them on one listener (the web listener under a flood) stops every other listener from
//! accepting too. At start, `serve` raises the soft `RLIMIT_NOFILE` to the hard limit and warns
//! when even that is below twice the connection caps (client and upstream side of each proxy
//! connection, plus the web and relay listeners).

/// The soft and hard open-file limits after raising the soft one to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the most the soft limit can be raised to without privileges).
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit (on macOS, to `OPEN_MAX` when the hard
/// limit is unlimited, as the kernel refuses more). Returns the limits in force.
pub fn raise() -> std::io::Result<FileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unused_mut)]
    let mut target = lim.rlim_max;
    #[cfg(target_os = "macos")]
    if target == libc::RLIM_INFINITY {
        target = libc::OPEN_MAX as libc::rlim_t;
    }
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    // `rlim_t` is not 64 bits on every platform.
    #[allow(clippy::unnecessary_cast)]
    Ok(FileLimit {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

/// File descriptors the connection caps can take: twice their sum (a proxied connection has
/// a client and an upstream side; the margin covers the store, logs and listeners).
pub fn wanted(connection_caps: usize) -> u64 {
    (connection_caps as u64).saturating_mul(2)
}

/// Raises the limit and logs it; warns when it is below [`wanted`] for `connection_caps`.
pub fn raise_and_check(connection_caps: usize) {
    match raise() {
        Ok(limit) if limit.soft < wanted(connection_caps) => tracing::warn!(
            soft = limit.soft,
            hard = limit.hard,
            wanted = wanted(connection_caps),
            "the open-file limit is below twice the connection caps (--max-connections + \
             --web-max-connections + relay): a flood can exhaust file descriptors before the \
             caps apply; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower the caps"
        ),
        Ok(limit) => tracing::debug!(soft = limit.soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_is_raised_to_the_hard_limit() {
        let limit = raise().unwrap();
        assert!(limit.soft <= limit.hard);
        #[cfg(target_os = "linux")]
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(wanted(10_000 + 1024 + 256), 22_560);
    }
}
