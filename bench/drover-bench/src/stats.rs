//! Small number helpers of the suite: percentiles of latency samples and figures written the
//! way the results table shows them. No IO.

use std::time::Duration;

/// The `q` quantile (0 < q <= 1) of `samples` by the nearest-rank method; `None` when empty.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let n = v.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Milliseconds with a precision that suits their size.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 1000.0 {
        format!("{v:.0} ms")
    } else {
        format!("{} ms", thousands(v))
    }
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU seconds this machine's cores have spent busy since boot, all cores summed (every state
/// of `/proc/stat`'s first line but idle and iowait), and how many cores it has.
fn machine_busy_seconds() -> Option<(f64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    if ticks.len() < 5 {
        return None;
    }
    let busy = ticks.iter().sum::<u64>() - ticks[3] - ticks[4];
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (hz > 0).then(|| (busy as f64 / hz as f64, cores))
}

/// The machine's and a server's CPU from a start to the end of a window.
pub struct CpuMeter {
    machine: Option<(f64, usize)>,
    server: Option<f64>,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(server: &crate::server::Server) -> CpuMeter {
        CpuMeter {
            machine: machine_busy_seconds(),
            server: server.cpu_seconds(),
            start: std::time::Instant::now(),
        }
    }

    /// The window's CPU per item (`n` of them, each a `unit`): the whole machine's (servers,
    /// database or broker, load generator, kernel), how busy its cores were, and the server's
    /// own.
    pub fn note(&self, server: &crate::server::Server, n: u64, unit: &str) -> String {
        let window = self.start.elapsed().as_secs_f64();
        let per_item = |secs: f64| secs / n.max(1) as f64 * 1e6;
        let mut note = String::new();
        if let (Some((before, cores)), Some((after, _))) = (self.machine, machine_busy_seconds()) {
            let busy = (after - before) / (window * cores as f64) * 100.0;
            note.push_str(&format!(
                "; machine {:.0} µs of CPU a {unit}, its {cores} cores {busy:.0} % busy",
                per_item(after - before)
            ));
        }
        if let (Some(before), Some(after)) = (self.server, server.cpu_seconds()) {
            note.push_str(&format!(
                "; server {:.0} µs a {unit}",
                per_item(after - before)
            ));
        }
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&s[..1], 0.99), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn figures_read_like_the_table() {
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(fmt_ms(1.234), "1.23 ms");
        assert_eq!(fmt_ms(7012.0), "7,012 ms");
    }
}
