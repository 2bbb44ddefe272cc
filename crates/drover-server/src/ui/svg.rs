//! The dashboard's charts, drawn on the server as inline SVG: a series over the last hour, and
//! the objective value of each run by configuration. Presentation only: the figures come in
//! already counted (`history.rs`) and summarised (`drover_core::objective`).

use drover_core::objective::ConfigSummary;
use maud::{Markup, html};

const W: f64 = 640.0;
const H: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 10.0;

/// A short number for an axis label.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.2e}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A line over `values` (oldest first, one a minute), scaled to its largest value, with `unit`
/// on the y axis and the hour on the x axis.
pub fn series(title: &str, unit: &str, values: &[f64]) -> Markup {
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let n = values.len().max(2) - 1;
    let x = |i: usize| LEFT + (W - LEFT - 8.0) * i as f64 / n as f64;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / top);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(v.max(0.0))))
        .collect();
    html! {
        svg class="chart" role="img" viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H)
            aria-label=(title) {
            title { (title) }
            line class="axis" x1=(LEFT) y1=(H - BOTTOM) x2=(W - 8.0) y2=(H - BOTTOM) {}
            line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) {}
            text class="label" x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" { (short(top)) }
            text class="label" x=(LEFT - 4.0) y=(H - BOTTOM) text-anchor="end" { "0" }
            text class="label" x=(4) y=(H / 2.0) { (unit) }
            text class="label" x=(LEFT) y=(H - 6.0) { "60 min ago" }
            text class="label" x=(W - 8.0) y=(H - 6.0) text-anchor="end" { "now" }
            polyline class="line" fill="none" points=(points.join(" ")) {}
        }
    }
}

/// Each configuration's runs as dots (its best marked, its median as a tick), best
/// configuration first; at most `max` configurations.
pub fn objectives(configs: &[ConfigSummary], max: usize) -> Markup {
    let shown: Vec<&ConfigSummary> = configs
        .iter()
        .filter(|c| c.best.is_some())
        .take(max)
        .collect();
    let values = shown.iter().flat_map(|c| c.objectives.iter().copied());
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if shown.is_empty() || !lo.is_finite() {
        return html! { p class="muted" { "No objective values reported yet." } };
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let (lo, hi) = (lo - span * 0.05, hi + span * 0.05);
    let n = shown.len();
    let step = (W - LEFT - 8.0) / n as f64;
    let x = |i: usize| LEFT + step * (i as f64 + 0.5);
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo));
    html! {
        svg class="chart" role="img" viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H)
            aria-label="objective value per configuration" {
            title { "Objective value (fopt, lower is better) per configuration, best first" }
            line class="axis" x1=(LEFT) y1=(H - BOTTOM) x2=(W - 8.0) y2=(H - BOTTOM) {}
            line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) {}
            text class="label" x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" { (short(hi)) }
            text class="label" x=(LEFT - 4.0) y=(H - BOTTOM) text-anchor="end" { (short(lo)) }
            text class="label" x=(LEFT) y=(H - 6.0) { "best configuration" }
            text class="label" x=(W - 8.0) y=(H - 6.0) text-anchor="end" { "worst" }
            @for (i, c) in shown.iter().enumerate() {
                g class="config" {
                    title { (c.values.join(", ")) ": best " (c.best.map(short).unwrap_or_default())
                        ", median " (c.median.map(short).unwrap_or_default()) }
                    @for v in c.objectives.iter().filter(|v| v.is_finite()) {
                        circle class="run" cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*v))) r="2.5" {}
                    }
                    @if let Some(m) = c.median {
                        line class="median" x1=(format!("{:.1}", x(i) - step * 0.3)) x2=(format!("{:.1}", x(i) + step * 0.3))
                            y1=(format!("{:.1}", y(m))) y2=(format!("{:.1}", y(m))) {}
                    }
                    @if let Some(b) = c.best {
                        circle class="best" cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(b))) r="4.5" {}
                    }
                }
            }
        }
    }
}
