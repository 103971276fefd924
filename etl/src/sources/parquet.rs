/*!
Parquet: read with its own schema; partitions are runs of row groups.
*/

use std::fs::File;
use std::path::Path;

use arrow::datatypes::SchemaRef;
use conveyor_schemas::ReadOptions;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{check_declared, field_list};
use crate::error::{data_err, parquet_err, EtlError, Result};
use crate::source::{Batches, BATCH_ROWS};

/// Opens a whole Parquet file, checking its columns against declared ones.
pub fn open(spec: &ReadOptions, f: File, display: &Path) -> Result<Batches> {
    let display = display.to_path_buf();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(parquet_err(&display))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err(&display))?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    check_declared(spec.schema.as_deref(), &schema, &display)?;
    let iter = reader.map(move |b| b.map_err(data_err(&display)));
    Ok(Batches {
        schema,
        iter: Box::new(iter),
    })
}

/// Partition `index` of `count` of a Parquet file: a run of its row groups.
pub(crate) fn open_share(
    f: File,
    head: &SchemaRef,
    index: u32,
    count: u32,
    display: &Path,
) -> Result<Batches> {
    let display = display.to_path_buf();
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet_err(&display))?;
    let groups = builder.metadata().num_row_groups();
    let (index, count) = (index as usize, count.max(1) as usize);
    let mine: Vec<usize> = (index * groups / count..(index + 1) * groups / count).collect();
    let reader = builder
        .with_row_groups(mine)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_err(&display))?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    if schema.fields() != head.fields() {
        return Err(EtlError::data(
            &display,
            format!(
                "columns differ from the first file of the glob: {} here, {} there",
                field_list(&schema),
                field_list(head)
            ),
        ));
    }
    let iter = reader.map(move |b| b.map_err(data_err(&display)));
    Ok(Batches {
        schema: head.clone(),
        iter: Box::new(iter),
    })
}
