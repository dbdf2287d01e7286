//! Line plots as PNG (plotters on a bitmap, text with a system TrueType font).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use plotters::prelude::*;

/// Fonts tried in order; Debian's fonts-dejavu-core provides the first.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a sans-serif font with plotters once; false when none is installed.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

pub const BLUE_: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE_: RGBColor = RGBColor(255, 127, 14);
pub const GREEN_: RGBColor = RGBColor(44, 160, 44);
pub const GREY_: RGBColor = RGBColor(120, 120, 120);

/// A line plot of `series` into `path` (800x480 PNG); `log_y` plots log10 of y.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> anyhow::Result<()> {
    if !font_ready() {
        bail!(
            "no TrueType font found for plot text (install fonts-dejavu-core); tried {FONT_PATHS:?}"
        );
    }
    let (w, h) = (800u32, 480u32);
    let mut buffer = vec![0u8; (w * h * 3) as usize];
    let transform = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (x, transform(y))))
        .filter(|(_, y)| y.is_finite())
        .collect();
    if all.is_empty() {
        bail!("nothing to plot for {title}");
    }
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(_, y)| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let y_desc = if log_y {
            format!("log10 {y_label}")
        } else {
            y_label.to_string()
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_desc)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for s in series {
            let color = s.color;
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|&(x, y)| (x, transform(y)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            let style = ShapeStyle {
                color: color.to_rgba(),
                filled: false,
                stroke_width: if s.dashed { 1 } else { 2 },
            };
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    image::RgbImage::from_raw(w, h, buffer)
        .context("plot buffer")?
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}
