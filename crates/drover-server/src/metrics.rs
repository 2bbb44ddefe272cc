//! Prometheus metrics: one registry per server (no globals, so every test server counts alone),
//! rendered at `GET /metrics` in the OpenMetrics text format.
//!
//! Counters are incremented by the code that did the thing (the runner service, the reapers,
//! the store's committed events); this module only owns their names and the registry.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Runner lifecycle counters.
#[derive(Debug, Clone, Default)]
pub struct RunnerCounters {
    /// Runners started for a provision request.
    pub provisioned: Counter,
    /// Runners stopped for a deprovision request.
    pub deprovisioned: Counter,
    /// Runners stopped by the inactivity reaper.
    pub reaped: Counter,
    /// Provisions or stops that failed.
    pub failed: Counter,
}

/// Committed store events, by `kind` (`drover_core::Event::kind`).
pub type EventCounters = Family<Vec<(&'static str, &'static str)>, Counter>;

pub struct Metrics {
    registry: Registry,
    pub runners: RunnerCounters,
    pub store_events: EventCounters,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drover");
        let runners = RunnerCounters::default();
        registry.register(
            "runners_provisioned",
            "Runners started for a provision request",
            runners.provisioned.clone(),
        );
        registry.register(
            "runners_deprovisioned",
            "Runners stopped for a deprovision request",
            runners.deprovisioned.clone(),
        );
        registry.register(
            "runners_reaped",
            "Runners stopped for inactivity",
            runners.reaped.clone(),
        );
        registry.register(
            "runners_failed",
            "Runner starts or stops that failed",
            runners.failed.clone(),
        );
        let store_events = EventCounters::default();
        registry.register(
            "store_events",
            "Domain events of committed store writes, by kind",
            store_events.clone(),
        );
        Metrics {
            registry,
            runners,
            store_events,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Metrics {
    /// Counts each committed write's events by kind.
    pub fn count_events(&self, events: &[drover_core::Event]) {
        for event in events {
            self.store_events
                .get_or_create(&vec![("kind", event.kind())])
                .inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
