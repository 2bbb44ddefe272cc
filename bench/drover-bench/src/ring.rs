//! `drover-bench ring`: the placement ring of N nodes in this process, without HTTP: how long
//! building it takes, how much memory it holds, how long one placement and one node joining
//! take. It owns only that measurement; the ring is `drover_core::placement`.

use crate::server::rss_bytes;
use crate::stats::{fmt_ms, ms, percentile, thousands};
use drover_core::placement::{Ring, RingNode, points_of};
use std::time::Instant;

#[derive(clap::Args)]
pub struct RingArgs {
    /// Node counts to build rings of, one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    nodes: Vec<usize>,
    /// Each node's capacity (its points are 64 per GB).
    #[arg(long, default_value_t = 100)]
    capacity_gb: u64,
    /// Zones the nodes are spread over, round-robin.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Placements timed per ring (random-looking keys, rf 3).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
}

pub fn run(args: RingArgs) -> anyhow::Result<()> {
    for &count in &args.nodes {
        let ids: Vec<String> = (0..count).map(|i| format!("node-{i:05}")).collect();
        let zones: Vec<String> = (0..args.zones.max(1))
            .map(|z| format!("zone-{z}"))
            .collect();
        let node = |i: usize| RingNode {
            id: &ids[i],
            zone: &zones[i % zones.len()],
            capacity_gb: args.capacity_gb,
        };
        let rss_before = rss_bytes("self").unwrap_or(0);
        let started = Instant::now();
        let mut ring = Ring::build((0..count).map(node));
        let built = started.elapsed();
        let rss_after = rss_bytes("self").unwrap_or(0);
        let mut took = Vec::with_capacity(args.keys);
        for k in 0..args.keys {
            let key = format!("{:064x}", (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let started = Instant::now();
            let placed = ring.place(&key, 3);
            took.push(started.elapsed());
            std::hint::black_box(placed);
        }
        let joined = {
            let started = Instant::now();
            ring.insert(RingNode {
                id: "node-joining",
                zone: &zones[0],
                capacity_gb: args.capacity_gb,
            });
            started.elapsed()
        };
        let left = {
            let started = Instant::now();
            ring.remove("node-joining");
            started.elapsed()
        };
        let us = |q| percentile(&took, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
        println!(
            "{} nodes x {} points: built in {:.2} s; ring {} MB (RSS grew {} MB); place rf 3 \
             p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} keys; a node joining {}, leaving {}",
            thousands(count as f64),
            thousands(points_of(args.capacity_gb) as f64),
            built.as_secs_f64(),
            ring.memory_bytes() >> 20,
            rss_after.saturating_sub(rss_before) >> 20,
            us(0.5),
            us(0.99),
            us(1.0),
            thousands(args.keys as f64),
            fmt_ms(ms(joined)),
            fmt_ms(ms(left)),
        );
    }
    Ok(())
}
