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

/// Reads a float32 little-endian C-order .npy file: (values, shape).
pub fn read_npy(path: &Path) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(bad("not a .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("expected little-endian float32 in C order"));
    }
    let dims = header
        .split("'shape': (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| bad("no shape in header"))?;
    let shape: Vec<usize> = dims
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("bad shape"))?;
    let data = &bytes[start + header_len..];
    let n: usize = shape.iter().product();
    if data.len() != n * 4 {
        return Err(bad(&format!(
            "shape {shape:?} needs {} data bytes, found {}",
            n * 4,
            data.len()
        )));
    }
    Ok((
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        shape,
    ))
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

#[cfg(test)]
mod tests {
    #[test]
    fn npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        super::write_npy(&path, &values, &[2, 3, 4]).unwrap();
        assert_eq!(super::read_npy(&path).unwrap(), (values, vec![2, 3, 4]));
        std::fs::write(&path, b"nope").unwrap();
        assert!(
            super::read_npy(&path)
                .unwrap_err()
                .to_string()
                .contains("not a .npy file")
        );
    }
}
