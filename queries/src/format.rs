//! Query results for people and files: a pretty table with vectors abbreviated, CSV (vectors
//! as text, since CSV cannot nest), JSON (full vectors) or Parquet.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{QueryError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!(
                "unknown format {other:?} (table, csv, json, parquet)"
            )),
        }
    }
}

fn is_vector(t: &DataType) -> bool {
    matches!(
        t,
        DataType::FixedSizeList(..) | DataType::List(_) | DataType::LargeList(_)
    )
}

/// Vector columns as text: the first `show` entries, then how many more (`show`: None = all).
pub fn vectors_as_text(batch: &RecordBatch, show: Option<usize>) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_vector(field.data_type()) {
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(vector_text(column.as_ref(), show)?));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn vector_text(column: &dyn Array, show: Option<usize>) -> Result<StringArray> {
    let as_list = cast(
        column,
        &DataType::List(Arc::new(Field::new_list_field(column_item(column), true))),
    )?;
    let list = as_list.as_list::<i32>();
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::with_capacity(list.len());
    for r in 0..list.len() {
        if list.is_null(r) {
            out.push(None);
            continue;
        }
        let values = list.value(r);
        let f = ArrayFormatter::try_new(values.as_ref(), &options)?;
        let n = values.len();
        let shown = show.unwrap_or(n).min(n);
        let mut text: Vec<String> = (0..shown).map(|i| f.value(i).to_string()).collect();
        if shown < n {
            text.push(format!("… ({n} values)"));
        }
        out.push(Some(format!("[{}]", text.join(", "))));
    }
    Ok(StringArray::from(out))
}

fn column_item(column: &dyn Array) -> DataType {
    match column.data_type() {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            f.data_type().clone()
        }
        other => other.clone(),
    }
}

/// Renders or writes `batches`. `out = None` writes to `stdout` (Parquet needs a file).
pub fn write(
    batches: &[RecordBatch],
    format: Format,
    out: Option<&Path>,
    stdout: &mut dyn Write,
) -> Result<()> {
    let name = out.map_or("stdout".to_string(), |p| p.display().to_string());
    let io = |e: std::io::Error| QueryError::Refused(format!("{name}: {e}"));
    if format == Format::Parquet {
        let Some(path) = out else {
            return Err(QueryError::Refused(
                "--format parquet needs --out FILE".into(),
            ));
        };
        return write_parquet(batches, path);
    }
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(io)?,
        )),
        None => Box::new(&mut *stdout),
    };
    match format {
        Format::Table => {
            let shown = batches
                .iter()
                .map(|b| vectors_as_text(b, Some(3)))
                .collect::<Result<Vec<_>>>()?;
            let table = datafusion::arrow::util::pretty::pretty_format_batches(&shown)?;
            writeln!(sink, "{table}").map_err(io)?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut sink);
            for b in batches {
                w.write(&vectors_as_text(b, None)?)?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    sink.flush().map_err(io)
}

fn write_parquet(batches: &[RecordBatch], path: &Path) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| QueryError::Refused(format!("{}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| fail(&e))?;
    for b in batches {
        w.write(b).map_err(|e| fail(&e))?;
    }
    w.close().map_err(|e| fail(&e))?;
    Ok(())
}
