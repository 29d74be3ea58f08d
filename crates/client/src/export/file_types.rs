//! What each Arrow type becomes in each output format. Other tools (pyarrow, DuckDB, pandas,
//! Spark) read a file by the format's own types, not by the Arrow schema that Parquet files
//! embed, so a column is converted to the type the format can name before it is written: an
//! Arrow-only type written as it is would come back to them as something else (a
//! `Timestamp(Second)` column as plain 64-bit integers).
//!
//! | Arrow type | Parquet | CSV | JSON lines |
//! |---|---|---|---|
//! | `Timestamp(Second, tz)` | `Timestamp(Millisecond, tz)`: Parquet counts no seconds | ISO 8601 text, `Z`/offset when zoned | same as CSV |
//! | other timestamps | as they are; zoned ones are UTC instants to other readers | ISO 8601 text | ISO 8601 text |
//! | `Time32(Second)` | `Time32(Millisecond)` | `HH:MM:SS` | `HH:MM:SS` |
//! | `Date64` | `Date32` (whole days only, else an error) | `Date32` | `Date32` |
//! | `Duration` | INT64 in its unit; only the embedded Arrow schema says duration | ISO 8601 text (`PT1.5S`) | ISO 8601 text |
//! | `Interval(YearMonth \| DayTime)` | Parquet `INTERVAL` | text (`1 mons 2 days`) | text |
//! | `Interval(MonthDayNano)` | refused: Parquet intervals hold milliseconds | text | text |
//! | `Utf8View`, `BinaryView` | `Utf8`, `Binary` | text, hex | string, hex |
//! | binaries | `BYTE_ARRAY` | lowercase hex (arrow's writer) | lowercase hex (arrow's writer) |
//! | `ListView`, `LargeListView` | `List`, `LargeList` | refused | arrays |
//! | lists, structs, maps | Parquet `LIST`, groups, `MAP` | refused: CSV has no nesting | arrays and objects (map keys must be strings) |
//! | `Dictionary(k, v)` | dictionary-encoded `v` | `v` as text | `v` |
//! | `RunEndEncoded(_, v)` | `v` | `v` | `v` |
//! | `Union` | refused | refused | refused |
//!
//! Arrow IPC files hold every type exactly as stored (a dictionary that changes between
//! batches is extended, see `dictionaries`). Everything else (integers, floats including
//! `Float16`, decimals of every width, strings, booleans, `Date32`, `Time64`) has the same type
//! in every format. JSON lines write nulls out, so a map entry with a null value stays.
//!
//! What readers make of it (checked with pyarrow 26 and DuckDB 2.0): zoned timestamps are
//! `timestamp[.., tz=UTC]` / `TIMESTAMP WITH TIME ZONE`; durations are `duration[..]` in pyarrow
//! (by the embedded schema) and `BIGINT` in DuckDB; Parquet intervals are `INTERVAL` in DuckDB
//! but `fixed_size_binary[12]` in pyarrow, which reads no Parquet interval.

use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, Fields, IntervalUnit, TimeUnit};

use super::OutputFormat;

/// Why a type cannot go into a format: a sentence fragment that names the way out.
pub type Refusal = &'static str;

const UNION_REFUSED: Refusal =
    "no file format but Arrow IPC holds a union; write .arrow, or select its members";
const CSV_NESTED_REFUSED: Refusal =
    "CSV has no nested values; write .parquet, .arrow or .json, or select its fields";
const PARQUET_INTERVAL_REFUSED: Refusal = "a Parquet interval holds months, days and milliseconds, not nanoseconds; \
     write .arrow, .csv or .json, or cast it to a duration";
const PARQUET_EMPTY_STRUCT_REFUSED: Refusal =
    "Parquet has no struct without fields; write .arrow or .json";
const JSON_MAP_KEYS_REFUSED: Refusal =
    "JSON object keys are strings; write .parquet or .arrow, or cast the keys to strings";

/// The type a column of `data_type` is written as in `format`.
pub fn file_type(format: OutputFormat, data_type: &DataType) -> Result<DataType, Refusal> {
    match format {
        OutputFormat::Arrow => Ok(data_type.clone()),
        OutputFormat::Parquet => parquet_type(data_type),
        OutputFormat::Csv => csv_type(data_type),
        OutputFormat::Json => json_type(data_type),
    }
}

/// Whether `data_type` holds a `Date64` anywhere: its conversion to days is checked value by
/// value, because a Date64 may (against the Arrow spec) carry a time of day.
pub fn holds_date64(data_type: &DataType) -> bool {
    match data_type {
        DataType::Date64 => true,
        DataType::Dictionary(_, values) => holds_date64(values),
        other => children(other).iter().any(|f| holds_date64(f.data_type())),
    }
}

fn parquet_type(data_type: &DataType) -> Result<DataType, Refusal> {
    use DataType::*;
    Ok(match data_type {
        // Parquet's timestamps and times count milli-, micro- or nanoseconds. Seconds written
        // as they are have no logical type: plain integers to every reader but Arrow's.
        Timestamp(TimeUnit::Second, tz) => Timestamp(TimeUnit::Millisecond, tz.clone()),
        Time32(TimeUnit::Second) => Time32(TimeUnit::Millisecond),
        // Parquet's DATE counts days; Date64's milliseconds would be plain integers.
        Date64 => Date32,
        // The same bytes in Parquet either way; as plain strings the embedded Arrow schema also
        // stays readable by readers that predate the view types (pyarrow before 16).
        Utf8View => Utf8,
        BinaryView => Binary,
        // Parquet has one list type; views are an in-memory layout.
        ListView(item) => List(map_field(item, parquet_type)?),
        LargeListView(item) => LargeList(map_field(item, parquet_type)?),
        RunEndEncoded(_, values) => parquet_type(values.data_type())?,
        Interval(IntervalUnit::MonthDayNano) => return Err(PARQUET_INTERVAL_REFUSED),
        Struct(fields) if fields.is_empty() => return Err(PARQUET_EMPTY_STRUCT_REFUSED),
        Union(..) => return Err(UNION_REFUSED),
        other => map_children(other, parquet_type)?,
    })
}

fn csv_type(data_type: &DataType) -> Result<DataType, Refusal> {
    use DataType::*;
    Ok(match data_type {
        // Written as a date, not as midnight of that date (arrow's default for Date64).
        Date64 => Date32,
        RunEndEncoded(_, values) => csv_type(values.data_type())?,
        Dictionary(keys, values) => Dictionary(keys.clone(), Box::new(csv_type(values)?)),
        Union(..) => return Err(UNION_REFUSED),
        nested if nested.is_nested() => return Err(CSV_NESTED_REFUSED),
        other => other.clone(),
    })
}

fn json_type(data_type: &DataType) -> Result<DataType, Refusal> {
    use DataType::*;
    Ok(match data_type {
        Date64 => Date32,
        RunEndEncoded(_, values) => json_type(values.data_type())?,
        Union(..) => return Err(UNION_REFUSED),
        Map(entries, _) if !map_keys_are_strings(entries) => return Err(JSON_MAP_KEYS_REFUSED),
        other => map_children(other, json_type)?,
    })
}

fn map_keys_are_strings(entries: &FieldRef) -> bool {
    match entries.data_type() {
        DataType::Struct(fields) => fields.first().is_some_and(|key| {
            matches!(
                key.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        }),
        _ => false,
    }
}

/// `data_type` with `map` applied to the types of its children (list items, struct fields, map
/// entries, dictionary values); a type without children as it is.
fn map_children(
    data_type: &DataType,
    map: fn(&DataType) -> Result<DataType, Refusal>,
) -> Result<DataType, Refusal> {
    use DataType::*;
    Ok(match data_type {
        List(item) => List(map_field(item, map)?),
        LargeList(item) => LargeList(map_field(item, map)?),
        FixedSizeList(item, size) => FixedSizeList(map_field(item, map)?, *size),
        Struct(fields) => Struct(map_fields(fields, map)?),
        Map(entries, sorted) => Map(map_field(entries, map)?, *sorted),
        Dictionary(keys, values) => Dictionary(keys.clone(), Box::new(map(values)?)),
        other => other.clone(),
    })
}

fn map_field(
    field: &FieldRef,
    map: fn(&DataType) -> Result<DataType, Refusal>,
) -> Result<FieldRef, Refusal> {
    let mapped = map(field.data_type())?;
    if &mapped == field.data_type() {
        return Ok(field.clone());
    }
    Ok(Arc::new(field.as_ref().clone().with_data_type(mapped)))
}

fn map_fields(
    fields: &Fields,
    map: fn(&DataType) -> Result<DataType, Refusal>,
) -> Result<Fields, Refusal> {
    fields.iter().map(|f| map_field(f, map)).collect()
}

/// The child fields of a nested type (none for the others).
fn children(data_type: &DataType) -> Vec<FieldRef> {
    use DataType::*;
    match data_type {
        List(item) | LargeList(item) | ListView(item) | LargeListView(item) => vec![item.clone()],
        FixedSizeList(item, _) | Map(item, _) => vec![item.clone()],
        Struct(fields) => fields.iter().cloned().collect(),
        Union(fields, _) => fields.iter().map(|(_, f)| f.clone()).collect(),
        RunEndEncoded(_, values) => vec![values.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn item(data_type: DataType) -> FieldRef {
        Arc::new(Field::new("item", data_type, true))
    }

    #[test]
    fn parquet_gets_units_it_can_name_even_inside_nested_types() {
        let seconds_utc = DataType::Timestamp(TimeUnit::Second, Some("UTC".into()));
        assert_eq!(
            parquet_type(&seconds_utc),
            Ok(DataType::Timestamp(
                TimeUnit::Millisecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(
            parquet_type(&DataType::List(item(DataType::Time32(TimeUnit::Second)))),
            Ok(DataType::List(item(DataType::Time32(
                TimeUnit::Millisecond
            ))))
        );
        assert_eq!(
            parquet_type(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8View)
            )),
            Ok(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            ))
        );
        assert_eq!(
            parquet_type(&DataType::Duration(TimeUnit::Second)),
            Ok(DataType::Duration(TimeUnit::Second))
        );
        assert!(parquet_type(&DataType::Interval(IntervalUnit::MonthDayNano)).is_err());
    }

    #[test]
    fn csv_refuses_nested_values_and_json_refuses_non_string_map_keys() {
        let list = DataType::List(item(DataType::Int64));
        assert_eq!(csv_type(&list), Err(CSV_NESTED_REFUSED));
        assert_eq!(json_type(&list), Ok(list));
        let int_keys = DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Int32, false),
                    Field::new("value", DataType::Utf8, true),
                ])),
                false,
            )),
            false,
        );
        assert_eq!(json_type(&int_keys), Err(JSON_MAP_KEYS_REFUSED));
        assert_eq!(csv_type(&DataType::Date64), Ok(DataType::Date32));
    }

    #[test]
    fn date64_is_found_wherever_it_is() {
        assert!(holds_date64(&DataType::Date64));
        assert!(holds_date64(&DataType::List(item(DataType::Date64))));
        assert!(!holds_date64(&DataType::List(item(DataType::Date32))));
    }
}
