//! Vector functions over `FixedSizeList<f32 | f16>` columns, for inspecting teacher paths in
//! SQL: `l2(x)`, `l2_dist(a, b)`, `cos_sim(a, b)`, `vmean(x)`, `vstd(x)`, `all_finite(x)` and
//! the aggregate `vec_avg(x)`. Sums run in f64; a NULL vector gives NULL.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, Float64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float16Type, Float32Type, Float64Type, UInt64Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// How a scalar vector function reduces its argument(s).
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Unary(fn(&[f32]) -> f64),
    Binary(fn(&[f32], &[f32]) -> f64),
    Predicate(fn(&[f32]) -> bool),
}

impl Kernel {
    fn arity(&self) -> usize {
        match self {
            Kernel::Binary(_) => 2,
            _ => 1,
        }
    }
}

fn l2(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

fn l2_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn cos_sim(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum();
    dot / (l2(a) * l2(b))
}

fn vmean(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64
}

/// Population standard deviation of the vector's entries.
fn vstd(x: &[f32]) -> f64 {
    let m = vmean(x);
    (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

#[derive(Debug)]
pub struct VectorUdf {
    name: &'static str,
    kernel: Kernel,
    signature: Signature,
}

impl PartialEq for VectorUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for VectorUdf {}

impl std::hash::Hash for VectorUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

/// The scalar function `name` computing `kernel` over vector arguments.
fn vector_udf(name: &'static str, kernel: Kernel) -> ScalarUDF {
    ScalarUDF::from(VectorUdf {
        name,
        kernel,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// `FixedSizeList<Float32, n>`, the type every vector argument is coerced to.
fn f32_vector(n: i32) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, true)), n)
}

/// A vector argument as its FixedSizeList array and whether it is a scalar (one row).
fn vector_arg(name: &str, v: &ColumnarValue) -> Result<(FixedSizeListArray, bool)> {
    match v {
        ColumnarValue::Array(a) => match a.as_fixed_size_list_opt() {
            Some(f) => Ok((f.clone(), false)),
            None => exec_err!("{name}: expected a vector, got {}", a.data_type()),
        },
        ColumnarValue::Scalar(ScalarValue::FixedSizeList(f)) => Ok((f.as_ref().clone(), true)),
        other => exec_err!("{name}: expected a vector, got {}", other.data_type()),
    }
}

impl ScalarUDFImpl for VectorUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Casts f16 vectors and list literals to f32 vectors of one common length.
    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name;
        if types.len() != self.kernel.arity() {
            return plan_err!(
                "{name} takes {} vector argument(s), got {}",
                self.kernel.arity(),
                types.len()
            );
        }
        let Some(n) = types.iter().find_map(|t| match t {
            DataType::FixedSizeList(_, n) => Some(*n),
            _ => None,
        }) else {
            return plan_err!("{name} needs a vector column (FixedSizeList), got {types:?}");
        };
        types
            .iter()
            .map(|t| match t {
                DataType::FixedSizeList(f, m) if *m == n && f.data_type() == &DataType::Float32 => {
                    Ok(t.clone())
                }
                DataType::FixedSizeList(f, m) if *m == n && f.data_type().is_floating() => {
                    Ok(f32_vector(n))
                }
                DataType::FixedSizeList(_, m) if *m != n => {
                    plan_err!("{name}: vectors of different lengths ({n} and {m})")
                }
                DataType::List(f) | DataType::LargeList(f) if f.data_type().is_numeric() => {
                    Ok(f32_vector(n))
                }
                DataType::Null => Ok(f32_vector(n)),
                other => plan_err!("{name}: unsupported argument type {other}"),
            })
            .collect()
    }

    fn return_type(&self, _types: &[DataType]) -> Result<DataType> {
        Ok(match self.kernel {
            Kernel::Predicate(_) => DataType::Boolean,
            _ => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let vectors = args
            .args
            .iter()
            .map(|a| vector_arg(self.name, a))
            .collect::<Result<Vec<_>>>()?;
        let all_scalar = vectors.iter().all(|(_, s)| *s);
        let rows = if all_scalar { 1 } else { args.number_rows };
        let n = vectors[0].0.value_length() as usize;
        let values: Vec<&[f32]> = vectors
            .iter()
            .map(|(v, _)| v.values().as_primitive::<Float32Type>().values().as_ref())
            .collect();
        // Row `r` of argument `a` as a slice, or None where it is NULL.
        let row = |a: usize, r: usize| -> Option<&[f32]> {
            let (list, scalar) = &vectors[a];
            let r = if *scalar { 0 } else { r };
            (!list.is_null(r)).then(|| &values[a][r * n..(r + 1) * n])
        };
        let out: ArrayRef = match self.kernel {
            Kernel::Unary(f) => Arc::new(
                (0..rows)
                    .map(|r| row(0, r).map(f))
                    .collect::<Float64Array>(),
            ),
            Kernel::Binary(f) => Arc::new(
                (0..rows)
                    .map(|r| Some(f(row(0, r)?, row(1, r)?)))
                    .collect::<Float64Array>(),
            ),
            Kernel::Predicate(f) => Arc::new(
                (0..rows)
                    .map(|r| row(0, r).map(f))
                    .collect::<BooleanArray>(),
            ),
        };
        Ok(if all_scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// The scalar vector functions.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        vector_udf("l2", Kernel::Unary(l2)),
        vector_udf("l2_dist", Kernel::Binary(l2_dist)),
        vector_udf("cos_sim", Kernel::Binary(cos_sim)),
        vector_udf("vmean", Kernel::Unary(vmean)),
        vector_udf("vstd", Kernel::Unary(vstd)),
        vector_udf("all_finite", Kernel::Predicate(all_finite)),
    ]
}

pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(VecAvg {
        signature: Signature::any(1, Volatility::Immutable),
    })]
}

/// Registers every function here; names are unique (tested).
pub fn register_all(ctx: &SessionContext) {
    scalar_functions()
        .into_iter()
        .for_each(|f| ctx.register_udf(f));
    aggregate_functions()
        .into_iter()
        .for_each(|f| ctx.register_udaf(f));
}

/// Every function name this module registers.
pub fn names() -> Vec<String> {
    let scalar = scalar_functions().into_iter().map(|f| f.name().to_string());
    scalar
        .chain(
            aggregate_functions()
                .into_iter()
                .map(|f| f.name().to_string()),
        )
        .collect()
}

fn item(t: DataType) -> FieldRef {
    Arc::new(Field::new_list_field(t, true))
}

/// `vec_avg(x)`: the element-wise mean of the non-NULL vectors in a group, as f32.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct VecAvg {
    signature: Signature,
}

fn vector_len(name: &str, t: &DataType) -> Result<i32> {
    match t {
        DataType::FixedSizeList(f, n)
            if matches!(f.data_type(), DataType::Float32 | DataType::Float16) =>
        {
            Ok(*n)
        }
        other => plan_err!("{name}: expected a vector of f32 or f16, got {other}"),
    }
}

impl AggregateUDFImpl for VecAvg {
    fn name(&self) -> &str {
        "vec_avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeList(
            item(DataType::Float32),
            vector_len("vec_avg", &types[0])?,
        ))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let n = vector_len("vec_avg", args.return_field.data_type())?;
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "sum"),
                DataType::FixedSizeList(item(DataType::Float64), n),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "count"),
                DataType::UInt64,
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let n = vector_len("vec_avg", args.return_field.data_type())?;
        Ok(Box::new(VecAvgAccumulator {
            sum: vec![0.0; n as usize],
            count: 0,
            n,
        }))
    }
}

#[derive(Debug)]
struct VecAvgAccumulator {
    sum: Vec<f64>,
    count: u64,
    n: i32,
}

impl VecAvgAccumulator {
    fn add_rows<T: Copy>(
        &mut self,
        list: &FixedSizeListArray,
        values: &[T],
        to_f64: impl Fn(T) -> f64,
    ) {
        let n = self.n as usize;
        for r in (0..list.len()).filter(|&r| !list.is_null(r)) {
            for (s, &v) in self.sum.iter_mut().zip(&values[r * n..(r + 1) * n]) {
                *s += to_f64(v);
            }
            self.count += 1;
        }
    }
}

impl Accumulator for VecAvgAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(list) = values[0].as_fixed_size_list_opt() else {
            return exec_err!("vec_avg: expected a vector column");
        };
        match list.value_type() {
            DataType::Float32 => {
                let v = list.values().as_primitive::<Float32Type>().values();
                self.add_rows(list, v, |x| x as f64);
            }
            DataType::Float16 => {
                let v = list.values().as_primitive::<Float16Type>().values();
                self.add_rows(list, v, |x| x.to_f64());
            }
            t => return exec_err!("vec_avg: unsupported element type {t}"),
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_fixed_size_list();
        let counts = states[1].as_primitive::<UInt64Type>();
        let v = sums.values().as_primitive::<Float64Type>().values();
        let n = self.n as usize;
        for r in 0..sums.len() {
            if sums.is_null(r) || counts.is_null(r) {
                continue;
            }
            for (s, &x) in self.sum.iter_mut().zip(&v[r * n..(r + 1) * n]) {
                *s += x;
            }
            self.count += counts.value(r);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sums = FixedSizeListArray::try_new(
            item(DataType::Float64),
            self.n,
            Arc::new(Float64Array::from(self.sum.clone())),
            None,
        )?;
        Ok(vec![
            ScalarValue::FixedSizeList(Arc::new(sums)),
            ScalarValue::UInt64(Some(self.count)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let t = DataType::FixedSizeList(item(DataType::Float32), self.n);
        if self.count == 0 {
            return ScalarValue::try_new_null(&t);
        }
        let c = self.count as f64;
        let avg: Float32Array = self.sum.iter().map(|s| (s / c) as f32).collect();
        let list =
            FixedSizeListArray::try_new(item(DataType::Float32), self.n, Arc::new(avg), None)?;
        Ok(ScalarValue::FixedSizeList(Arc::new(list)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sum.capacity() * 8
    }
}
