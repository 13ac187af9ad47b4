//! The figures `--svg` draws, with plotters: the comparison's calls per second and p99 per
//! arm, the scale-out curves, and each pattern's share of its baseline.

use crate::human_bytes;

/// `cargo bench` runs in the package's directory: a relative path is the workspace's.
pub(crate) fn workspace_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The legend of a chart, in its upper left corner.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut plotters::prelude::ChartContext<
        'a,
        plotters::prelude::SVGBackend<'b>,
        plotters::prelude::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Draws calls per second and p99 latency per arm against calls in flight, one pair of
/// panels per payload size, as an SVG.
pub(crate) fn draw_comparison(
    path: &std::path::Path,
    rows: &[serde_json::Value],
    separate: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut payloads: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["payload_bytes"].as_u64())
        .collect();
    payloads.dedup();
    let mut arms: Vec<String> = Vec::new();
    for row in rows {
        let arm = row["arm"].as_str().unwrap_or_default().to_owned();
        if !arms.contains(&arm) {
            arms.push(arm);
        }
    }
    let height = 300 * payloads.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, height + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "guirpc vs raw lapin, servers {}",
            if separate {
                "in a process of their own"
            } else {
                "in the client's process"
            }
        ),
        ("sans-serif", 18),
    )?;
    let colours = [BLACK, BLUE, GREEN, RED];
    let panels = body.split_evenly((payloads.len().max(1), 2));
    for (p, payload) in payloads.iter().enumerate() {
        for (column, (metric, label)) in [
            ("calls_per_second", "calls per second"),
            ("p99_us", "p99 µs"),
        ]
        .into_iter()
        .enumerate()
        {
            let of = |arm: &str| -> Vec<(f64, f64)> {
                rows.iter()
                    .filter(|r| r["payload_bytes"].as_u64() == Some(*payload) && r["arm"] == arm)
                    .map(|r| {
                        let inflight = r["in_flight"].as_f64().unwrap_or(1.0);
                        (inflight.log2(), r[metric].as_f64().unwrap_or(0.0))
                    })
                    .collect()
            };
            let top = arms
                .iter()
                .flat_map(|arm| of(arm))
                .map(|(_, y)| y)
                .fold(1.0f64, f64::max);
            let right = rows
                .iter()
                .filter_map(|r| r["in_flight"].as_f64())
                .fold(1.0f64, f64::max)
                .log2();
            let mut chart = ChartBuilder::on(&panels[p * 2 + column])
                .caption(
                    format!("{}: {label}", human_bytes(*payload as usize)),
                    ("sans-serif", 14),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.3f64..right + 0.3, 0f64..top * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("calls in flight")
                .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
                .draw()?;
            for (arm, colour) in arms.iter().zip(colours.iter().cycle()) {
                let points = of(arm);
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                    .label(arm.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|pt| Circle::new(pt, 3, colour.filled())),
                )?;
            }
            draw_legend(&mut chart)?;
        }
    }
    root.present()?;
    Ok(())
}

/// Draws each pattern's rate as a share of its baseline's against messages in flight (or
/// streams at once), medians as lines and worst rounds as rings, with the targets (90% of
/// raw lapin; 80% of the library client for the shell pipes), as an SVG.
pub(crate) fn draw_patterns(
    path: &std::path::Path,
    rows: &[serde_json::Value],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut series: Vec<String> = Vec::new();
    let name = |row: &serde_json::Value| {
        format!(
            "{}: {} vs {}",
            row["pattern"].as_str().unwrap_or_default(),
            row["arm"].as_str().unwrap_or_default(),
            row["baseline"].as_str().unwrap_or_default()
        )
    };
    for row in rows {
        if !series.contains(&name(row)) {
            series.push(name(row));
        }
    }
    let right = rows
        .iter()
        .filter_map(|r| r["in_flight"].as_f64())
        .fold(1.0f64, f64::max)
        .log2();
    let percent = |row: &serde_json::Value, key: &str| row[key].as_f64().unwrap_or(0.0) * 100.0;
    let bottom = rows
        .iter()
        .map(|r| percent(r, "worst_ratio").min(percent(r, "ratio")))
        .fold(70.0f64, f64::min);
    let top = rows
        .iter()
        .map(|r| percent(r, "worst_ratio").max(percent(r, "ratio")))
        .fold(110.0f64, f64::max);
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "guirpc's patterns as a share of their baselines (median line, worst round ring)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.3f64..right + 0.3, (bottom - 5.0)..(top + 5.0))?;
    chart
        .configure_mesh()
        .x_desc("in flight (streams: at once)")
        .y_desc("% of baseline")
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
        .draw()?;
    for (target, label) in [
        (90.0, "target: 90% of raw lapin"),
        (80.0, "target: 80% of the library (shell)"),
    ] {
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.3, target), (right + 0.3, target)],
                6,
                4,
                grey.stroke_width(1),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    let colours = [
        BLACK,
        BLUE,
        GREEN,
        RED,
        MAGENTA,
        CYAN,
        RGBColor(200, 120, 0),
    ];
    for (line, &colour) in series.iter().zip(colours.iter().cycle()) {
        let of = |key: &str| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| name(r) == *line)
                .map(|r| {
                    (
                        r["in_flight"].as_f64().unwrap_or(1.0).log2(),
                        percent(r, key),
                    )
                })
                .collect()
        };
        chart
            .draw_series(LineSeries::new(of("ratio"), colour.stroke_width(2)))?
            .label(line.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            of("ratio")
                .into_iter()
                .map(|pt| Circle::new(pt, 3, colour.filled())),
        )?;
        chart.draw_series(
            of("worst_ratio")
                .into_iter()
                .map(|pt| Circle::new(pt, 4, colour)),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One step of the scale-out run.
pub(crate) struct Step {
    pub(crate) servers: usize,
    pub(crate) rate: f64,
    pub(crate) p50: u32,
    pub(crate) p99: u32,
    /// Each server's share of the calls, as a fraction of an equal share.
    pub(crate) shares: Vec<f64>,
}

/// Draws calls per second against server processes, one line per kind of work and the
/// linear ideal of each, as an SVG.
pub(crate) fn draw_scale_out(
    path: &std::path::Path,
    curves: &[(&str, Vec<Step>)],
    work_ms: u64,
    per_server: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves
        .iter()
        .flat_map(|(_, steps)| {
            let base = steps.first().map_or(0.0, |s| s.rate);
            steps
                .iter()
                .map(move |s| s.rate.max(base * s.servers as f64))
        })
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("guirpc scale-out: {work_ms} ms of work per call, {per_server} calls at once per server"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5f64..8.5f64, 0f64..top * 1.08)?;
    chart
        .configure_mesh()
        .x_desc("server processes")
        .y_desc("calls per second")
        .x_labels(8)
        .draw()?;
    let colours = [BLUE, RED];
    for ((kind, steps), colour) in curves.iter().zip(colours) {
        let base = steps.first().map_or(0.0, |s| s.rate);
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|s| (s.servers as f64, s.rate)),
                colour.stroke_width(2),
            ))?
            .label(format!("{kind}: measured"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            steps
                .iter()
                .map(|s| Circle::new((s.servers as f64, s.rate), 4, colour.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(
                steps
                    .iter()
                    .map(|s| (s.servers as f64, base * s.servers as f64)),
                colour.mix(0.35),
            ))?
            .label(format!("{kind}: linear"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.mix(0.35)));
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}
