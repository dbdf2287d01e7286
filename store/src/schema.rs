//! The Arrow schema of a step file. `step` is not a column: it is the hive partition key in the
//! directory name, so query engines expose it without a name clash.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::manifest::{Dtype, Manifest};

pub const TRAJ_ID: &str = "traj_id";
pub const SEED: &str = "seed";
pub const SIGMA: &str = "sigma";
pub const LABEL: &str = "label";
pub const X: &str = "x";
pub const DENOISED: &str = "denoised";
/// Name of the list element inside `x` and `denoised` (arrow-rs' convention).
pub const ITEM: &str = "item";

/// Parquet key-value metadata marking a file as a bdense step file.
pub const META_FORMAT: &str = "bdense.format_version";
pub const META_STEP: &str = "bdense.step";

pub fn element_type(dtype: Dtype) -> DataType {
    match dtype {
        Dtype::F32 => DataType::Float32,
        Dtype::F16 => DataType::Float16,
    }
}

/// `FixedSizeList<f32|f16, dim>` of a state vector column.
pub fn vector_type(dtype: Dtype, dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new(ITEM, element_type(dtype), false)),
        dim as i32,
    )
}

pub fn step_schema(dtype: Dtype, dim: usize, with_denoised: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new(TRAJ_ID, DataType::UInt64, false),
        Field::new(SEED, DataType::UInt64, false),
        Field::new(SIGMA, DataType::Float32, false),
        Field::new(LABEL, DataType::Int32, true),
        Field::new(X, vector_type(dtype, dim), false),
    ];
    if with_denoised {
        fields.push(Field::new(DENOISED, vector_type(dtype, dim), false));
    }
    Arc::new(Schema::new(fields))
}

pub fn manifest_schema(m: &Manifest) -> SchemaRef {
    step_schema(m.dtype, m.dims.len(), m.has_denoised)
}

/// Describes how `found` differs from `expected`, or `None` when they match. Field metadata
/// and the nullability of list items are ignored (other writers set them differently).
pub fn schema_mismatch(expected: &Schema, found: &Schema) -> Option<String> {
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(expected) != names(found) {
        return Some(format!(
            "columns {:?}, expected {:?}",
            names(found),
            names(expected)
        ));
    }
    for (e, f) in expected.fields().iter().zip(found.fields()) {
        if !same_type(e.data_type(), f.data_type()) {
            return Some(format!(
                "column {} has type {}, expected {}",
                e.name(),
                f.data_type(),
                e.data_type()
            ));
        }
    }
    None
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::FixedSizeList(fa, na), DataType::FixedSizeList(fb, nb)) => {
            na == nb && fa.data_type() == fb.data_type()
        }
        _ => a == b,
    }
}

/// Key-value metadata of a step file of a dataset of `format_version`, in a fixed order (file
/// bytes must be reproducible).
pub fn file_metadata(format_version: u32, step: u16) -> [(String, String); 2] {
    [
        (META_FORMAT.to_string(), format_version.to_string()),
        (META_STEP.to_string(), step.to_string()),
    ]
}
