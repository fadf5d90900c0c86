//! Reading a child's memory from `/proc` (Linux only).

use std::path::Path;

/// Memory figures of a process, in KiB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size.
    pub hwm_kib: u64,
    /// Of the resident set, anonymous memory (heap, stacks).
    pub anon_kib: u64,
    /// Of the resident set, pages of mapped files (the executable's code and data).
    pub file_kib: u64,
}

/// How many generations below this process [`child_running`] looks: a child, or the process a
/// launcher script (a profiler's, qemu's shim) started.
const MAX_GENERATIONS: usize = 4;

/// The pid of a descendant of this process (a child, or a launcher's child) whose executable is
/// `exe`.
pub fn child_running(exe: &Path) -> Option<u32> {
    let wanted = std::fs::canonicalize(exe).ok()?;
    let me = std::process::id();
    let descends = |pid: u32| {
        let mut at = pid;
        for _ in 0..MAX_GENERATIONS {
            match parent_of(at) {
                Some(p) if p == me => return true,
                Some(p) if p > 1 => at = p,
                _ => return false,
            }
        }
        false
    };
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == wanted)
                && descends(*pid)
        })
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`, after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS`, `VmHWM`, `RssAnon` and `RssFile` of `pid`.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        assert!(m.anon_kib > 0 && m.file_kib > 0 && m.anon_kib + m.file_kib <= m.rss_kib);
    }
}
