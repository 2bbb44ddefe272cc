//! The machine's figures for hello and heartbeats: cores, memory, CPU load, host name, and the
//! address other machines reach this one at. Reads the operating system; decides nothing.

use std::net::{IpAddr, UdpSocket};
use sysinfo::System;

pub struct Machine {
    /// `None` where the operating system's figures cannot be read: the agent still works, it
    /// just reports no load or memory.
    system: Option<System>,
}

/// Static facts sent once, with hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub cores: i64,
    pub memory_bytes: Option<i64>,
    pub hostname: Option<String>,
}

/// Live figures sent with each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Busy share of all cores since the previous reading, in percent (the contract's `cpuLoad`).
    pub cpu_load: f64,
    pub free_memory_bytes: i64,
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Machine {
    pub fn new() -> Self {
        let system = System::new().ok().map(|mut system| {
            // CPU usage is a difference between two readings: take the first one now.
            system.refresh_cpu_usage();
            system.refresh_memory();
            system
        });
        Machine { system }
    }

    pub fn facts(&self) -> Facts {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Facts {
            cores: i64::try_from(cores).unwrap_or(1),
            memory_bytes: self.system.as_ref().map(|s| bytes(s.total_memory())),
            hostname: System::host_name().ok(),
        }
    }

    pub fn figures(&mut self) -> Option<Figures> {
        let system = self.system.as_mut()?;
        system.refresh_cpu_usage();
        system.refresh_memory();
        Some(Figures {
            cpu_load: f64::from(system.global_cpu_usage()),
            free_memory_bytes: bytes(system.available_memory()),
        })
    }
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

/// The local address used to reach `host:port`: the one the server sees. A UDP "connection"
/// only picks a route; no packet is sent.
pub fn local_address_towards(host: &str, port: u16) -> Option<IpAddr> {
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_reports_plausible_figures() {
        let mut m = Machine::new();
        let facts = m.facts();
        assert!(facts.cores >= 1);
        let memory = facts.memory_bytes.unwrap();
        assert!(memory > 0);
        let f = m.figures().unwrap();
        assert!((0.0..=100.0).contains(&f.cpu_load), "{f:?}");
        assert!(f.free_memory_bytes > 0 && f.free_memory_bytes <= memory);
    }

    #[test]
    fn the_route_to_loopback_is_loopback() {
        let ip = local_address_towards("127.0.0.1", 9).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
