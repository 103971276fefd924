/*!
Columns and their types as sources report them: declared schemas, the
check of a file's columns against them, and lists for errors.
*/

use std::path::Path;

use arrow::datatypes::{DataType, Field, Schema};
use conveyor_schemas::{ColumnSpec, ColumnType};

use crate::error::{EtlError, Result};
use crate::typing::arrow_type;

pub fn field_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn column_type(t: &DataType) -> ColumnType {
    crate::typing::column_type(t).unwrap_or(ColumnType::String)
}

pub(crate) fn declared_schema(cols: &[ColumnSpec]) -> Schema {
    Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, arrow_type(c.column_type), true))
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn check_declared(
    declared: Option<&[ColumnSpec]>,
    actual: &Schema,
    file: &Path,
) -> Result<()> {
    let Some(cols) = declared else { return Ok(()) };
    let names: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
    if cols.len() != names.len() {
        return Err(EtlError::data(
            file,
            format!(
                "declared schema has {} columns but the file has {} ({})",
                cols.len(),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    for (i, (col, name)) in cols.iter().zip(&names).enumerate() {
        if col.name != *name {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column {} is `{name}` in the file but `{}` in the schema",
                    i + 1,
                    col.name
                ),
            ));
        }
        let want = arrow_type(col.column_type);
        let have = actual.field(i).data_type();
        if &want != have {
            return Err(EtlError::data(
                file,
                format!(
                    "declared schema does not match: column `{name}` is {have} in the file but {} in the schema",
                    col.column_type
                ),
            ));
        }
    }
    Ok(())
}
