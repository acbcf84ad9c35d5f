//! PNG learning curves for `rliv sim` results.
//!
//! [`learning_curves`] draws two panels side by side, session length per
//! round and watch time per session per round, with one line per policy
//! (its own colour and marker), a translucent band for the 95% confidence
//! interval, a legend and a title.
//!
//! Rendering uses plotters' bitmap backend and its `ab_glyph` text
//! rasteriser with a font compiled into the binary (DejaVu Sans, see
//! `assets/fonts/LICENSE-DejaVu.txt`), so no system font library
//! (fontconfig, freetype) and no installed font is needed.
//!
//! Why one file over 400 lines: layout, legend, bands and axes of one
//! figure share private drawing helpers.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// Width of the image written by [`learning_curves`], in pixels.
pub const WIDTH: u32 = 1200;
/// Height of the image written by [`learning_curves`], in pixels.
pub const HEIGHT: u32 = 500;

/// The learning curve of one policy.
///
/// Each vector holds one entry per evaluated round (index 0 is round 1):
/// `(mean over seeds, 95% confidence-interval half-width)`. Non-finite
/// values are skipped when drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Name shown in the legend.
    pub policy: String,
    /// Mean session length (requests) per round and its CI half-width.
    pub session_length: Vec<(f64, f64)>,
    /// Mean watch time per session (seconds) per round and its CI half-width.
    pub watch_time: Vec<(f64, f64)>,
    /// CTR per round and its band; empty: no CTR panel (it is drawn only
    /// when every curve has one).
    pub ctr: Vec<(f64, f64)>,
}

/// Writes a PNG of `series` to `path` ([`WIDTH`] x [`HEIGHT`] pixels, or
/// half as wide again with a CTR panel).
///
/// Fails, without writing anything, when `series` is empty, when a policy
/// has no evaluated round, when `path` does not end in `.png`, or when the
/// directory of `path` does not exist.
pub fn learning_curves(series: &[Curve], path: &Path, title: &str) -> Result<()> {
    validate(series)?;
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!(
            "cannot write learning curves to {}: the file name must end in .png",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write learning curves to {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    register_font()?;

    // 600 pixels per panel (two: WIDTH).
    let width = WIDTH / 2 * panels(series).len() as u32;
    let root = BitMapBackend::new(path, (width, HEIGHT)).into_drawing_area();
    draw(&root, series, title)
        .with_context(|| format!("drawing learning curves for {}", path.display()))?;
    root.present()
        .map_err(|e| anyhow!("writing learning curves to {}: {e}", path.display()))?;
    Ok(())
}

/// Font family under which the embedded font is registered. plotters'
/// default text styles (axis labels) use this family too.
const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Why a figure could not be drawn, before any drawing starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum PlotError {
    #[error("the embedded font DejaVuSans.ttf could not be parsed")]
    BadFont,
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), PlotError>> = OnceLock::new();
    (*REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| PlotError::BadFont)
    }))
    .map_err(anyhow::Error::new)
}

fn validate(series: &[Curve]) -> Result<()> {
    if series.is_empty() {
        bail!("no learning curves to plot: the list of policies is empty");
    }
    for c in series {
        if c.session_length.is_empty() || c.watch_time.is_empty() {
            bail!(
                "no learning curve to plot for policy `{}`: it has {} evaluated round(s) of \
                 session length and {} of watch time (need at least 1)",
                c.policy,
                c.session_length.len(),
                c.watch_time.len()
            );
        }
    }
    Ok(())
}

/// Tableau 10: distinct, colour-blind-friendly-ish hues.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn marker(i: usize) -> Marker {
    MARKERS[i % MARKERS.len()]
}

const MARKER_SIZE: i32 = 4;

struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    values: fn(&Curve) -> &[(f64, f64)],
}

const PANELS: [Panel; 3] = [
    Panel {
        caption: "session length",
        y_desc: "session length (requests)",
        values: |c| &c.session_length,
    },
    Panel {
        caption: "watch time per session",
        y_desc: "watch time per session (s)",
        values: |c| &c.watch_time,
    },
    Panel {
        caption: "CTR",
        y_desc: "CTR (clicks per exposure)",
        values: |c| &c.ctr,
    },
];

/// The panels drawn: CTR only when every curve has it.
fn panels(series: &[Curve]) -> Vec<&'static Panel> {
    let with_ctr = series.iter().all(|c| !c.ctr.is_empty());
    PANELS
        .iter()
        .filter(|p| with_ctr || p.caption != "CTR")
        .collect()
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// Draws the whole figure on `root` (any backend, so tests can draw into
/// memory).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Curve],
    title: &str,
) -> Result<()> {
    validate(series)?;
    root.fill(&WHITE).map_err(draw_err)?;
    let body = root.titled(title, (FONT, 24)).map_err(draw_err)?;

    let legend_font: TextStyle<'_> = (FONT, 15).into();
    let rows = legend_layout(&body, series, &legend_font)?;
    let n_rows = rows.iter().map(|r| r.1).max().map_or(1, |r| r + 1);
    let row_h = 22;
    let legend_h = n_rows as i32 * row_h + 12;
    let (_, body_h) = body.dim_in_pixel();
    let (plots, legend) = body.split_vertically(body_h as i32 - legend_h);

    let shown = panels(series);
    let areas = plots.split_evenly((1, shown.len()));
    for (area, panel) in areas.iter().zip(shown) {
        draw_panel(area, series, panel)?;
    }

    for (i, ((x, row), c)) in rows.iter().zip(series).enumerate() {
        let y = 6 + *row as i32 * row_h + row_h / 2;
        let col = colour(i);
        legend
            .draw(&PathElement::new(
                vec![(*x, y), (*x + 28, y)],
                col.stroke_width(2),
            ))
            .map_err(draw_err)?;
        let centre = (*x + 14, y);
        match marker(i) {
            Marker::Circle => legend.draw(&Circle::new(centre, MARKER_SIZE, col.filled())),
            Marker::Triangle => {
                legend.draw(&TriangleMarker::new(centre, MARKER_SIZE + 1, col.filled()))
            }
            Marker::Square => legend.draw(
                &(EmptyElement::at(centre)
                    + Rectangle::new(
                        [(-MARKER_SIZE, -MARKER_SIZE), (MARKER_SIZE, MARKER_SIZE)],
                        col.filled(),
                    )),
            ),
            Marker::Cross => legend.draw(&Cross::new(centre, MARKER_SIZE, col.stroke_width(2))),
        }
        .map_err(draw_err)?;
        legend
            .draw(&Text::new(
                c.policy.clone(),
                (*x + 34, y),
                legend_font.pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Places legend entries left to right, wrapping to new rows; returns each
/// entry's (x, row). The whole block is centred on the last row's width
/// when there is only one row.
fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Curve],
    font: &TextStyle<'_>,
) -> Result<Vec<(i32, usize)>> {
    let (width, _) = area.dim_in_pixel();
    let width = width as i32;
    let margin = 20;
    let gap = 28;
    let mut widths = Vec::with_capacity(series.len());
    for c in series {
        let (w, _) = area.estimate_text_size(&c.policy, font).map_err(draw_err)?;
        widths.push(34 + w as i32);
    }
    let mut out = Vec::with_capacity(series.len());
    let (mut x, mut row) = (margin, 0usize);
    for w in &widths {
        if x > margin && x + w > width - margin {
            x = margin;
            row += 1;
        }
        out.push((x, row));
        x += w + gap;
    }
    if row == 0 {
        let used = x - gap - margin;
        let shift = ((width - 2 * margin - used) / 2).max(0);
        for e in &mut out {
            e.0 += shift;
        }
    }
    Ok(out)
}

/// Runs of consecutive points whose `keep` holds, as (round, mean, ci).
fn runs(values: &[(f64, f64)], keep: impl Fn(f64, f64) -> bool) -> Vec<Vec<(f64, f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (i, &(m, ci)) in values.iter().enumerate() {
        if keep(m, ci) {
            cur.push(((i + 1) as f64, m, ci.abs()));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn y_range(series: &[Curve], values: fn(&Curve) -> &[(f64, f64)]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for c in series {
        for &(m, ci) in values(c) {
            if !m.is_finite() {
                continue;
            }
            let ci = if ci.is_finite() { ci.abs() } else { 0.0 };
            lo = lo.min(m - ci);
            hi = hi.max(m + ci);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.08
    } else if hi != 0.0 {
        hi.abs() * 0.1
    } else {
        1.0
    };
    let (lo, hi) = (lo - pad, hi + pad);
    if lo.is_finite() && hi.is_finite() && lo < hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Curve],
    panel: &Panel,
) -> Result<()> {
    let rounds = series
        .iter()
        .map(|c| (panel.values)(c).len())
        .max()
        .unwrap_or(1)
        .max(1);
    let pad = (0.02 * (rounds - 1) as f64).max(0.5);
    let x_range = (1.0 - pad)..(rounds as f64 + pad);
    let (y_lo, y_hi) = y_range(series, panel.values);

    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_lo..y_hi)
        .map_err(draw_err)?;
    let label_font: TextStyle<'_> = (FONT, 13).into();
    let desc_font: TextStyle<'_> = (FONT, 15).into();
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(panel.y_desc)
        .x_labels(rounds.min(12))
        .y_labels(8)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style(label_font)
        .axis_desc_style(desc_font)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(draw_err)?;

    // Bands first, so every line and marker is drawn over every band.
    for (i, c) in series.iter().enumerate() {
        let band = colour(i).mix(0.18);
        for run in runs((panel.values)(c), |m, ci| m.is_finite() && ci.is_finite()) {
            if run.len() == 1 {
                let (x, m, ci) = run[0];
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, m - ci), (x, m + ci)],
                        colour(i).mix(0.35).stroke_width(3),
                    )))
                    .map_err(draw_err)?;
                continue;
            }
            let mut poly: Vec<(f64, f64)> = run.iter().map(|&(x, m, ci)| (x, m + ci)).collect();
            poly.extend(run.iter().rev().map(|&(x, m, ci)| (x, m - ci)));
            chart
                .draw_series(std::iter::once(Polygon::new(poly, band.filled())))
                .map_err(draw_err)?;
        }
    }

    for (i, c) in series.iter().enumerate() {
        let col = colour(i);
        for run in runs((panel.values)(c), |m, _| m.is_finite()) {
            let pts: Vec<(f64, f64)> = run.iter().map(|&(x, m, _)| (x, m)).collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
                .map_err(draw_err)?;
            match marker(i) {
                Marker::Circle => chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, MARKER_SIZE, col.filled())),
                    )
                    .map(|_| ()),
                Marker::Triangle => chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| TriangleMarker::new(p, MARKER_SIZE + 1, col.filled())),
                    )
                    .map(|_| ()),
                Marker::Square => chart
                    .draw_series(pts.iter().map(|&p| {
                        EmptyElement::at(p)
                            + Rectangle::new(
                                [(-MARKER_SIZE, -MARKER_SIZE), (MARKER_SIZE, MARKER_SIZE)],
                                col.filled(),
                            )
                    }))
                    .map(|_| ()),
                Marker::Cross => chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Cross::new(p, MARKER_SIZE, col.stroke_width(2))),
                    )
                    .map(|_| ()),
            }
            .map_err(draw_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(rounds: usize) -> Vec<Curve> {
        let curve = |name: &str, base: f64, slope: f64| Curve {
            policy: name.to_string(),
            session_length: (0..rounds)
                .map(|r| (base + slope * r as f64, 0.8 + 0.1 * r as f64))
                .collect(),
            watch_time: (0..rounds)
                .map(|r| (10.0 * base + 3.0 * slope * r as f64, 4.0))
                .collect(),
            ctr: Vec::new(),
        };
        vec![curve("greedy", 12.0, 0.3), curve("rliv", 11.0, 0.9)]
    }

    fn read_u32_be(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn writes_a_png_of_the_expected_size() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("curves.png");
        learning_curves(&example(5), &path, "two policies, 5 rounds")?;
        let bytes = std::fs::read(&path)?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(read_u32_be(&bytes[16..20]), WIDTH);
        assert_eq!(read_u32_be(&bytes[20..24]), HEIGHT);
        assert!(bytes.len() > 10_000, "PNG is only {} bytes", bytes.len());
        Ok(())
    }

    fn render(series: &[Curve]) -> Result<Vec<u8>> {
        register_font()?;
        let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, series, "in memory")?;
            root.present().map_err(draw_err)?;
        }
        Ok(buf)
    }

    fn count_pixels(buf: &[u8], pred: impl Fn(&[u8]) -> bool) -> usize {
        buf.chunks_exact(3).filter(|p| pred(p)).count()
    }

    #[test]
    fn image_is_not_blank_and_has_policy_colours() -> Result<()> {
        let buf = render(&example(5))?;
        let total = (WIDTH * HEIGHT) as usize;
        let non_white = count_pixels(&buf, |p| p != [255, 255, 255]);
        assert!(
            non_white * 100 > total,
            "only {non_white} of {total} pixels are not white"
        );
        for i in 0..2 {
            let RGBColor(r, g, b) = colour(i);
            let exact = count_pixels(&buf, |p| p == [r, g, b]);
            assert!(exact > 200, "policy {i}: only {exact} pixels of its colour");
        }
        Ok(())
    }

    #[test]
    fn text_is_rendered_with_the_embedded_font() -> Result<()> {
        // The title strip holds only the title text: it must have dark pixels.
        let buf = render(&example(3))?;
        let strip = &buf[..(WIDTH * 30 * 3) as usize];
        let dark = count_pixels(strip, |p| p.iter().all(|&c| c < 100));
        assert!(dark > 50, "title strip has only {dark} dark pixels");
        Ok(())
    }

    #[test]
    fn empty_input_is_an_error() {
        let dir = std::env::temp_dir().join("rliv-plot-never-created.png");
        let err = learning_curves(&[], &dir, "t")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let mut curves = example(0);
        let err = learning_curves(&curves, &dir, "t")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("greedy") && err.contains("round"), "{err}");
        curves = example(3);
        curves[1].watch_time.clear();
        let err = learning_curves(&curves, &dir, "t")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("rliv"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("no/such/dir/curves.png");
        let err = learning_curves(&example(2), &path, "t")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        let not_png = dir.path().join("curves.jpg");
        let err = learning_curves(&example(2), &not_png, "t")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains(".png"), "{err}");
        Ok(())
    }

    #[test]
    fn nan_and_infinite_values_are_skipped() -> Result<()> {
        let mut curves = example(6);
        curves[0].session_length[2] = (f64::NAN, 1.0);
        curves[0].session_length[4].1 = f64::NAN;
        curves[1].watch_time[0] = (f64::INFINITY, f64::NAN);
        curves[1].session_length = vec![(f64::NAN, f64::NAN); 6];
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nan.png");
        learning_curves(&curves, &path, "with gaps")?;
        assert!(std::fs::metadata(&path)?.len() > 0);
        // A panel whose every value is NaN still draws (empty) axes.
        for c in &mut curves {
            c.session_length = vec![(f64::NAN, f64::NAN); 6];
        }
        learning_curves(&curves, &path, "all NaN on the left")?;
        Ok(())
    }

    #[test]
    fn single_round_and_many_policies_draw() -> Result<()> {
        let mut curves = Vec::new();
        for i in 0..12 {
            curves.push(Curve {
                policy: format!("policy number {i}"),
                session_length: vec![(5.0 + i as f64, 0.5)],
                watch_time: vec![(50.0, 0.0)],
                ctr: vec![(0.3, 0.01)],
            });
        }
        let buf = render(&curves)?;
        assert!(count_pixels(&buf, |p| p != [255, 255, 255]) > 0);
        Ok(())
    }

    #[test]
    fn y_range_covers_bands_and_ignores_non_finite() {
        let c = Curve {
            policy: "p".into(),
            session_length: vec![
                (10.0, 2.0),
                (f64::NAN, 1.0),
                (20.0, f64::NAN),
                (f64::INFINITY, 0.0),
            ],
            watch_time: vec![(1.0, 0.0)],
            ctr: Vec::new(),
        };
        let (lo, hi) = y_range(std::slice::from_ref(&c), |c| &c.session_length);
        assert!(lo < 8.0 && hi > 20.0 && hi < 25.0, "{lo}..{hi}");
        let (lo, hi) = y_range(std::slice::from_ref(&c), |c| &c.watch_time);
        assert!(lo < 1.0 && hi > 1.0, "{lo}..{hi}");
    }

    /// Writes /tmp/curve-example.png for a person to look at:
    /// `cargo test --release -p rliv --lib plot -- --ignored`.
    #[test]
    #[ignore]
    fn write_example_png() -> Result<()> {
        let mut curves = example(20);
        let mut third = example(20).remove(0);
        third.policy = "random".into();
        for (i, v) in third.session_length.iter_mut().enumerate() {
            *v = (9.0 + (i as f64 * 0.7).sin(), 1.5);
        }
        for (i, v) in third.watch_time.iter_mut().enumerate() {
            *v = (95.0 + 5.0 * (i as f64 * 0.5).cos(), 6.0);
        }
        curves.push(third);
        learning_curves(
            &curves,
            Path::new("/tmp/curve-example.png"),
            "rliv sim: learning curves (3 policies, 20 rounds, 5 seeds)",
        )
    }
}
