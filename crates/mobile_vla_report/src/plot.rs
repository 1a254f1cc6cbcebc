//! An SVG a person can read at a glance: total latency over time (one colour
//! per policy, fallback periods shaded) above a histogram of total latency.
//! Hand-written SVG: no plotting dependency.

use std::fmt::Write;

use crate::summary::Summary;
use crate::Stats;

const W: f64 = 900.0;
const H: f64 = 640.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|c| *c >= v).unwrap_or(10.0 * mag)
}

pub fn svg(stats: &[Stats], summary: &Summary, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="22" font-size="16" text-anchor="middle">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let policies: Vec<String> = summary
        .groups
        .iter()
        .map(|g| g.policy.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let colour = |p: &str| COLOURS[policies.iter().position(|x| x == p).unwrap_or(0) % COLOURS.len()];
    let ok: Vec<&Stats> = stats.iter().filter(|s| s.outcome == 0 && s.total_ms.is_finite()).collect();
    let t0 = stats.first().map_or(0.0, |s| s.stamp_s);
    let tmax = summary.duration_s.max(1e-3);
    let ymax = nice_max(ok.iter().map(|s| s.total_ms).fold(0.0, f64::max));

    // Panel 1: latency over time.
    let (x0, y0, pw, ph) = (70.0, 50.0, W - 100.0, 300.0);
    let _ = write!(
        s,
        r#"<text x="{x0}" y="{}" >total latency per frame (ms) over time (s); shaded: fallback active</text>"#,
        y0 - 8.0
    );
    for p in &summary.fallback_periods {
        let (a, b) = (x0 + p.start_s / tmax * pw, x0 + p.end_s.max(p.start_s + tmax / pw) / tmax * pw);
        let _ =
            write!(s, r##"<rect x="{a:.1}" y="{y0}" width="{:.1}" height="{ph}" fill="#ffe0b2"/>"##, (b - a).max(1.0));
    }
    axes(&mut s, x0, y0, pw, ph, tmax, ymax);
    for st in &ok {
        let x = x0 + (st.stamp_s - t0) / tmax * pw;
        let y = y0 + ph - (st.total_ms / ymax).min(1.0) * ph;
        let _ = write!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="1.8" fill="{}"/>"#, colour(&st.policy));
    }
    for (i, p) in policies.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            x0 + pw - 150.0,
            y0 + 8.0 + 16.0 * i as f64,
            colour(p),
            x0 + pw - 135.0,
            y0 + 17.0 + 16.0 * i as f64,
            escape(p)
        );
    }

    // Panel 2: histogram of total latency.
    let (x0, y0, pw, ph) = (70.0, 410.0, W - 100.0, 190.0);
    let bins = 40usize;
    let mut counts = vec![vec![0usize; bins]; policies.len()];
    for st in &ok {
        let b = ((st.total_ms / ymax * bins as f64) as usize).min(bins - 1);
        counts[policies.iter().position(|p| *p == st.policy).unwrap_or(0)][b] += 1;
    }
    let cmax = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let _ = write!(s, r#"<text x="{x0}" y="{}">histogram of total latency (ms); count</text>"#, y0 - 8.0);
    axes(&mut s, x0, y0, pw, ph, ymax, cmax);
    let bw = pw / bins as f64;
    for (pi, row) in counts.iter().enumerate() {
        let sub = bw / policies.len().max(1) as f64;
        for (b, c) in row.iter().enumerate().filter(|(_, c)| **c > 0) {
            let h = *c as f64 / cmax * ph;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/>"#,
                x0 + b as f64 * bw + pi as f64 * sub,
                y0 + ph - h,
                sub.max(1.0),
                colour(&policies[pi])
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, x0: f64, y0: f64, w: f64, h: f64, xmax: f64, ymax: f64) {
    let _ = write!(s, r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##);
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (x, y) = (x0 + f * w, y0 + h - f * h);
        let _ = write!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 5.0,
            y + 4.0,
            fmt(f * ymax)
        );
        let _ = write!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, y0 + h + 15.0, fmt(f * xmax));
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
