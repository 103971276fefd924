//! The raw single-process Arrow ceiling for benchmark W3: CSV → drop a column
//! → Parquet with arrow-rs alone, no broker, no actors, no artifact store.
//! Same writer settings as Conveyor's Parquet sink.
//!
//!     cargo run --release -p conveyor-etl --example raw_pipeline -- IN.csv DROP OUT.parquet

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::sync::Arc;

use arrow::csv::reader::Format;
use parquet::arrow::ArrowWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, drop, output] = args.as_slice() else {
        return Err("usage: raw_pipeline IN.csv COLUMN OUT.parquet".into());
    };
    let mut file = File::open(input)?;
    let format = Format::default().with_header(true);
    let (schema, _) = format.infer_schema(&mut file, Some(1000))?;
    file.seek(SeekFrom::Start(0))?;
    let schema = Arc::new(schema);
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name() != drop)
        .collect();
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(8192)
        .build(BufReader::with_capacity(1 << 20, file))?;
    let out_schema = Arc::new(schema.project(&keep)?);
    let mut writer = ArrowWriter::try_new(BufWriter::new(File::create(output)?), out_schema, None)?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch?.project(&keep)?;
        rows += batch.num_rows();
        writer.write(&batch)?;
    }
    writer.close()?;
    println!("{rows}");
    Ok(())
}
