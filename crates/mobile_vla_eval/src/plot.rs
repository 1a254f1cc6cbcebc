//! The figures: per episode, the recorded action and each policy's command
//! over time, one panel per commanded axis; and a summary of every policy's
//! MAE per episode. Plain SVG strings, written by the caller.
//!
//! Owns the layout and scales only; the numbers are the report's.

use std::fmt::Write as _;

use crate::report::Report;
use crate::score::AXES;

const W: f64 = 760.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 60.0;
const COLOURS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = (hi - lo) * 0.08;
        (lo - pad, hi + pad)
    }
}

/// The figure of episode `name`, or `None` if no policy scored it.
pub fn episode(report: &Report, name: &str) -> Option<String> {
    let runs: Vec<(&str, &crate::report::EpisodeReport)> = report
        .policies
        .iter()
        .filter_map(|p| p.episodes.iter().find(|e| e.episode == name).map(|e| (p.name.as_str(), e)))
        .collect();
    let (_, first) = runs.first()?;
    let axes: Vec<usize> =
        (0..3).filter(|k| report.policies.iter().any(|p| p.commanded_axes.contains(&AXES[*k]))).collect();
    let t_max = first.frames.iter().map(|f| f.t_s).fold(0.0, f64::max).max(1e-3);
    let h = 40.0 + PANEL_H * axes.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"18\" font-size=\"14\">{}: recorded (black) and commanded, per axis</text>\n",
        escape(name)
    );
    for (row, &k) in axes.iter().enumerate() {
        let top = 30.0 + PANEL_H * row as f64;
        let (plot_h, plot_w) = (PANEL_H - 30.0, W - LEFT - 20.0);
        let values = runs
            .iter()
            .flat_map(|(_, e)| e.frames.iter().flat_map(|f| [Some(f.action[k]), f.command.map(|c| c[k])]))
            .flatten();
        let (lo, hi) = range(values);
        let x = |t: f64| LEFT + plot_w * t / t_max;
        let y = |v: f64| top + plot_h * (1.0 - (v - lo) / (hi - lo));
        let _ = writeln!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"4\" y=\"{:.1}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{hi:.2}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{lo:.2}</text>\n\
             <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            top + plot_h / 2.0,
            AXES[k],
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            top + plot_h,
            LEFT + plot_w,
            y(0.0),
            y(0.0)
        );
        let line = |points: Vec<(f64, f64)>, colour: &str, width: f64| {
            let p: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
            format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" points=\"{}\"/>\n",
                p.join(" ")
            )
        };
        svg += &line(first.frames.iter().map(|f| (f.t_s, f.action[k])).collect(), "black", 2.0);
        for (i, (_, e)) in runs.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            // Each stretch of commanded frames is its own line: a refused frame is a gap, not an interpolation.
            for stretch in e.frames.split(|f| f.command.is_none()).filter(|s| !s.is_empty()) {
                svg += &line(stretch.iter().map(|f| (f.t_s, f.command.expect("split")[k])).collect(), colour, 1.5);
                for f in stretch {
                    let _ = writeln!(
                        svg,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                        x(f.t_s),
                        y(f.command.expect("split")[k])
                    );
                }
            }
        }
    }
    // The time axis, under the last panel.
    let axis_y = 30.0 + PANEL_H * axes.len() as f64 - 16.0;
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{axis_y}\">0 s</text><text x=\"{:.1}\" y=\"{axis_y}\" text-anchor=\"end\">{t_max:.1} s</text>",
        W - 20.0
    );
    let legend_y = h - 10.0;
    let _ = write!(svg, "<text x=\"{LEFT}\" y=\"{legend_y}\">black: recorded");
    for (i, (policy, _)) in runs.iter().enumerate() {
        let _ = write!(svg, "   <tspan fill=\"{}\">{}</tspan>", COLOURS[i % COLOURS.len()], escape(policy));
    }
    svg += "</text>\n</svg>\n";
    Some(svg)
}

/// Every policy's MAE per episode, as grouped bars.
pub fn summary(report: &Report) -> String {
    let names: Vec<&str> =
        report.policies.first().map(|p| p.episodes.iter().map(|e| e.episode.as_str()).collect()).unwrap_or_default();
    let maes = |name: &str| -> Vec<Option<f64>> {
        report
            .policies
            .iter()
            .map(|p| p.episodes.iter().find(|e| e.episode == name).and_then(|e| e.summary.mae))
            .collect()
    };
    let top = report.policies.iter().flat_map(|p| p.episodes.iter().filter_map(|e| e.summary.mae)).fold(1e-6, f64::max);
    let (plot_h, bottom) = (220.0, 260.0);
    let group = ((W - LEFT - 20.0) / names.len().max(1) as f64).min(120.0);
    let bar = group * 0.8 / report.policies.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"330\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"18\" font-size=\"14\">MAE per episode (lower is better)</text>\n\
         <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{top:.3}</text>\n",
        W - 20.0,
        LEFT - 4.0,
        bottom - plot_h + 4.0
    );
    for (g, name) in names.iter().enumerate() {
        let x0 = LEFT + group * g as f64 + group * 0.1;
        for (i, mae) in maes(name).into_iter().enumerate() {
            if let Some(m) = mae {
                let hgt = plot_h * m / top;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\" fill=\"{}\"><title>{m:.4}</title></rect>",
                    x0 + bar * i as f64,
                    bottom - hgt,
                    COLOURS[i % COLOURS.len()]
                );
            }
        }
        let _ =
            writeln!(svg, "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{}</text>", x0, bottom + 14.0, escape(name));
    }
    let _ = write!(svg, "<text x=\"{LEFT}\" y=\"315\">");
    for (i, p) in report.policies.iter().enumerate() {
        let _ = write!(
            svg,
            "<tspan fill=\"{}\">{} (all: {})</tspan>   ",
            COLOURS[i % COLOURS.len()],
            escape(&p.name),
            p.overall.mae.map_or("-".into(), |m| format!("{m:.4}"))
        );
    }
    svg += "</text>\n</svg>\n";
    svg
}
