//! The standard `process_*` metrics of this process, read from `/proc` at each scrape (the
//! names and meanings of Prometheus' process collector): CPU seconds, resident and virtual
//! memory, open and maximum file descriptors, start time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One reading of the process's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: i64,
    pub(crate) virtual_bytes: i64,
    pub(crate) start_time_seconds: f64,
    pub(crate) open_fds: i64,
    pub(crate) max_fds: i64,
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and
/// parentheses: everything up to the last `)` is skipped).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// CPU seconds, virtual and resident bytes, and start time (seconds since boot) from
/// `/proc/self/stat`, given clock ticks per second and the page size.
pub(crate) fn parse_stat(stat: &str, ticks: f64, page: i64) -> Option<(f64, i64, i64, f64)> {
    let f = stat_fields(stat)?;
    // After the name: state(0) … utime(11) stime(12) … starttime(19) vsize(20) rss(21).
    let num = |i: usize| f.get(i)?.parse::<f64>().ok();
    let cpu = (num(11)? + num(12)?) / ticks;
    let start = num(19)? / ticks;
    let vsize = f.get(20)?.parse::<i64>().ok()?;
    let rss = f.get(21)?.parse::<i64>().ok()?;
    Some((cpu, vsize, rss.saturating_mul(page), start))
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
pub(crate) fn parse_btime(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the process's figures now; `None` where `/proc` is not there.
fn read() -> Option<Reading> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = i64::try_from(rustix::param::page_size()).ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (cpu_seconds, virtual_bytes, resident_bytes, since_boot) = parse_stat(&stat, ticks, page)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    Some(Reading {
        cpu_seconds,
        resident_bytes,
        virtual_bytes,
        start_time_seconds: btime + since_boot,
        open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
        max_fds: i64::try_from(max_fds).unwrap_or(i64::MAX),
    })
}

/// The `process_*` metrics, read at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                r.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss
        let line = "42 (kpki (serve) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 987654 321 ...";
        let (cpu, vsize, rss, start) = parse_stat(line, 100.0, 4096).expect("parses");
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
        assert_eq!((vsize, rss), (987_654, 321 * 4096));
        assert!((start - 123.45).abs() < 1e-9, "{start}");
        assert_eq!(parse_stat("no parenthesis", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1", 100.0, 4096), None);
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(parse_btime("cpu 1 2\n"), None);
    }

    #[test]
    fn this_process_is_read() {
        let r = read().expect("/proc is mounted here");
        assert!(r.resident_bytes > 0 && r.open_fds > 0 && r.max_fds >= r.open_fds);
        assert!(r.start_time_seconds > 1_600_000_000.0);
    }
}
