//! Image datasets, all scaled to [-1, 1] with integer labels.
//!
//! - Fashion-MNIST from the Debian package `dataset-fashion-mnist` (the default real data);
//! - any directory of IDX files in the MNIST layout;
//! - a procedural set generated from a seed, which needs nothing on disk (for fast tests).

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the Debian package `dataset-fashion-mnist` installs its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}{hint}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("unknown dataset {0:?} (expected fashion-mnist, procedural or idx:DIR)")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatasetSource {
    FashionMnist,
    Idx(PathBuf),
    /// `count` images per split of a procedural shape set, drawn from `seed`.
    Procedural {
        seed: u64,
    },
}

impl std::str::FromStr for DatasetSource {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "fashion-mnist" => Ok(DatasetSource::FashionMnist),
            "procedural" => Ok(DatasetSource::Procedural { seed: 0 }),
            _ => {
                if let Some(dir) = s.strip_prefix("idx:") {
                    Ok(DatasetSource::Idx(dir.into()))
                } else if let Some(seed) = s.strip_prefix("procedural:") {
                    seed.parse()
                        .map(|seed| DatasetSource::Procedural { seed })
                        .map_err(|_| DataError::Unknown(s.into()))
                } else {
                    Err(DataError::Unknown(s.into()))
                }
            }
        }
    }
}

impl std::fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetSource::FashionMnist => f.write_str("fashion-mnist"),
            DatasetSource::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DatasetSource::Procedural { seed } => write!(f, "procedural:{seed}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Images `[n, c, h, w]` flattened, in [-1, 1].
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub images: Vec<f32>,
    pub labels: Vec<i32>,
    pub classes: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.dim()..(i + 1) * self.dim()]
    }

    /// The first `n` images (or all).
    pub fn take(mut self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        self.images.truncate(n * self.dim());
        self.labels.truncate(n);
        self
    }
}

impl DatasetSource {
    pub fn load(&self, split: Split) -> Result<ImageSet, DataError> {
        match self {
            DatasetSource::FashionMnist => {
                load_idx_dir(Path::new(FASHION_MNIST_DIR), split, "fashion-mnist")
            }
            DatasetSource::Idx(dir) => load_idx_dir(dir, split, &self.to_string()),
            DatasetSource::Procedural { seed } => Ok(procedural(
                *seed ^ if split == Split::Test { 0x7e57 } else { 0 },
                if split == Split::Train { 4096 } else { 1024 },
            )),
        }
    }
}

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

fn load_idx_dir(dir: &Path, split: Split, name: &str) -> Result<ImageSet, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (idims, pixels) = read_idx(&images_path, IMAGES_MAGIC)?;
    let (ldims, labels) = read_idx(&labels_path, LABELS_MAGIC)?;
    if idims[0] != ldims[0] {
        return Err(DataError::Format {
            path: labels_path,
            detail: format!("{} labels for {} images", ldims[0], idims[0]),
        });
    }
    let labels: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
    Ok(ImageSet {
        name: name.to_string(),
        channels: 1,
        height: idims[1],
        width: idims[2],
        images: pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect(),
        classes: labels.iter().max().map_or(0, |&m| m as usize + 1),
        labels,
    })
}

/// `stem.gz` or `stem` inside `dir`.
fn find_idx(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let candidates = [dir.join(format!("{stem}.gz")), dir.join(stem)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| DataError::Io {
            path: candidates[0].clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            hint: if dir == Path::new(FASHION_MNIST_DIR) {
                " (install it with: sudo apt-get install dataset-fashion-mnist)"
            } else {
                ""
            },
        })
}

/// Reads an IDX file of unsigned bytes: (dims, data). Checks the magic and the length.
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
        hint: "",
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                detail: format!("corrupt or truncated gzip data ({e})"),
            })?;
        out
    } else {
        raw
    };
    let bad = |detail: String| DataError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| bad("shorter than an IDX header".into()))?;
    if found != magic {
        return Err(bad(format!(
            "wrong magic number 0x{found:08x}, expected 0x{magic:08x} (not an IDX {} file)",
            if magic == IMAGES_MAGIC {
                "image"
            } else {
                "label"
            }
        )));
    }
    let rank = (magic & 0xff) as usize;
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("header truncated".into()))?;
    let header = 4 * (rank + 1);
    let want: usize = dims.iter().product();
    if bytes.len() - header < want {
        return Err(bad(format!(
            "truncated: dims {dims:?} need {want} bytes of data, found {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..header + want].to_vec()))
}

/// A procedural set of 1x16x16 shapes in 4 classes (bar, column, disc, ring) with random
/// position, size and brightness, all drawn from `seed`.
pub fn procedural(seed: u64, count: usize) -> ImageSet {
    const S: usize = 16;
    let mut images = vec![-1.0f32; count * S * S];
    let mut labels = Vec::with_capacity(count);
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32
    };
    for i in 0..count {
        let class = (next() * 4.0) as usize % 4;
        let (cx, cy) = (4.0 + next() * 8.0, 4.0 + next() * 8.0);
        let size = 2.0 + next() * 3.0;
        let level = 0.3 + next() * 0.7;
        let img = &mut images[i * S * S..(i + 1) * S * S];
        for y in 0..S {
            for x in 0..S {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let r = (dx * dx + dy * dy).sqrt();
                let on = match class {
                    0 => dy.abs() < 1.5 && dx.abs() < size + 2.0,
                    1 => dx.abs() < 1.5 && dy.abs() < size + 2.0,
                    2 => r < size,
                    _ => (r - size).abs() < 0.9,
                };
                if on {
                    img[y * S + x] = 2.0 * level - 1.0;
                }
            }
        }
        labels.push(class as i32);
    }
    ImageSet {
        name: format!("procedural:{seed}"),
        channels: 1,
        height: S,
        width: S,
        images,
        labels,
        classes: 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn idx_dir_loads_and_scales() {
        let dir = tempfile::tempdir().unwrap();
        write_idx(
            &dir.path().join("train-images-idx3-ubyte"),
            IMAGES_MAGIC,
            &[2, 2, 2],
            &[0, 255, 51, 204, 1, 2, 3, 4],
        );
        write_idx(
            &dir.path().join("train-labels-idx1-ubyte"),
            LABELS_MAGIC,
            &[2],
            &[3, 7],
        );
        let set = DatasetSource::Idx(dir.path().into())
            .load(Split::Train)
            .unwrap();
        assert_eq!(
            (set.len(), set.height, set.width, set.classes),
            (2, 2, 2, 8)
        );
        assert_eq!(
            set.image(0),
            &[-1.0, 1.0, 51.0 / 127.5 - 1.0, 204.0 / 127.5 - 1.0]
        );
        assert_eq!(set.labels, vec![3, 7]);
    }

    #[test]
    fn bad_idx_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("train-images-idx3-ubyte");
        let labels = dir.path().join("train-labels-idx1-ubyte");
        write_idx(&labels, LABELS_MAGIC, &[2], &[3, 7]);
        let src = DatasetSource::Idx(dir.path().into());

        let err = src.load(Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("not found"),
            "{err}"
        );

        write_idx(&images, LABELS_MAGIC, &[2, 2, 2], &[0; 8]);
        let err = src.load(Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("wrong magic"),
            "{err}"
        );

        write_idx(&images, IMAGES_MAGIC, &[2, 2, 2], &[0; 5]);
        let err = src.load(Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
            "{err}"
        );

        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            [0x1f, 0x8b, 8, 0, 1, 2],
        )
        .unwrap();
        let err = src.load(Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz") && err.contains("gzip"),
            "{err}"
        );
    }

    #[test]
    fn procedural_is_deterministic_and_in_range() {
        let a = procedural(5, 64);
        assert_eq!(a.images, procedural(5, 64).images);
        assert_ne!(a.images, procedural(6, 64).images);
        assert!(a.images.iter().all(|&v| (-1.0..=1.0).contains(&v)));
        let mut seen = [0; 4];
        a.labels.iter().for_each(|&l| seen[l as usize] += 1);
        assert!(seen.iter().all(|&n| n > 5), "{seen:?}");
    }

    #[test]
    fn fashion_mnist_when_installed() {
        if !Path::new(FASHION_MNIST_DIR).exists() {
            eprintln!("skipping: {FASHION_MNIST_DIR} not installed");
            return;
        }
        let test = DatasetSource::FashionMnist.load(Split::Test).unwrap();
        assert_eq!(
            (test.len(), test.height, test.width, test.classes),
            (10_000, 28, 28, 10)
        );
        let mean = test.images.iter().map(|&v| v as f64).sum::<f64>() / test.images.len() as f64;
        // Fashion-MNIST pixel mean is 0.286 on [0, 1]: -0.428 on [-1, 1].
        assert!((mean + 0.428).abs() < 0.01, "mean {mean}");
    }
}
