//! One dictionary per column for a whole Arrow IPC file. The IPC file format allows a column a
//! single dictionary, which later batches may only extend (delta dictionaries), while each
//! stored partition, often each batch, brings its own. Each dictionary column's batches are
//! re-keyed against one dictionary that grows by the values not seen before, so the writer
//! sends those as deltas and every batch in the file reads back with its own values.
//!
//! The unified dictionary holds each distinct value of the column once, for the whole file:
//! small for the categories dictionaries are made for. Dictionaries nested inside lists or
//! structs are left as they are (the IPC writer refuses them when they change).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, make_array};
use arrow::compute::{CastOptions, cast_with_options, concat, take};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};

/// The dictionaries of one file's top-level dictionary columns, by column index.
#[derive(Default)]
pub struct FileDictionaries {
    columns: HashMap<usize, Unified>,
}

/// One column's dictionary as written so far, and the key of each of its values.
struct Unified {
    values: ArrayRef,
    converter: RowConverter,
    key_of: HashMap<OwnedRow, usize>,
}

impl FileDictionaries {
    /// `batch` with each top-level dictionary column keyed into the file's dictionary for it.
    pub fn rekey(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        if !has_dictionary(batch.schema_ref()) {
            return Ok(batch.clone());
        }
        let columns = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, column)| match column.data_type() {
                DataType::Dictionary(..) => match self.columns.get_mut(&i) {
                    Some(unified) => unified.rekey(column),
                    None => {
                        self.columns.insert(i, Unified::first(column)?);
                        Ok(column.clone())
                    }
                },
                _ => Ok(column.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(batch.schema(), columns)
    }
}

fn has_dictionary(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
}

impl Unified {
    /// The file's dictionary starts as the first batch's, exactly as the writer sends it
    /// (a value it holds twice keeps its first key).
    fn first(column: &ArrayRef) -> Result<Self, ArrowError> {
        let values = column.as_any_dictionary().values().clone();
        let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())])?;
        let mut key_of = HashMap::new();
        for (key, row) in converter
            .convert_columns(std::slice::from_ref(&values))?
            .iter()
            .enumerate()
        {
            key_of.entry(row.owned()).or_insert(key);
        }
        Ok(Self {
            values,
            converter,
            key_of,
        })
    }

    fn rekey(&mut self, column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        let dictionary = column.as_any_dictionary();
        if dictionary.values() == &self.values {
            return Ok(column.clone());
        }
        let new_key_of_old = self.add_values(dictionary.values())?;
        let keys = cast_with_options(dictionary.keys(), &DataType::Int64, &strict())?;
        let keys: Int64Array = keys
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|key| key.map(|k| new_key_of_old[k as usize] as i64))
            .collect();
        // Back to the column's key type: more distinct values than it can count is an error.
        let keys =
            cast_with_options(&keys, dictionary.keys().data_type(), &strict()).map_err(|e| {
                ArrowError::InvalidArgumentError(format!(
                    "the file's dictionary for a {} column outgrew its keys: {e}",
                    column.data_type()
                ))
            })?;
        let data = keys
            .to_data()
            .into_builder()
            .data_type(column.data_type().clone())
            .child_data(vec![self.values.to_data()])
            .build()?;
        Ok(make_array(data))
    }

    /// Append the values of `values` not in the dictionary yet; returns the key of each.
    fn add_values(&mut self, values: &ArrayRef) -> Result<Vec<usize>, ArrowError> {
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(values))?;
        let mut added: Vec<u64> = Vec::new();
        let keys = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let next = self.values.len() + added.len();
                *self.key_of.entry(row.owned()).or_insert_with(|| {
                    added.push(i as u64);
                    next
                })
            })
            .collect();
        if !added.is_empty() {
            let new_values = take(
                values.as_ref(),
                &arrow::array::UInt64Array::from(added),
                None,
            )?;
            self.values = concat(&[self.values.as_ref(), new_values.as_ref()])?;
        }
        Ok(keys)
    }
}

/// Casts that fail instead of turning what does not fit into nulls.
fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, StringArray};
    use arrow::datatypes::{Field, Int8Type};
    use std::sync::Arc;

    use super::*;

    fn batch(values: &[Option<&str>]) -> RecordBatch {
        let column: DictionaryArray<Int8Type> = values.iter().copied().collect();
        let schema = Schema::new(vec![Field::new("c", column.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(column)]).unwrap()
    }

    fn as_strings(batch: &RecordBatch) -> ArrayRef {
        cast_with_options(batch.column(0), &DataType::Utf8, &strict()).unwrap()
    }

    #[test]
    fn later_batches_extend_the_first_dictionary_and_keep_their_values() {
        let mut dictionaries = FileDictionaries::default();
        let first = batch(&[Some("red"), Some("blue"), None]);
        assert_eq!(dictionaries.rekey(&first).unwrap(), first);
        let second = batch(&[Some("green"), Some("red"), None, Some("green")]);
        let rekeyed = dictionaries.rekey(&second).unwrap();
        assert_eq!(&as_strings(&rekeyed), &as_strings(&second));
        let dictionary = rekeyed.column(0).as_dictionary::<Int8Type>();
        let values: &StringArray = dictionary.values().as_string();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            vec![Some("red"), Some("blue"), Some("green")],
            "the first dictionary is a prefix of the next"
        );
    }

    #[test]
    fn keys_that_cannot_count_the_file_s_values_are_an_error() {
        let mut dictionaries = FileDictionaries::default();
        let names: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
        let first: Vec<Option<&str>> = names[..100].iter().map(|s| Some(s.as_str())).collect();
        let second: Vec<Option<&str>> = names[100..].iter().map(|s| Some(s.as_str())).collect();
        dictionaries.rekey(&batch(&first)).unwrap();
        let err = dictionaries.rekey(&batch(&second)).unwrap_err();
        assert!(err.to_string().contains("outgrew its keys"), "{err}");
    }
}
