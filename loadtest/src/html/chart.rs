//! Line charts as inline SVG: axes with round ticks, shaded stage bands, one
//! polyline per series and a legend. No scripts, no external resources.

use std::fmt::Write as _;

use super::escape;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
/// Roughly how many ticks the y axis gets.
const Y_TICKS: f64 = 6.0;
/// Roughly how many ticks the (wider) time axis gets.
const X_TICKS: f64 = 12.0;
/// Room above the highest value, as a factor, so that lines stay clear of
/// the two band label lines at the top.
const HEADROOM: f64 = 1.2;
/// Width of one label character at the band font size, in SVG units.
const CHAR_WIDTH: f64 = 6.5;

/// One line of a chart: `(x, y)` points, `None` leaving a gap.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name; also the `data-series` attribute.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// Drawn dashed (e.g. a target).
    pub dashed: bool,
    /// Line width; a wider line drawn first stays visible under a
    /// narrower one with the same values.
    pub width: f64,
    /// Points in x order.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A shaded, labelled stretch of the x axis (a scenario stage).
#[derive(Debug, Clone)]
pub struct Band {
    /// Label at the top of the band.
    pub label: String,
    /// Second, smaller label line (e.g. the rate).
    pub detail: String,
    /// Start on the x axis.
    pub from: f64,
    /// End on the x axis.
    pub to: f64,
}

/// A chart: an id for `data-plot`, the y-axis unit, its series and bands.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Stable identifier, written as `data-plot`.
    pub id: &'static str,
    /// Y-axis label, e.g. `records/s`.
    pub unit: &'static str,
    /// The lines.
    pub series: Vec<Series>,
    /// Stage bands behind the lines.
    pub bands: Vec<Band>,
}

/// A round tick step for about `ticks` ticks over `range`: 1, 2 or 5 times
/// a power of ten, at least `range / ticks`.
pub fn tick_step(range: f64, ticks: f64) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / ticks;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Tick label with as many decimals as the step needs.
pub fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

struct Scale {
    x_max: f64,
    y_max: f64,
}

impl Scale {
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - v / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

impl Chart {
    fn scale(&self) -> (Scale, f64, f64) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let x_data = xs
            .chain(self.bands.iter().map(|b| b.to))
            .fold(0.0, f64::max);
        let y_data = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .fold(0.0, f64::max);
        // The time axis ends with the data; the y axis at a round value.
        let x_step = tick_step(x_data, X_TICKS);
        let y_step = tick_step(y_data * HEADROOM, Y_TICKS);
        let x_max = if x_data > 0.0 { x_data } else { 1.0 };
        let y_max = (y_data * HEADROOM / y_step).ceil().max(1.0) * y_step;
        (Scale { x_max, y_max }, x_step, y_step)
    }

    /// The chart as one `<svg>` element.
    pub fn to_svg(&self) -> String {
        let (sc, x_step, y_step) = self.scale();
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="plot" data-plot="{}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">"#,
            self.id
        );
        self.bands_svg(&mut out, &sc);
        axes_svg(&mut out, &sc, x_step, y_step, self.unit);
        for s in &self.series {
            series_svg(&mut out, &sc, s);
        }
        self.legend_svg(&mut out);
        out.push_str("</svg>");
        out
    }

    fn bands_svg(&self, out: &mut String, sc: &Scale) {
        for (i, b) in self.bands.iter().enumerate() {
            let (x0, x1) = (sc.x(b.from), sc.x(b.to));
            let fill = if i % 2 == 0 { "#eef3f9" } else { "#f8fafc" };
            let _ = write!(
                out,
                r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
                (x1 - x0).max(0.0),
                HEIGHT - TOP - BOTTOM
            );
            let room = ((x1 - x0 - 6.0) / CHAR_WIDTH).floor().max(0.0) as usize;
            for (line, text) in [(1.0, &b.label), (2.0, &b.detail)] {
                let fitted: String = text.chars().take(room).collect();
                if !fitted.is_empty() {
                    let _ = write!(
                        out,
                        r#"<text class="band" x="{:.1}" y="{:.1}">{}</text>"#,
                        x0 + 4.0,
                        TOP + 13.0 * line,
                        escape(&fitted)
                    );
                }
            }
        }
    }

    fn legend_svg(&self, out: &mut String) {
        let mut x = LEFT;
        for s in &self.series {
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="14" x2="{:.1}" y2="14" stroke="{}" stroke-width="2.5"{dash}/><text class="legend" x="{:.1}" y="18">{}</text>"#,
                x + 22.0,
                s.color,
                x + 28.0,
                escape(&s.name)
            );
            x += 52.0 + s.name.chars().count() as f64 * 8.0;
        }
    }
}

fn axes_svg(out: &mut String, sc: &Scale, x_step: f64, y_step: f64, unit: &str) {
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let mut v = 0.0;
    while v <= sc.y_max + y_step * 1e-9 {
        let y = sc.y(v);
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#d5dbe3" stroke-width="1"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            y + 4.0,
            tick_label(v, y_step)
        );
        v += y_step;
    }
    let mut v = 0.0;
    while v <= sc.x_max + x_step * 1e-9 {
        let x = sc.x(v);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="#8a94a3"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
            bottom + 5.0,
            bottom + 18.0,
            tick_label(v, x_step)
        );
        v += x_step;
    }
    let _ = write!(
        out,
        r##"<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="#5b6573"/><text class="unit" x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text><text class="unit" x="{:.1}" y="{:.1}" text-anchor="middle">time since start of measured phase</text>"##,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
        escape(unit),
        (left + right) / 2.0,
        HEIGHT - 4.0
    );
}

fn series_svg(out: &mut String, sc: &Scale, s: &Series) {
    let dash = if s.dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in &s.points {
        match (y, runs.last_mut()) {
            (Some(y), Some(run)) => run.push((sc.x(x), sc.y(y))),
            (None, Some(run)) if !run.is_empty() => runs.push(Vec::new()),
            _ => {}
        }
    }
    let _ = write!(out, r#"<g data-series="{}">"#, escape(&s.name));
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if let [(x, y)] = run[..] {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{}"/>"#,
                s.color
            );
            continue;
        }
        let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round"{dash}/>"#,
            pts.join(" "),
            s.color,
            s.width
        );
    }
    out.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(60.0, 6.0), 10.0);
        assert_eq!(tick_step(7.0, 6.0), 2.0);
        assert_eq!(tick_step(0.3, 6.0), 0.05);
        assert_eq!(tick_step(0.0, 6.0), 1.0);
        assert_eq!(tick_step(60.5, 12.0), 10.0);
        assert_eq!(tick_label(0.15, 0.05), "0.15");
        assert_eq!(tick_label(20.0, 10.0), "20");
    }

    #[test]
    fn gaps_split_lines_and_lone_points_become_dots() {
        let chart = Chart {
            id: "t",
            unit: "ms",
            series: vec![Series {
                name: "p50 <a>".into(),
                color: "#000",
                dashed: false,
                width: 2.0,
                points: vec![
                    (0.0, Some(1.0)),
                    (1.0, Some(2.0)),
                    (2.0, None),
                    (3.0, Some(2.0)),
                ],
            }],
            bands: vec![Band {
                label: "ramp".into(),
                detail: "to 5/s".into(),
                from: 0.0,
                to: 3.0,
            }],
        };
        let svg = chart.to_svg();
        assert_eq!(
            svg.matches("<polyline points=\"").count(),
            2,
            "axes + one line: {svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("p50 &lt;a&gt;"));
        assert!(svg.contains(">ramp</text>") && svg.contains(">to 5/s</text>"));
    }
}
