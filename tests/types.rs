//! Dates, timestamps and decimals declared in a CSV schema: every value
//! comes back as the text it was read from, in CSV; JSON lines and Parquet
//! get the same values in their own types; a value whose text would change
//! fails the flow, naming its row, column and value.

use arrow::array::AsArray;
use arrow::datatypes::{DataType, TimeUnit};
use conveyor_schemas::{FlowState, TaskState};

use crate::harness::{processes::*, workdir::*};

/// Every column type a CSV schema can declare, with values at their edges:
/// nulls, fractions of a second, negative and huge decimals, days before
/// 1970.
pub(crate) const TYPED_CSV: &str = "\
id,day,at,instant,amount,price
1,2026-01-05,2026-01-05T10:30:00,2026-01-05T08:30:00Z,12345678901234567890.0123456789,1.50
2,1969-12-31,1969-12-31T23:59:59.5,1969-07-20T20:17:40.000001Z,-0.0000000001,-0.05
3,,,,,
4,2024-02-29,2024-02-29T00:00:00.123456,2000-01-01T00:00:00Z,0.0000000000,0.00
5,0001-01-01,9999-12-31T23:59:59.999999,2026-11-30T02:00:00.25Z,-99999999999999999999.9999999999,99999999.99
";

pub(crate) const SCHEMA: &str = r#"schema = { id = "int64", day = "date", at = "timestamp", instant = "timestamptz", amount = "decimal(30,10)", price = "decimal(10,2)" }"#;

fn typed_flow(dir: &TestDir, name: &str, data: &str, extract_extra: &str) -> std::path::PathBuf {
    let csv = dir.write("typed.csv", data);
    dir.write(
        &format!("{name}.toml"),
        &format!(
            r#"[flow]
name = "{name}"
max_attempts = 1

[tasks.extract]
kind = "extract"
path = "{}"
{SCHEMA}
{extract_extra}

[tasks.transform]
kind = "transform"
input = "extract"
steps = [{{ filter = {{ column = "id", op = "ge", value = 0 }} }}]

[tasks.csv]
kind = "load"
input = "transform"
path = "typed.csv"

[tasks.jsonl]
kind = "load"
input = "transform"
path = "typed.jsonl"

[tasks.parquet]
kind = "load"
input = "transform"
path = "typed.parquet"
"#,
            csv.display()
        ),
    )
}

#[test]
fn dates_timestamps_and_decimals_come_back_byte_for_byte_through_csv() {
    let dir = TestDir::new("types_round_trip");
    let flow = typed_flow(&dir, "typed", TYPED_CSV, "");
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = report.expect("JSON report on stdout");
    assert_eq!(report.state, FlowState::Succeeded);
    for t in &report.tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!(t.rows_out, Some(5), "{t:?}");
    }
    // CSV → Arrow IPC artifacts → CSV: the very same bytes.
    let written = std::fs::read_to_string(dir.join("out/typed.csv")).unwrap();
    assert_eq!(written, TYPED_CSV);

    // JSON lines: the same canonical text, as strings; nulls as null.
    let jsonl = std::fs::read_to_string(dir.join("out/typed.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({
            "id": 1, "day": "2026-01-05", "at": "2026-01-05T10:30:00",
            "instant": "2026-01-05T08:30:00Z",
            "amount": "12345678901234567890.0123456789", "price": "1.50"
        })
    );
    let third: serde_json::Value = serde_json::from_str(jsonl.lines().nth(2).unwrap()).unwrap();
    assert_eq!(third["day"], serde_json::Value::Null);

    // Parquet: the columns in their own logical types, the values exact.
    let file = std::fs::File::open(dir.join("out/typed.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let types: Vec<DataType> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Int64,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Decimal128(30, 10),
            DataType::Decimal128(10, 2),
        ]
    );
    let days = batch
        .column(1)
        .as_primitive::<arrow::datatypes::Date32Type>();
    assert_eq!(days.value(1), -1);
    let prices = batch
        .column(5)
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!((prices.value(0), prices.value(1)), (150, -5));
    let amounts = batch
        .column(4)
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(amounts.value(0), 123_456_789_012_345_678_900_123_456_789);
}

#[test]
fn partitions_keep_the_text_of_every_typed_value() {
    let dir = TestDir::new("types_partitioned");
    let mut data = String::from(TYPED_CSV);
    for i in 0..3000 {
        data.push_str(&format!(
            "{},2026-01-{:02},2026-01-05T10:{:02}:{:02}.{},2026-01-05T08:30:00Z,{}.{:010},{}.{:02}\n",
            10 + i,
            1 + i % 28,
            i % 60,
            (i * 7) % 60,
            1 + i % 9,
            i,
            i * 37 % 10_000_000_000u64,
            i,
            i % 100
        ));
    }
    let flow = typed_flow(&dir, "typedparts", &data, "partitions = 4");
    let (out, report) = run_flow(&dir.path, &flow, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(report.unwrap().state, FlowState::Succeeded);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/typed.csv")).unwrap(),
        data
    );
}

#[test]
fn a_value_whose_text_would_change_fails_naming_row_column_and_value() {
    let cases = [
        // A decimal(10,2) would write 1.5 as 1.50.
        (
            "price",
            "1.5",
            "value `1.5` is not a valid decimal(10,2): it would be written back as `1.50`",
        ),
        // A timestamptz keeps the instant in UTC, not the offset.
        (
            "instant",
            "2026-01-05T10:30:00+02:00",
            "it would be written back as `2026-01-05T08:30:00Z`",
        ),
        (
            "at",
            "2026-01-05 10:30:00",
            "it would be written back as `2026-01-05T10:30:00`",
        ),
        (
            "day",
            "2026-02-30",
            "value `2026-02-30` is not a valid date: there is no such day",
        ),
    ];
    for (column, value, why) in cases {
        let dir = TestDir::new(&format!("types_refused_{column}"));
        let mut row = [
            "9",
            "2026-01-05",
            "2026-01-05T10:30:00",
            "2026-01-05T08:30:00Z",
            "1.0000000000",
            "1.00",
        ];
        let at = ["id", "day", "at", "instant", "amount", "price"]
            .iter()
            .position(|c| *c == column)
            .unwrap();
        row[at] = value;
        let data = format!("{TYPED_CSV}{}\n", row.join(","));
        let flow = typed_flow(&dir, "refused", &data, "");
        let (out, report) = run_flow(&dir.path, &flow, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let report = report.expect("JSON report on stdout");
        assert_eq!(report.state, FlowState::Failed);
        let extract = report.tasks.iter().find(|t| t.name == "extract").unwrap();
        let error = extract.error.as_ref().expect("the extract's error");
        assert_eq!(error.kind, conveyor_schemas::ErrorKind::Data);
        assert!(!error.retryable);
        let message = &error.message;
        assert!(
            message.contains("data row 6")
                && message.contains(&format!("column `{column}`"))
                && message.contains(why),
            "{column}: {message}"
        );
        // Nothing was written: no output, no temporary file.
        assert!(!dir.join("out/typed.csv").exists());
        assert!(
            tmp_files(&dir.path).is_empty(),
            "{:?}",
            tmp_files(&dir.path)
        );
    }
}
