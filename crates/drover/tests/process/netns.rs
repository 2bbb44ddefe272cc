//! Network namespaces a test makes for itself, each linked to the test's own namespace by a
//! veth pair, so that processes started in them talk to the test (and to a database it runs)
//! over links the test can cut.
//!
//! Host `i` of a [`Net`] is the namespace `dv<pid>-<i>`, at `10.<S>.<i>.2`, reaching the test's
//! namespace at `10.<S>.<i>.1` (`S` derived from the test process's id, so runs side by side do
//! not collide). A cut drops packets (`iptables -j DROP` inside the host's namespace), as a
//! real partition does: nothing is reset, peers just stop hearing. Dropping the [`Net`] deletes
//! the namespaces and links, also when the test fails. Traffic never leaves what it made.
//!
//! Needs root, `ip` and `iptables`; `cfg(missing_netns)` marks the tests that use it otherwise.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub struct Net {
    hosts: Vec<Host>,
}

/// One namespace and its link.
pub struct Host {
    pub namespace: String,
    /// This host's address, inside its namespace.
    pub address: Ipv4Addr,
    /// The test's end of the link: what this host dials to reach the test's namespace.
    pub gateway: Ipv4Addr,
    /// The link's name in the test's namespace.
    link: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// `n` hosts, each in its own namespace, linked to the test's namespace.
    pub fn create(n: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let subnet = 100 + (pid % 100) as u8;
        let mut net = Net { hosts: Vec::new() };
        for i in 0..n {
            let host = Host {
                namespace: format!("dv{pid}-{i}"),
                address: Ipv4Addr::new(10, subnet, i as u8, 2),
                gateway: Ipv4Addr::new(10, subnet, i as u8, 1),
                link: format!("dv{pid}r{i}"),
            };
            let inside = format!("dv{pid}n{i}");
            let (ns, link) = (host.namespace.clone(), host.link.clone());
            // Pushed first so that Drop removes what was made even if a step below fails.
            net.hosts.push(host);
            let h = &net.hosts[i];
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["addr", "add", &format!("{}/24", h.gateway), "dev", &link])?;
            ip(&["link", "set", &link, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", h.address),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Host `i` stops hearing TCP port `port` of the test's namespace, both ways: its packets
    /// to that port and the answers from it are dropped.
    pub fn cut_port(&self, i: usize, port: u16) -> Result<(), String> {
        let h = &self.hosts[i];
        let (to, port) = (h.gateway.to_string(), port.to_string());
        for rule in [
            ["OUTPUT", "-d", &to, "--dport", &port],
            ["INPUT", "-s", &to, "--sport", &port],
        ] {
            run(Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &h.namespace,
                    "iptables",
                    "-A",
                    rule[0],
                    "-p",
                    "tcp",
                ])
                .args(&rule[1..])
                .args(["-j", "DROP"]))?;
        }
        Ok(())
    }

    /// Removes every cut of host `i`.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        let h = &self.hosts[i];
        for chain in ["INPUT", "OUTPUT"] {
            run(Command::new("ip").args(["netns", "exec", &h.namespace, "iptables", "-F", chain]))?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            // Deleting the namespace deletes its end of the pair and with it ours; the link is
            // deleted by name too in case the namespace never got its end.
            let _ = ip(&["netns", "del", &h.namespace]);
            let _ = ip(&["link", "del", &h.link]);
        }
    }
}
