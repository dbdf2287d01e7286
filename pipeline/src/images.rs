//! Pictures and raw arrays: PNG grids of images in [-1, 1] and .npy files numpy can load.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `[n, ...shape]` f32 values as a NumPy .npy (format 1.0, little-endian).
pub fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> anyhow::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that data starts on a multiple of 64 bytes, header ends with a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    values
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&out))
        .with_context(|| format!("writing {}", path.display()))
}

/// A PNG with one row of `per_row` images per entry of `rows` (each `[per_row, C, H, W]`),
/// each pixel drawn as a `scale` x `scale` block, 1-pixel gaps; channels beyond the first
/// three are dropped, one channel is grey.
pub fn write_grid(
    path: &Path,
    rows: &[Vec<f32>],
    per_row: usize,
    [c, h, w]: [usize; 3],
    scale: usize,
) -> anyhow::Result<()> {
    let cols = per_row.min(16);
    let lines_per_row = per_row.div_ceil(cols);
    let total_lines = rows.len() * lines_per_row;
    let (ch, cw) = (h * scale, w * scale);
    let (width, height) = (cols * (cw + 1) + 1, total_lines * (ch + 1) + 1);
    let mut img =
        image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([40, 40, 40]));
    let dim = c * h * w;
    for (r, values) in rows.iter().enumerate() {
        for i in 0..per_row {
            let (line, col) = (r * lines_per_row + i / cols, i % cols);
            let (x0, y0) = (col * (cw + 1) + 1, line * (ch + 1) + 1);
            let pixels = &values[i * dim..(i + 1) * dim];
            for y in 0..ch {
                for x in 0..cw {
                    let px =
                        |k: usize| to_byte(pixels[(k.min(c - 1) * h + y / scale) * w + x / scale]);
                    img.put_pixel(
                        (x0 + x) as u32,
                        (y0 + y) as u32,
                        image::Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

fn to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}
