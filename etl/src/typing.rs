/*!
Lossless typing of text columns.

pandas turns `07850` into `7850` and `true` into `True`. Conveyor does not: a
CSV column is typed by inference only when every value it will ever write back
is byte-for-byte the text it read. So inference gives `int64` only to canonical
integers (no sign `+`, no leading zeros, no `-0`), `boolean` only to exactly
`true`/`false`, and leaves everything else, floats included, as `string`.

Inference looks at the first batch. A later value that does not fit the
inferred type is an error naming its row and column, never a silent change.
*/

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringArray};
use arrow::datatypes::DataType;
use conveyor_schemas::ColumnType;

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
    }
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

/// A value that would not convert: its index in the array and its text.
#[derive(Debug)]
pub struct BadValue {
    pub index: usize,
    pub value: String,
}

/// Converts a text column to `to`. With `strict`, only the exact text that the
/// type writes back is accepted (for inferred types); otherwise the usual
/// spellings are (for declared types and casts).
pub fn convert_text(
    values: &StringArray,
    to: ColumnType,
    strict: bool,
) -> Result<ArrayRef, BadValue> {
    let bad = |index: usize, v: &str| BadValue {
        index,
        value: v.to_string(),
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
