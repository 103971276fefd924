/*!
Lossless typing of text columns.

pandas turns `07850` into `7850` and `true` into `True`. Conveyor does not: a
CSV column is typed by inference only when every value it will ever write back
is byte-for-byte the text it read. So inference gives `int64` only to canonical
integers (no sign `+`, no leading zeros, no `-0`), `boolean` only to exactly
`true`/`false`, and leaves everything else, floats included, as `string`.

Inference looks at the first batch. A later value that does not fit the
inferred type is an error naming its row and column, never a silent change.

Inference never picks `date`, `timestamp`, `timestamptz` or `decimal(P,S)`;
a declared schema or a cast does, and then only the canonical text of each
value is read (see [`crate::canonical`]), which is also what the CSV and
JSON-lines writers write ([`text_columns`]).
*/

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, RecordBatch, StringArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Schema, TimeUnit, TimestampMicrosecondType,
};
use conveyor_schemas::ColumnType;

use crate::canonical::{self, Refusal};

/// The zone of a `timestamptz` column.
pub const UTC: &str = "UTC";

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
    }
}

/// The Conveyor type of an Arrow type, if it is one.
pub fn column_type(t: &DataType) -> Option<ColumnType> {
    Some(match t {
        DataType::Utf8 => ColumnType::String,
        DataType::Int64 => ColumnType::Int64,
        DataType::Float64 => ColumnType::Float64,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, None) => ColumnType::Timestamp,
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == UTC => {
            ColumnType::TimestampTz
        }
        DataType::Decimal128(precision, scale)
            if *precision >= 1 && *scale >= 0 && (*scale as u8) <= *precision =>
        {
            ColumnType::Decimal {
                precision: *precision,
                scale: *scale as u8,
            }
        }
        _ => return None,
    })
}

/// Whether values of `t` have one canonical text (see [`crate::canonical`]).
pub fn has_canonical_text(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::Date
            | ColumnType::Timestamp
            | ColumnType::TimestampTz
            | ColumnType::Decimal { .. }
    )
}

/// A column of dates, timestamps or decimals as its canonical text; `None`
/// for other columns.
pub fn canonical_text(column: &dyn Array) -> Option<StringArray> {
    let t = column_type(column.data_type()).filter(|t| has_canonical_text(*t))?;
    Some(match t {
        ColumnType::Date => column
            .as_primitive::<Date32Type>()
            .iter()
            .map(|v| v.map(canonical::format_date))
            .collect(),
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            let utc = t == ColumnType::TimestampTz;
            column
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.map(|v| canonical::format_timestamp(v, utc)))
                .collect()
        }
        ColumnType::Decimal { scale, .. } => column
            .as_primitive::<Decimal128Type>()
            .iter()
            .map(|v| v.map(|v| canonical::format_decimal(v, scale)))
            .collect(),
        _ => return None,
    })
}

/// The batch with its date, timestamp and decimal columns as their
/// canonical text, for the text writers (CSV, JSON lines).
pub fn text_columns(batch: &RecordBatch) -> arrow::error::Result<RecordBatch> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| column_type(f.data_type()).is_some_and(has_canonical_text))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match canonical_text(column.as_ref()) {
            Some(text) => {
                fields.push(Field::new(
                    field.name(),
                    DataType::Utf8,
                    field.is_nullable(),
                ));
                columns.push(Arc::new(text));
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

pub fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let shape_ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    shape_ok && s.parse::<i64>().is_ok()
}

/// Infers the narrowest lossless type of a text column.
pub fn infer_column(values: &StringArray) -> ColumnType {
    let mut non_null = values.iter().flatten().peekable();
    if non_null.peek().is_none() {
        return ColumnType::String;
    }
    let (mut int_ok, mut bool_ok) = (true, true);
    for v in non_null {
        int_ok = int_ok && is_canonical_int(v);
        bool_ok = bool_ok && (v == "true" || v == "false");
        if !int_ok && !bool_ok {
            return ColumnType::String;
        }
    }
    if int_ok {
        ColumnType::Int64
    } else {
        ColumnType::Boolean
    }
}

/// A value that would not convert: its index in the array, its text, and
/// why when there is more to say than that it is not of the type.
#[derive(Debug)]
pub struct BadValue {
    pub index: usize,
    pub value: String,
    pub why: Option<String>,
}

impl BadValue {
    /// `value `x` is not a valid T`, then the reason if there is one.
    pub fn describe(&self, to: ColumnType) -> String {
        let mut text = format!("value `{}` is not a valid {to}", self.value.escape_debug());
        if let Some(why) = &self.why {
            text.push_str(": ");
            text.push_str(why);
        }
        text
    }
}

/// Reads a text column with `parse`, which accepts only canonical text.
fn canonical_column<T, B>(
    values: &StringArray,
    mut builder: B,
    parse: impl Fn(&str) -> Result<T, Refusal>,
    append: impl Fn(&mut B, Option<T>),
) -> Result<B, BadValue> {
    for (index, v) in values.iter().enumerate() {
        match v {
            None => append(&mut builder, None),
            Some(s) => {
                let value = parse(s).map_err(|why| BadValue {
                    index,
                    value: s.to_string(),
                    why,
                })?;
                append(&mut builder, Some(value));
            }
        }
    }
    Ok(builder)
}

/// Converts a text column to `to`. With `strict`, only the exact text that the
/// type writes back is accepted (for inferred types); otherwise the usual
/// spellings are (for declared types and casts). Dates, timestamps and
/// decimals only ever accept their canonical text.
pub fn convert_text(
    values: &StringArray,
    to: ColumnType,
    strict: bool,
) -> Result<ArrayRef, BadValue> {
    let bad = |index: usize, v: &str| BadValue {
        index,
        value: v.to_string(),
        why: None,
    };
    Ok(match to {
        ColumnType::String => Arc::new(values.clone()),
        ColumnType::Int64 => {
            let mut b = Int64Builder::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(s) => {
                        let text = if strict { s } else { s.trim() };
                        if strict && !is_canonical_int(text) {
                            return Err(bad(i, s));
                        }
                        b.append_value(text.parse::<i64>().map_err(|_| bad(i, s))?);
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Float64 => {
            let mut b = Float64Builder::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(s) => b.append_value(s.trim().parse::<f64>().map_err(|_| bad(i, s))?),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(s) => {
                        let parsed = if strict {
                            match s {
                                "true" => Some(true),
                                "false" => Some(false),
                                _ => None,
                            }
                        } else {
                            match s.trim().to_ascii_lowercase().as_str() {
                                "true" | "t" | "yes" | "1" => Some(true),
                                "false" | "f" | "no" | "0" => Some(false),
                                _ => None,
                            }
                        };
                        b.append_value(parsed.ok_or_else(|| bad(i, s))?);
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Date => {
            let b = Date32Builder::with_capacity(values.len());
            let mut b =
                canonical_column(values, b, canonical::parse_date, |b, v| b.append_option(v))?;
            Arc::new(b.finish())
        }
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            let parse = if to == ColumnType::Timestamp {
                canonical::parse_timestamp
            } else {
                canonical::parse_timestamptz
            };
            let b = TimestampMicrosecondBuilder::with_capacity(values.len());
            let mut b = canonical_column(values, b, parse, |b, v| b.append_option(v))?;
            let zone = (to == ColumnType::TimestampTz).then_some(UTC);
            Arc::new(b.finish().with_timezone_opt(zone))
        }
        ColumnType::Decimal { precision, scale } => {
            let b = Decimal128Builder::with_capacity(values.len());
            let parse = |s: &str| canonical::parse_decimal(s, precision, scale);
            let mut b = canonical_column(values, b, parse, |b, v| b.append_option(v))?;
            let array = b
                .finish()
                .with_precision_and_scale(precision, scale as i8)
                .map_err(|e| BadValue {
                    index: 0,
                    value: String::new(),
                    why: Some(e.to_string()),
                })?;
            Arc::new(array)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn text(values: &[Option<&str>]) -> StringArray {
        StringArray::from(values.to_vec())
    }

    #[test]
    fn inference_never_types_a_value_it_would_rewrite() {
        assert_eq!(
            infer_column(&text(&[Some("1"), Some("-20"), None])),
            ColumnType::Int64
        );
        assert_eq!(
            infer_column(&text(&[Some("07850"), Some("1")])),
            ColumnType::String
        );
        assert_eq!(infer_column(&text(&[Some("+1")])), ColumnType::String);
        assert_eq!(infer_column(&text(&[Some("-0")])), ColumnType::String);
        assert_eq!(infer_column(&text(&[Some("1.50")])), ColumnType::String);
        assert_eq!(
            infer_column(&text(&[Some("true"), Some("false")])),
            ColumnType::Boolean
        );
        assert_eq!(infer_column(&text(&[Some("True")])), ColumnType::String);
        assert_eq!(infer_column(&text(&[None, None])), ColumnType::String);
        assert_eq!(
            infer_column(&text(&[Some("99999999999999999999")])),
            ColumnType::String
        );
    }

    #[test]
    fn strict_conversion_reports_the_offending_row() {
        let err =
            convert_text(&text(&[Some("1"), Some("007")]), ColumnType::Int64, true).unwrap_err();
        assert_eq!((err.index, err.value.as_str()), (1, "007"));
        let lenient = convert_text(&text(&[Some(" 7 ")]), ColumnType::Int64, false).unwrap();
        let ints = lenient.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ints.value(0), 7);
    }
}
