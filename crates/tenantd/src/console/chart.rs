//! Charts drawn on the server as inline SVG: no script, nothing fetched, coloured by the
//! stylesheet. Each chart carries a text summary for screen readers and its numbers in a
//! table below it.
use crate::console::text;
use maud::{html, Markup};

// The drawing's own units: about one CSS pixel each at the width a chart gets beside
// another on a wide screen.
const W: f64 = 480.0;
const H: f64 = 200.0;
const LEFT: f64 = 68.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;
/// Horizontal grid lines above zero.
const STEPS: u32 = 4;

/// The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `x` (at least 1).
fn nice_step(x: f64) -> f64 {
    if x.is_nan() || x <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= x)
        .unwrap_or(10.0 * p)
}

/// What a chart's values count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things (`1,234`).
    Count,
    /// Bytes, in binary units (`200 MiB`).
    Bytes,
}

impl Unit {
    /// A value as the chart writes it.
    pub fn write(self, v: u64) -> String {
        match self {
            Unit::Count => text::count(v),
            Unit::Bytes => text::bytes(v),
        }
    }

    /// What a grid step is a round multiple of for data up to `max`: 1 for counts; for
    /// bytes the binary unit the values are written in (KiB, MiB, …), so the steps read
    /// `200 MiB`, not `190.7 MiB`.
    fn base(self, max: u64) -> f64 {
        let mut base = 1.0;
        if self == Unit::Bytes {
            while max as f64 / base >= 1024.0 && base < 1024f64.powi(6) {
                base *= 1024.0;
            }
        }
        base
    }
}

/// The value at the top of the scale and its grid step, for data up to `max`.
fn scale(max: u64, unit: Unit) -> (f64, f64) {
    let base = unit.base(max);
    let step = nice_step(max as f64 / base / f64::from(STEPS)).max(1.0) * base;
    (step * f64::from(STEPS), step)
}

/// A column chart of one value a day, `points` oldest first as `(day start, value)`, in
/// `unit`. `id` makes the chart's element ids unique on its page.
pub fn daily(id: &str, caption: &str, what: &str, points: &[(i64, u64)], unit: Unit) -> Markup {
    let max = points.iter().map(|p| p.1).max().unwrap_or(0);
    let (top, step) = scale(max, unit);
    let unit = |v: u64| unit.write(v);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / points.len().max(1) as f64;
    let y = |v: f64| TOP + plot_h - (v / top * plot_h);
    let summary = summary(what, points, unit);
    let (title_id, desc_id) = (format!("{id}-title"), format!("{id}-desc"));
    html! {
        figure.chart {
            figcaption { (caption) }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby=(format!("{title_id} {desc_id}")) {
                title id=(title_id) { (caption) }
                desc id=(desc_id) { (summary) }
                @for i in 0..=STEPS {
                    @let v = step * f64::from(i);
                    @let gy = y(v);
                    line.grid-line x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(gy)) y2=(fmt(gy)) {}
                    text.axis-label x=(fmt(LEFT - 6.0)) y=(fmt(gy + 4.0)) text-anchor="end" { (unit(v as u64)) }
                }
                @for (i, (day, v)) in points.iter().enumerate() {
                    @let bw = (slot * 0.7).max(1.0);
                    @let bx = LEFT + slot * i as f64 + (slot - bw) / 2.0;
                    @let bh = (*v as f64 / top * plot_h).max(if *v > 0 { 1.0 } else { 0.0 });
                    @if *v == 0 {
                        rect.plot-bar.zero x=(fmt(bx)) y=(fmt(TOP + plot_h - 1.0)) width=(fmt(bw)) height="1" {
                            title { (text::date(*day)) ": " (unit(0)) " " (what) }
                        }
                    } @else {
                        rect.plot-bar x=(fmt(bx)) y=(fmt(TOP + plot_h - bh)) width=(fmt(bw)) height=(fmt(bh)) {
                            title { (text::date(*day)) ": " (unit(*v)) " " (what) }
                        }
                    }
                    // A date under the first bar and every seventh after it.
                    @if i % 7 == 0 {
                        text.axis-label x=(fmt(bx + bw / 2.0)) y=(fmt(H - 8.0)) text-anchor="middle" { (text::short_date(*day)) }
                    }
                }
            }
            details {
                summary { "The numbers" }
                div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Day (UTC)" } th.num scope="col" { (what) } } }
                        tbody {
                            @for (day, v) in points.iter().rev() {
                                tr { td.nowrap { (text::date(*day)) } td.num { (unit(*v)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One sentence saying what the chart shows.
fn summary(what: &str, points: &[(i64, u64)], unit: impl Fn(u64) -> String) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return format!("No {what} to show.");
    };
    let peak = points.iter().max_by_key(|p| p.1).unwrap_or(first);
    format!(
        "{what} each day from {} to {}; highest {} on {}; latest {}.",
        text::date(first.0),
        text::date(last.0),
        unit(peak.1),
        text::date(peak.0),
        unit(last.1),
    )
}

/// A quota's use as a bar (`percentage` of its limit; `None`: unlimited, no bar).
pub fn bar(percentage: Option<f64>) -> Markup {
    let Some(p) = percentage.filter(|p| p.is_finite()) else {
        return html! { span.hint { "unlimited" } };
    };
    let width = p.clamp(0.0, 100.0);
    let level = if p >= 100.0 {
        "fill bad"
    } else if p >= 80.0 {
        "fill warn"
    } else {
        "fill"
    };
    html! {
        svg.bar viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label=(format!("{p:.1}% used")) {
            rect.track x="0" y="0" width="100" height="8" rx="4" {}
            rect class=(level) x="0" y="0" width=(fmt(width)) height="8" rx="4" {}
        }
    }
}

/// A coordinate with at most two decimals.
fn fmt(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn days(values: &[u64]) -> Vec<(i64, u64)> {
        let start = 1_772_496_000; // 2026-03-03
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (start + i as i64 * DAY, *v))
            .collect()
    }

    fn bars(svg: &str) -> usize {
        svg.matches("<rect class=\"plot-bar").count()
    }

    #[test]
    fn the_scale_rounds_up_to_a_readable_step() {
        let count = |max| scale(max, Unit::Count);
        assert_eq!(count(0), (4.0, 1.0));
        assert_eq!(count(3), (4.0, 1.0));
        assert_eq!(count(7), (8.0, 2.0));
        assert_eq!(count(100), (100.0, 25.0));
        assert_eq!(count(1234), (2000.0, 500.0));
        let (top, _) = count(u64::MAX);
        assert!(top.is_finite() && top >= u64::MAX as f64);
        // Bytes step in round binary units.
        const MIB: f64 = 1024.0 * 1024.0;
        assert_eq!(scale(770 << 20, Unit::Bytes), (800.0 * MIB, 200.0 * MIB));
        assert_eq!(scale(3 << 30, Unit::Bytes), (4.0 * 1024.0 * MIB, 1024.0 * MIB));
        assert_eq!(scale(900, Unit::Bytes), (1000.0, 250.0));
        let (top, _) = scale(u64::MAX, Unit::Bytes);
        assert!(top.is_finite() && top >= u64::MAX as f64);
    }

    #[test]
    fn one_bar_a_day_scaled_to_the_largest() {
        let svg = daily("c", "API calls", "API calls", &days(&[0, 50, 100, 25]), Unit::Count).into_string();
        assert_eq!(bars(&svg), 4);
        // 100 is the top of the scale: its bar is the plot's whole height.
        let plot_h = H - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{}\"", fmt(plot_h))), "{svg}");
        assert!(svg.contains(&format!("height=\"{}\"", fmt(plot_h / 2.0))));
        assert!(svg.contains("2026-03-05: 100 API calls"));
        assert!(svg.contains("<text class=\"axis-label\""));
        assert!(svg.contains(">Mar 3<"), "the first day is labelled");
        assert!(svg.contains("highest 100 on 2026-03-05; latest 25."), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(!svg.contains("<script") && !svg.contains("style="));
    }

    #[test]
    fn nothing_zero_and_huge_values_draw_without_panic() {
        let empty = daily("e", "Storage", "bytes", &[], Unit::Bytes).into_string();
        assert_eq!(bars(&empty), 0);
        assert!(empty.contains("No bytes to show."));
        let zeros = daily("z", "Calls", "calls", &days(&[0; 30]), Unit::Count).into_string();
        assert_eq!(bars(&zeros), 30);
        assert!(!zeros.contains("NaN"));
        let huge = daily("h", "Calls", "calls", &days(&[u64::MAX, 1]), Unit::Count).into_string();
        assert_eq!(bars(&huge), 2);
        assert!(!huge.contains("NaN") && !huge.contains("inf"));
    }

    #[test]
    fn text_in_a_chart_is_escaped() {
        let svg = daily("x", "<b>calls</b>", "a&b", &days(&[1]), Unit::Count).into_string();
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;b&gt;calls&lt;/b&gt;") && svg.contains("a&amp;b"));
    }

    #[test]
    fn a_quota_bar_is_clamped_and_coloured_by_use() {
        assert!(bar(Some(37.5)).into_string().contains("width=\"37.5\""));
        let over = bar(Some(250.0)).into_string();
        assert!(over.contains("width=\"100\"") && over.contains("fill bad") && over.contains("250.0% used"));
        assert!(bar(Some(85.0)).into_string().contains("fill warn"));
        assert!(bar(None).into_string().contains("unlimited"));
        assert!(bar(Some(f64::NAN)).into_string().contains("unlimited"));
        assert!(bar(Some(-5.0)).into_string().contains("width=\"0\""));
    }
}
