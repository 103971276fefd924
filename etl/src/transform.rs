/*!
Batch steps: drop, select, rename, filter, cast. Each applies to one record
batch at a time (SQL steps run over all the rows, in [`crate::sql`]). [`plan`] runs the steps over an empty batch first, so a missing
column fails before any data is read, even for an empty input.

A cast from text into a date, timestamp or decimal reads only the canonical
text (see [`crate::canonical`]), and one back to text writes it. A cast
between a date, timestamp or decimal and another type must not change a
value: the result is cast back and compared, and the first value that would
come back different (a decimal rounded to a smaller scale, a timestamp's
time of day dropped by a cast to date) fails the step, naming its row.

A filter on a date, timestamp or decimal column compares in the column's
type: a string value is read as that type's canonical text
(`{ column = "day", op = "ge", value = "2026-01-05" }`), and an integer
against a decimal column as that decimal.
*/

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, Scalar};
use arrow::compute::kernels::cmp;
use arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use conveyor_schemas::{CastStep, CompareOp, FilterStep, Literal, Step};

use crate::error::{EtlError, Result};
use crate::typing::{arrow_type, canonical_text, column_type, convert_text, has_canonical_text};

/// Checks `steps` against `input` and returns the output schema.
pub fn plan(input: &SchemaRef, steps: &[Step]) -> Result<SchemaRef> {
    plan_from(input, steps, 0)
}

/// [`plan`] for steps that follow `first` others (numbered from `first` + 1).
pub fn plan_from(input: &SchemaRef, steps: &[Step], first: usize) -> Result<SchemaRef> {
    let empty = RecordBatch::new_empty(input.clone());
    Ok(apply_from(&empty, steps, first, 0)?.schema())
}

/// Applies every step to one batch. `row_base` numbers rows in errors.
pub fn apply(batch: &RecordBatch, steps: &[Step], row_base: usize) -> Result<RecordBatch> {
    apply_from(batch, steps, 0, row_base)
}

/// [`apply`] for steps that follow `first` others (numbered from `first` + 1).
pub fn apply_from(
    batch: &RecordBatch,
    steps: &[Step],
    first: usize,
    row_base: usize,
) -> Result<RecordBatch> {
    let mut batch = batch.clone();
    for (i, step) in steps.iter().enumerate() {
        batch = apply_step(&batch, step, row_base).map_err(|e| {
            EtlError::Spec(format!("step {} ({}): {e}", first + i + 1, step_name(step)))
        })?;
    }
    Ok(batch)
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Drop(_) => "drop",
        Step::Select(_) => "select",
        Step::Rename(_) => "rename",
        Step::Filter(_) => "filter",
        Step::Cast(_) => "cast",
        Step::Sql { .. } => "sql",
    }
}

fn column_index(schema: &Schema, name: &str) -> std::result::Result<usize, String> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        format!(
            "no column `{name}`; the columns are: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )
    })
}

fn apply_step(
    batch: &RecordBatch,
    step: &Step,
    row_base: usize,
) -> std::result::Result<RecordBatch, String> {
    let schema = batch.schema();
    match step {
        Step::Drop(names) => {
            let mut drop = HashSet::new();
            for n in names {
                drop.insert(column_index(&schema, n)?);
            }
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|i| !drop.contains(i))
                .collect();
            batch.project(&keep).map_err(|e| e.to_string())
        }
        Step::Select(names) => {
            let mut seen = HashSet::new();
            let mut keep = Vec::with_capacity(names.len());
            for n in names {
                if !seen.insert(n) {
                    return Err(format!("column `{n}` is selected twice"));
                }
                keep.push(column_index(&schema, n)?);
            }
            batch.project(&keep).map_err(|e| e.to_string())
        }
        Step::Rename(map) => {
            for old in map.keys() {
                column_index(&schema, old)?;
            }
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match map.get(f.name()) {
                    Some(new) => f.as_ref().clone().with_name(new),
                    None => f.as_ref().clone(),
                })
                .collect();
            let mut names = HashSet::new();
            for f in &fields {
                if !names.insert(f.name().clone()) {
                    return Err(format!("two columns would be named `{}`", f.name()));
                }
            }
            RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec())
                .map_err(|e| e.to_string())
        }
        Step::Filter(f) => {
            let mask = filter_mask(batch, f, row_base)?;
            filter_record_batch(batch, &mask).map_err(|e| e.to_string())
        }
        Step::Cast(c) => cast_column(batch, c, row_base),
        // The pipeline runs SQL steps on DataFusion (crate::sql), over all
        // the rows; one never reaches a single batch.
        Step::Sql { .. } => Err("a SQL step runs over all the rows, not one batch".into()),
    }
}

fn literal_array(value: &Literal) -> ArrayRef {
    match value {
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        Literal::Int(i) => Arc::new(arrow::array::Int64Array::from(vec![*i])),
        Literal::Float(x) => Arc::new(arrow::array::Float64Array::from(vec![*x])),
        Literal::String(s) => Arc::new(arrow::array::StringArray::from(vec![s.as_str()])),
    }
}

/// The type both sides are compared in: the literal's, except that an integer
/// literal against a float column compares as float, and a string (or, for a
/// decimal, an integer) against a date, timestamp or decimal column compares
/// in the column's type.
fn compare_type(column: &DataType, value: &Literal) -> DataType {
    if let Some(t) = column_type(column).filter(|t| has_canonical_text(*t)) {
        match (t, value) {
            (_, Literal::String(_))
            | (conveyor_schemas::ColumnType::Decimal { .. }, Literal::Int(_)) => {
                return column.clone()
            }
            _ => {}
        }
    }
    match (column, value) {
        (DataType::Float64, Literal::Int(_)) => DataType::Float64,
        (_, Literal::Bool(_)) => DataType::Boolean,
        (_, Literal::Int(_)) => DataType::Int64,
        (_, Literal::Float(_)) => DataType::Float64,
        (_, Literal::String(_)) => DataType::Utf8,
    }
}

fn filter_mask(
    batch: &RecordBatch,
    f: &FilterStep,
    row_base: usize,
) -> std::result::Result<BooleanArray, String> {
    let idx = column_index(&batch.schema(), &f.column)?;
    let column = batch.column(idx);
    let target = compare_type(column.data_type(), &f.value);
    let left = to_type(column, &target, &f.column, row_base, false)?;
    let right = literal_as(&f.value, &target)?;
    let right = Scalar::new(right);
    let mask = match f.op {
        CompareOp::Eq => cmp::eq(&left, &right),
        CompareOp::Ne => cmp::neq(&left, &right),
        CompareOp::Lt => cmp::lt(&left, &right),
        CompareOp::Le => cmp::lt_eq(&left, &right),
        CompareOp::Gt => cmp::gt(&left, &right),
        CompareOp::Ge => cmp::gt_eq(&left, &right),
    }
    .map_err(|e| e.to_string())?;
    Ok(mask)
}

/// A filter's value in the type it is compared in.
fn literal_as(value: &Literal, target: &DataType) -> std::result::Result<ArrayRef, String> {
    let array = literal_array(value);
    if let (Literal::String(_), Some(t)) = (value, column_type(target)) {
        if has_canonical_text(t) {
            return convert_text(array.as_string::<i32>(), t, false)
                .map_err(|bad| format!("filter {}", bad.describe(t)));
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&array, target, &options)
        .map_err(|e| format!("filter value cannot be compared as {target}: {e}"))
}

/// Converts a column for comparison or cast. Text goes through the lenient
/// parser so a bad value is reported with its row. With `lossless`, a
/// conversion into or out of a date, timestamp or decimal must give every
/// value back when cast back.
fn to_type(
    column: &ArrayRef,
    target: &DataType,
    name: &str,
    row_base: usize,
    lossless: bool,
) -> std::result::Result<ArrayRef, String> {
    if column.data_type() == target {
        return Ok(column.clone());
    }
    // Other string layouts (a SQL step's output may hold them) go through
    // the same text rules as Utf8: arrow's own cast would read `007` as 7.
    if matches!(column.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
        let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| {
            format!(
                "cannot read column `{name}` ({}) as text: {e}",
                column.data_type()
            )
        })?;
        return to_type(&text, target, name, row_base, lossless);
    }
    if column.data_type() == &DataType::Utf8 {
        let to = column_type(target)
            .ok_or_else(|| format!("cannot convert column `{name}` to {target}"))?;
        return convert_text(column.as_string::<i32>(), to, false).map_err(|bad| {
            format!(
                "column `{name}`, data row {}: {}",
                row_base + bad.index + 1,
                bad.describe(to)
            )
        });
    }
    if target == &DataType::Utf8 {
        if let Some(text) = canonical_text(column.as_ref()) {
            return Ok(Arc::new(text));
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let cannot = |e: arrow::error::ArrowError| {
        format!(
            "cannot convert column `{name}` from {} to {target}: {e}",
            column.data_type()
        )
    };
    let out = cast_with_options(column, target, &options).map_err(cannot)?;
    let exact = |t: &DataType| column_type(t).is_some_and(has_canonical_text);
    if lossless && (exact(column.data_type()) || exact(target)) {
        let back = cast_with_options(&out, column.data_type(), &options).map_err(cannot)?;
        let changed = cmp::distinct(column, &back).map_err(|e| e.to_string())?;
        if let Some(i) = changed.values().set_indices().next() {
            let show = |a: &dyn Array| {
                arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
            };
            return Err(format!(
                "column `{name}`, data row {}: value `{}` would change in the cast to {target} (it would come back as `{}`)",
                row_base + i + 1,
                show(column.as_ref()),
                show(back.as_ref())
            ));
        }
    }
    Ok(out)
}

fn cast_column(
    batch: &RecordBatch,
    c: &CastStep,
    row_base: usize,
) -> std::result::Result<RecordBatch, String> {
    let schema = batch.schema();
    let idx = column_index(&schema, &c.column)?;
    let target = arrow_type(c.to);
    let converted = to_type(batch.column(idx), &target, &c.column, row_base, true)?;
    let mut columns = batch.columns().to_vec();
    columns[idx] = converted;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == idx {
                Field::new(f.name(), target.clone(), true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::collections::BTreeMap;

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("code", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(Int64Array::from(vec![1, 5, 9])),
                Arc::new(StringArray::from(vec!["07850", "2.5", "10"])),
            ],
        )
        .unwrap()
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    #[test]
    fn drop_removes_only_the_named_column_and_keeps_values() {
        let out = apply(&sample(), &[Step::Drop(vec!["n".into()])], 0).unwrap();
        assert_eq!(names(&out), ["name", "code"]);
        assert_eq!(out.column(1).as_string::<i32>().value(0), "07850");
    }

    #[test]
    fn drop_of_a_missing_column_names_it_and_the_columns() {
        let err = apply(&sample(), &[Step::Drop(vec!["HEX".into()])], 0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`HEX`") && text.contains("name, n, code"),
            "{text}"
        );
    }

    #[test]
    fn select_reorders_and_rejects_duplicates() {
        let out = apply(
            &sample(),
            &[Step::Select(vec!["code".into(), "name".into()])],
            0,
        )
        .unwrap();
        assert_eq!(names(&out), ["code", "name"]);
        assert!(apply(&sample(), &[Step::Select(vec!["n".into(), "n".into()])], 0).is_err());
    }

    #[test]
    fn rename_renames_and_refuses_collisions() {
        let map = BTreeMap::from([("n".to_string(), "count".to_string())]);
        let out = apply(&sample(), &[Step::Rename(map)], 0).unwrap();
        assert_eq!(names(&out), ["name", "count", "code"]);
        let clash = BTreeMap::from([("n".to_string(), "name".to_string())]);
        assert!(apply(&sample(), &[Step::Rename(clash)], 0).is_err());
    }

    #[test]
    fn filter_compares_ints_and_strings() {
        let gt = Step::Filter(FilterStep {
            column: "n".into(),
            op: CompareOp::Gt,
            value: Literal::Int(1),
        });
        assert_eq!(apply(&sample(), &[gt], 0).unwrap().num_rows(), 2);
        let ne = Step::Filter(FilterStep {
            column: "name".into(),
            op: CompareOp::Ne,
            value: Literal::String("b".into()),
        });
        let out = apply(&sample(), &[ne], 0).unwrap();
        assert_eq!(out.num_rows(), 2);
        // The compared text column is untouched in the output.
        assert_eq!(out.column(2).as_string::<i32>().value(0), "07850");
    }

    #[test]
    fn filter_on_text_that_is_not_numeric_names_the_row() {
        let f = Step::Filter(FilterStep {
            column: "name".into(),
            op: CompareOp::Lt,
            value: Literal::Int(3),
        });
        let err = apply(&sample(), &[f], 100).unwrap_err().to_string();
        assert!(err.contains("data row 101") && err.contains("`a`"), "{err}");
    }

    #[test]
    fn cast_converts_and_reports_bad_values() {
        let ok = Step::Cast(CastStep {
            column: "n".into(),
            to: conveyor_schemas::ColumnType::Float64,
        });
        let out = apply(&sample(), &[ok], 0).unwrap();
        assert_eq!(out.schema().field(1).data_type(), &DataType::Float64);
        let bad = Step::Cast(CastStep {
            column: "code".into(),
            to: conveyor_schemas::ColumnType::Int64,
        });
        let err = apply(&sample(), &[bad], 0).unwrap_err().to_string();
        assert!(err.contains("`2.5`") && err.contains("data row 2"), "{err}");
    }

    fn texts(values: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.to_vec()))]).unwrap()
    }

    fn cast(to: &str) -> Step {
        Step::Cast(CastStep {
            column: "v".into(),
            to: conveyor_schemas::ColumnType::parse(to).unwrap(),
        })
    }

    #[test]
    fn casts_to_dates_timestamps_and_decimals_read_canonical_text_and_write_it_back() {
        for (to, values) in [
            ("date", vec!["2026-01-05", "1999-12-31"]),
            (
                "timestamp",
                vec!["2026-01-05T10:30:00.25", "2026-01-05T00:00:00"],
            ),
            (
                "timestamptz",
                vec!["2026-01-05T10:30:00Z", "1969-07-20T20:17:40.000001Z"],
            ),
            (
                "decimal(38,10)",
                vec!["12345678901234567890.0123456789", "-0.0000000001"],
            ),
        ] {
            let typed = apply(&texts(&values), &[cast(to)], 0).unwrap();
            assert_eq!(
                typed.schema().field(0).data_type(),
                &arrow_type(conveyor_schemas::ColumnType::parse(to).unwrap())
            );
            let back = apply(&typed, &[cast("string")], 0).unwrap();
            let back: Vec<&str> = back.column(0).as_string::<i32>().iter().flatten().collect();
            assert_eq!(back, values, "{to}");
        }
    }

    #[test]
    fn a_cast_refuses_text_it_would_rewrite_naming_row_column_and_value() {
        let err = apply(&texts(&["1.50", "1.5"]), &[cast("decimal(10,2)")], 40)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column `v`, data row 42")
                && err.contains("value `1.5` is not a valid decimal(10,2)")
                && err.contains("written back as `1.50`"),
            "{err}"
        );
        let err = apply(&texts(&["2026-13-01"]), &[cast("date")], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`2026-13-01` is not a valid date"), "{err}");
        // The same text in the other string layouts (a SQL step's output)
        // follows the same rule, not arrow's own cast.
        for layout in [DataType::Utf8View, DataType::LargeUtf8] {
            let b = texts(&["1.50", "1.5"]);
            let col = arrow::compute::cast(b.column(0), &layout).unwrap();
            let schema = Arc::new(Schema::new(vec![Field::new("v", layout.clone(), true)]));
            let b = RecordBatch::try_new(schema, vec![col]).unwrap();
            let err = apply(&b, &[cast("decimal(10,2)")], 0)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("value `1.5` is not a valid decimal(10,2)"),
                "{layout}: {err}"
            );
        }
    }

    #[test]
    fn a_cast_between_exact_types_that_would_lose_a_value_fails() {
        let dec = apply(&texts(&["1.20", "1.25"]), &[cast("decimal(10,2)")], 0).unwrap();
        // 1.20 fits one decimal place; 1.25 would be rounded.
        let err = apply(&dec, &[cast("decimal(10,1)")], 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data row 2") && err.contains("`1.25`"),
            "{err}"
        );
        let ts = apply(
            &texts(&["2026-01-05T00:00:00", "2026-01-05T10:00:00"]),
            &[cast("timestamp")],
            0,
        )
        .unwrap();
        let err = apply(&ts, &[cast("date")], 0).unwrap_err().to_string();
        assert!(err.contains("data row 2"), "{err}");
        // Widening is exact.
        let wider = apply(&dec, &[cast("decimal(12,4)")], 0).unwrap();
        let text = apply(&wider, &[cast("string")], 0).unwrap();
        assert_eq!(text.column(0).as_string::<i32>().value(1), "1.2500");
    }

    #[test]
    fn a_filter_compares_dates_and_decimals_in_their_own_type() {
        let days = apply(
            &texts(&["2026-01-04", "2026-01-05", "2026-02-01"]),
            &[cast("date")],
            0,
        )
        .unwrap();
        let since = Step::Filter(FilterStep {
            column: "v".into(),
            op: CompareOp::Ge,
            value: Literal::String("2026-01-05".into()),
        });
        assert_eq!(apply(&days, &[since], 0).unwrap().num_rows(), 2);
        let amounts = apply(
            &texts(&["0.99", "1.00", "10.00"]),
            &[cast("decimal(10,2)")],
            0,
        )
        .unwrap();
        let at_least_one = Step::Filter(FilterStep {
            column: "v".into(),
            op: CompareOp::Ge,
            value: Literal::Int(1),
        });
        assert_eq!(apply(&amounts, &[at_least_one], 0).unwrap().num_rows(), 2);
        let bad = Step::Filter(FilterStep {
            column: "v".into(),
            op: CompareOp::Eq,
            value: Literal::String("2026-1-5".into()),
        });
        let err = apply(&days, &[bad], 0).unwrap_err().to_string();
        assert!(err.contains("written back as `2026-01-05`"), "{err}");
    }

    #[test]
    fn plan_catches_a_missing_column_without_data() {
        let schema = sample().schema();
        assert!(plan(&schema, &[Step::Drop(vec!["zzz".into()])]).is_err());
        let out = plan(&schema, &[Step::Drop(vec!["n".into()])]).unwrap();
        assert_eq!(out.fields().len(), 2);
    }
}
