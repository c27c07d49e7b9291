//! `cargo xtask bench --plot`: the benchmark curves as SVG charts.
//!
//! The curves bench (`snakepit-pool/benches/curves.rs`) writes its points
//! to `<target dir>/bench/curves.json`:
//!
//! ```json
//! {"curves": [{"name": "workers", "title": "...", "x_label": "workers",
//!   "y_label": "calls/s", "x_log": true,
//!   "series": [{"label": "snakepit pool", "points": [[1, 5200.0], [2, 9100.0]]}]}]}
//! ```
//!
//! Each curve becomes `<target dir>/bench/<name>.svg`: one line per series,
//! with its points marked, axis labels and a legend. `x_log` and `y_log`
//! (optional, false by default) draw that axis on a logarithmic scale.

use std::path::{Path, PathBuf};

use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::Result;

/// One chart: named series of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The file name of the chart, without `.svg` (letters, digits, `_`, `-`).
    pub name: String,
    /// The chart's caption.
    pub title: String,
    /// The x axis' description.
    pub x_label: String,
    /// The y axis' description.
    pub y_label: String,
    /// Whether the x axis is logarithmic (every x must then be > 0).
    pub x_log: bool,
    /// Whether the y axis is logarithmic (every y must then be > 0).
    pub y_log: bool,
    /// The lines of the chart.
    pub series: Vec<Series>,
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's text for this line.
    pub label: String,
    /// The points, in the order they are joined.
    pub points: Vec<(f64, f64)>,
}

/// `<target dir>/bench/`: where the curve data and the charts go.
pub fn bench_dir() -> PathBuf {
    crate::target_dir().join("bench")
}

/// Reads the curve data at `path`; an error names the file and the place in
/// it that is wrong.
pub fn read_curves(path: &Path) -> Result<Vec<Curve>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the curve data {}: {e} (run `cargo xtask bench --plot`, which runs the curves bench first)",
            path.display()
        )
    })?;
    parse_curves(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses curve data (the format in the module doc); the error names the
/// element that is wrong (`curves[1].series[0].points[3]`).
pub fn parse_curves(text: &str) -> Result<Vec<Curve>> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let curves = doc
        .get("curves")
        .and_then(|c| c.as_array())
        .ok_or("no `curves` array at the top level")?;
    curves
        .iter()
        .enumerate()
        .map(|(i, c)| parse_curve(c, &format!("curves[{i}]")))
        .collect()
}

fn text_field(v: &serde_json::Value, key: &str, at: &str) -> Result<String> {
    v.get(key)
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{at}.{key}: missing or not a string"))
}

fn parse_curve(c: &serde_json::Value, at: &str) -> Result<Curve> {
    let name = text_field(c, "name", at)?;
    let safe = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-';
    if name.is_empty() || !name.chars().all(safe) {
        return Err(format!(
            "{at}.name {name:?}: a chart's file name takes letters, digits, `_` and `-` only"
        ));
    }
    let flag = |key: &str| match c.get(key) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("{at}.{key}: not true or false")),
    };
    let (x_log, y_log) = (flag("x_log")?, flag("y_log")?);
    let series = c
        .get("series")
        .and_then(|s| s.as_array())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{at}.series: missing, not an array, or empty"))?
        .iter()
        .enumerate()
        .map(|(j, s)| parse_series(s, &format!("{at}.series[{j}]"), (x_log, y_log)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Curve {
        name,
        title: text_field(c, "title", at)?,
        x_label: text_field(c, "x_label", at)?,
        y_label: text_field(c, "y_label", at)?,
        x_log,
        y_log,
        series,
    })
}

fn parse_series(s: &serde_json::Value, at: &str, (x_log, y_log): (bool, bool)) -> Result<Series> {
    let points = s
        .get("points")
        .and_then(|p| p.as_array())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("{at}.points: missing, not an array, or empty"))?
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let xy = p
                .as_array()
                .map(|a| a.iter().map(|v| v.as_f64()).collect::<Vec<_>>());
            match xy.as_deref() {
                Some([Some(x), Some(y)]) if x.is_finite() && y.is_finite() => {
                    if x_log && *x <= 0.0 || y_log && *y <= 0.0 {
                        Err(format!(
                            "{at}.points[{k}]: [{x}, {y}] on a logarithmic axis (must be > 0)"
                        ))
                    } else {
                        Ok((*x, *y))
                    }
                }
                _ => Err(format!(
                    "{at}.points[{k}]: {p} is not [x, y] of two finite numbers"
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Series {
        label: text_field(s, "label", at)?,
        points,
    })
}

/// Writes one `<name>.svg` per curve into `dir` (created if missing);
/// returns the files written.
pub fn write_charts(curves: &[Curve], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    curves
        .iter()
        .map(|c| {
            let path = dir.join(format!("{}.svg", c.name));
            write_chart(c, &path).map_err(|e| format!("chart {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// The smallest range holding every value of `values` (a flat line gets a
/// span of 1).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

/// Draws `curve` as an SVG file at `path`.
pub fn write_chart(curve: &Curve, path: &Path) -> Result {
    let points = || curve.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(points().map(|p| p.0));
    let y = span(points().map(|p| p.1));
    if curve.x_log {
        let x: LogCoord<f64> = (x0 * 0.8..x1 * 1.25).log_scale().into();
        with_y(curve, path, x, y)
    } else {
        let pad = (x1 - x0) * 0.05;
        let x: RangedCoordf64 = (x0 - pad..x1 + pad).into();
        with_y(curve, path, x, y)
    }
}

/// Draws with the y axis of `curve` over `(y0, y1)`: a linear one starts
/// at 0 unless a value is below it.
fn with_y<X>(curve: &Curve, path: &Path, x: X, (y0, y1): (f64, f64)) -> Result
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    if curve.y_log {
        let y: LogCoord<f64> = (y0 * 0.8..y1 * 1.25).log_scale().into();
        draw(curve, path, x, y)
    } else {
        let lo = y0.min(0.0);
        let y: RangedCoordf64 = (lo..y1 + (y1 - lo) * 0.1).into();
        draw(curve, path, x, y)
    }
}

/// An axis tick: whole numbers as such, others with up to two decimals.
fn tick(v: f64) -> String {
    if v == v.round() || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw<X, Y>(curve: &Curve, path: &Path, x: X, y: Y) -> Result
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| format!("{e}");
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&curve.title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(&curve.x_label)
        .y_desc(&curve.y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in curve.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(
                LineSeries::new(s.points.iter().copied(), color.stroke_width(2)).point_size(4),
            )
            .map_err(|e| err(&e))?
            .label(&s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Draws every curve of `<target dir>/bench/curves.json` into
/// `<target dir>/bench/`.
pub fn plot() -> Result {
    let dir = bench_dir();
    let curves = read_curves(&dir.join("curves.json"))?;
    for path in write_charts(&curves, &dir)? {
        println!("chart: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(x_log: bool, y_log: bool) -> Curve {
        Curve {
            name: "workers".into(),
            title: "Calls/s by workers".into(),
            x_label: "number of workers".into(),
            y_label: "calls per second".into(),
            x_log,
            y_log,
            series: vec![
                Series {
                    label: "snakepit pool".into(),
                    points: vec![(1.0, 5000.0), (2.0, 9000.0), (4.0, 8800.0), (8.0, 8500.0)],
                },
                Series {
                    label: "multiprocessing.Pool".into(),
                    points: vec![(1.0, 4000.0), (2.0, 7000.0), (4.0, 6500.0), (8.0, 6000.0)],
                },
            ],
        }
    }

    /// A fresh directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Checks that `svg` is well-formed XML: every element opened is closed
    /// in order, `<?...?>` and `<!...>` aside. Returns the element names.
    fn xml_elements(svg: &str) -> Vec<String> {
        let (mut open, mut names) = (Vec::new(), Vec::new());
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("a tag without `>`") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(name.trim()),
                    "unbalanced </{name}>"
                );
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            names.push(name.clone());
            if !tag.ends_with('/') {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "elements never closed: {open:?}");
        names
    }

    #[test]
    fn a_chart_is_written_as_svg_with_its_lines_labels_and_legend() {
        for (x_log, y_log) in [(false, false), (true, false), (true, true)] {
            let dir = scratch(&format!("chart-{x_log}-{y_log}"));
            let written = write_charts(&[curve(x_log, y_log)], &dir).expect("charts written");
            assert_eq!(written, vec![dir.join("workers.svg")]);
            let svg = std::fs::read_to_string(&written[0]).unwrap();
            let elements = xml_elements(&svg);
            assert_eq!(elements.first().map(String::as_str), Some("svg"));
            // One polyline per series, plus the legend's two sample lines.
            let lines = elements.iter().filter(|e| *e == "polyline").count();
            assert!(lines >= 4, "{lines} polylines in {svg}");
            // Each point is marked.
            assert!(elements.iter().filter(|e| *e == "circle").count() >= 8);
            for text in [
                "Calls/s by workers",
                "number of workers",
                "calls per second",
                "snakepit pool",
                "multiprocessing.Pool",
                // A tick of each axis.
                "\n8\n",
                if y_log { "\n10000\n" } else { "\n8000\n" },
            ] {
                assert!(svg.contains(text), "no {text:?} in the chart");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn curve_data_round_trips_through_the_file_format() {
        let text = r#"{"curves": [{"name": "queue_depth", "title": "t", "x_label": "x",
            "y_label": "y", "x_log": true,
            "series": [{"label": "p50", "points": [[32, 1.5], [2048, 90]]}]}]}"#;
        let curves = parse_curves(text).unwrap();
        assert_eq!(curves.len(), 1);
        assert!(curves[0].x_log);
        assert_eq!(
            curves[0].series[0].points,
            vec![(32.0, 1.5), (2048.0, 90.0)]
        );
    }

    #[test]
    fn bad_curve_data_is_refused_naming_the_file_and_the_element() {
        let dir = scratch("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("curves.json");
        let bad = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let e = read_curves(&file).unwrap_err();
            assert!(e.starts_with(&file.display().to_string()), "{e}");
            e
        };
        assert!(bad("{ not json").contains("not JSON"));
        assert!(bad(r#"{"points": []}"#).contains("no `curves` array"));
        let curve = |name: &str, log: bool, points: &str| {
            format!(
                r#"{{"curves": [{{"name": "{name}", "title": "t", "x_label": "x", "y_label": "y",
                "x_log": {log}, "series": [{{"label": "a", "points": {points}}}]}}]}}"#
            )
        };
        let e = bad(&curve("ok", false, r#"[[1, 2], [3, "four"]]"#));
        assert!(
            e.contains("curves[0].series[0].points[1]") && e.contains("\"four\""),
            "{e}"
        );
        let e = bad(&curve("ok", true, "[[0, 2]]"));
        assert!(e.contains("points[0]: [0, 2] on a logarithmic axis"), "{e}");
        let e = bad(&curve("../evil", false, "[[1, 2]]"));
        assert!(e.contains("curves[0].name \"../evil\""), "{e}");
        assert!(bad(&curve("ok", false, "[]")).contains("curves[0].series[0].points: missing"));
        let e = read_curves(&dir.join("missing.json")).unwrap_err();
        assert!(
            e.contains("missing.json") && e.contains("cargo xtask bench --plot"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
