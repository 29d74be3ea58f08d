//! Lazy DataFrames over stored datasets, in the manner of Dask's: each method returns a new
//! frame and nothing runs until `collect`, `head`, `persist` and the like. A frame is a SQL
//! query the cluster plans and distributes like any other (`explain` shows its stages);
//! expressions are SQL expressions (`"amount > 10"`, `"sum(amount) AS total"`).

use arrow::array::{Array, ArrayRef, Float64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

use crate::ingest::{PartitionBuilder, schema_json};
use tern_proto::Transport;

use crate::{Client, ClientError};

/// How two frames are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    fn sql(self) -> &'static str {
        match self {
            JoinKind::Inner => "JOIN",
            JoinKind::Left => "LEFT JOIN",
            JoinKind::Right => "RIGHT JOIN",
            JoinKind::Full => "FULL JOIN",
        }
    }
}

/// A lazy query over one or more stored datasets: see [`Client::table`].
pub struct DataFrame<'c, T: Transport = tern_net::QuicTransport> {
    client: &'c Client<T>,
    query: String,
    /// The dataset, while the frame is still the whole of it (so `head` and `npartitions`
    /// can answer from the catalog).
    table: Option<String>,
    /// Partitions `persist` writes (`repartition`).
    partitions: Option<usize>,
}

// Not derived: a derive would ask the transport to be `Clone`, and only the borrow is copied.
impl<T: Transport> Clone for DataFrame<'_, T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client,
            query: self.query.clone(),
            table: self.table.clone(),
            partitions: self.partitions,
        }
    }
}

/// `name` quoted as a SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl<T: Transport> Client<T> {
    /// The stored dataset `name` as a lazy [`DataFrame`].
    pub fn table(&self, name: &str) -> DataFrame<'_, T> {
        DataFrame {
            client: self,
            query: format!("SELECT * FROM {}", ident(name)),
            table: Some(name.to_string()),
            partitions: None,
        }
    }
}

impl<'c, T: Transport> DataFrame<'c, T> {
    fn wrap(&self, select: &str, rest: &str) -> Self {
        Self {
            client: self.client,
            query: format!("SELECT {select} FROM ({}) AS t {rest}", self.query)
                .trim_end()
                .to_string(),
            table: None,
            partitions: self.partitions,
        }
    }

    /// The SQL this frame runs.
    pub fn sql(&self) -> &str {
        &self.query
    }

    /// Rows for which `predicate` (a SQL boolean expression) holds.
    pub fn filter(&self, predicate: &str) -> Self {
        self.wrap("*", &format!("WHERE {predicate}"))
    }

    /// These columns or expressions (`"name"`, `"amount * 2 AS doubled"`).
    pub fn select(&self, columns: &[&str]) -> Self {
        self.wrap(&columns.join(", "), "")
    }

    /// Every column plus `name`, computed by `expr`.
    pub fn with_column(&self, name: &str, expr: &str) -> Self {
        self.wrap(&format!("*, {expr} AS {}", ident(name)), "")
    }

    /// One row per group of `group_by` with the `aggregates` (`"sum(amount) AS total"`).
    pub fn aggregate(&self, group_by: &[&str], aggregates: &[&str]) -> Self {
        let columns: Vec<&str> = group_by.iter().chain(aggregates).copied().collect();
        let rest = if group_by.is_empty() {
            String::new()
        } else {
            format!("GROUP BY {}", group_by.join(", "))
        };
        self.wrap(&columns.join(", "), &rest)
    }

    /// Rows of both frames whose `using` columns are equal (the other columns' names must
    /// differ between the two; rename with `select` first).
    pub fn join(&self, other: &DataFrame<'_, T>, using: &[&str], kind: JoinKind) -> Self {
        let using: Vec<String> = using.iter().map(|c| ident(c)).collect();
        Self {
            client: self.client,
            query: format!(
                "SELECT * FROM ({}) AS l {} ({}) AS r USING ({})",
                self.query,
                kind.sql(),
                other.query,
                using.join(", ")
            ),
            table: None,
            partitions: self.partitions,
        }
    }

    /// Sorted by `by` (`"total DESC"`, `"name"`).
    pub fn sort(&self, by: &[&str]) -> Self {
        self.wrap("*", &format!("ORDER BY {}", by.join(", ")))
    }

    /// The first `n` rows.
    pub fn limit(&self, n: usize) -> Self {
        self.wrap("*", &format!("LIMIT {n}"))
    }

    /// Without duplicate rows.
    pub fn distinct(&self) -> Self {
        self.wrap("DISTINCT *", "")
    }

    /// The same rows, written as `n` partitions by [`DataFrame::persist`].
    pub fn repartition(&self, n: usize) -> Self {
        Self {
            partitions: Some(n.max(1)),
            ..self.clone()
        }
    }

    /// Run it: the answer's batches.
    pub async fn collect(&self) -> Result<Vec<RecordBatch>, ClientError> {
        Ok(self.client.sql(&self.query).await?.batches)
    }

    /// Run it and take the answer's batches as they come (and its progress):
    /// `while let Some(batch) = stream.next_batch().await? { … }`.
    pub async fn stream(&self) -> Result<crate::QueryStream<T>, ClientError> {
        self.client.sql_stream(&self.query).await
    }

    /// The stages and tasks it would run.
    pub async fn explain(&self) -> Result<String, ClientError> {
        self.client.explain(&self.query).await
    }

    /// Its columns, without running it over the data.
    pub async fn schema(&self) -> Result<SchemaRef, ClientError> {
        Ok(self
            .client
            .sql(&format!("SELECT * FROM ({}) AS t LIMIT 0", self.query))
            .await?
            .schema)
    }

    /// Partitions of the dataset (for a frame that is a whole dataset), or what
    /// `repartition` asked for; otherwise the partitions of the answer `persist` would write.
    pub async fn npartitions(&self) -> Result<usize, ClientError> {
        if let Some(n) = self.partitions {
            return Ok(n);
        }
        match &self.table {
            Some(name) => Ok(self.stored(name).await?.partitions.len()),
            None => Ok(1),
        }
    }

    async fn stored(&self, name: &str) -> Result<tern_proto::DatasetRecord, ClientError> {
        self.client
            .dataset(name)
            .await?
            .ok_or_else(|| ClientError::NoSuchDataset { name: name.into() })
    }

    /// The first `n` rows. For a whole dataset, only the partitions that hold them are read
    /// (the catalog knows each one's rows); otherwise the query runs with a limit.
    pub async fn head(&self, n: usize) -> Result<Vec<RecordBatch>, ClientError> {
        let Some(name) = &self.table else {
            return self.limit(n).collect().await;
        };
        let record = self.stored(name).await?;
        let addresses = self.client.node_addresses().await?;
        let mut out = Vec::new();
        let mut left = n;
        for index in 0..record.partitions.len() {
            if left == 0 {
                break;
            }
            let bytes = self
                .client
                .read_partition(&record, index, &addresses)
                .await?;
            let (_, batches) = crate::export::decode_partition(bytes)
                .map_err(|e| ClientError::Unexpected(format!("unreadable partition: {e}")))?;
            for batch in batches {
                if left == 0 {
                    break;
                }
                let take = batch.num_rows().min(left);
                left -= take;
                out.push(batch.slice(0, take));
            }
        }
        Ok(out)
    }

    /// Count, mean, standard deviation, minimum and maximum of every numeric column, one
    /// row per statistic (as pandas and Dask print them), computed in one pass.
    pub async fn describe(&self) -> Result<RecordBatch, ClientError> {
        let schema = self.schema().await?;
        let numeric: Vec<&Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| f.data_type().is_numeric())
            .collect();
        if numeric.is_empty() {
            return Err(ClientError::Unexpected(
                "describe: the frame has no numeric columns".into(),
            ));
        }
        const STATS: [(&str, &str); 5] = [
            ("count", "count"),
            ("mean", "avg"),
            ("std", "stddev"),
            ("min", "min"),
            ("max", "max"),
        ];
        let mut exprs = Vec::new();
        for field in &numeric {
            for (_, function) in STATS {
                exprs.push(format!(
                    "CAST({function}({}) AS DOUBLE)",
                    ident(field.name())
                ));
            }
        }
        let batches = self.select(&[exprs.join(", ").as_str()]).collect().await?;
        let row = concat_batches(
            &batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| Arc::new(Schema::empty())),
            &batches,
        )
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let value = |column: usize| -> Option<f64> {
            let array = row.column(column).as_any().downcast_ref::<Float64Array>()?;
            (!array.is_null(0)).then(|| array.value(0))
        };
        let mut fields = vec![Field::new("statistic", DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(
            STATS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ))];
        for (i, field) in numeric.iter().enumerate() {
            fields.push(Field::new(field.name(), DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from(
                (0..STATS.len())
                    .map(|s| value(i * STATS.len() + s))
                    .collect::<Vec<_>>(),
            )));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// How often each value of `column` occurs, most frequent first.
    pub async fn value_counts(&self, column: &str) -> Result<Vec<RecordBatch>, ClientError> {
        let col = ident(column);
        self.aggregate(&[col.as_str()], &["count(*) AS count"])
            .sort(&["count DESC", col.as_str()])
            .collect()
            .await
    }

    /// Run it and store the answer as dataset `name` (three copies of each partition, like
    /// any `tern put`); `repartition(n)` sets how many partitions, otherwise one per
    /// 64 MiB of Arrow data.
    pub async fn persist(&self, name: &str) -> Result<tern_proto::DatasetRecord, ClientError> {
        let answer = self.client.sql(&self.query).await?;
        let schema = answer.schema.clone();
        let rows = answer.rows();
        let bad = |e: arrow::error::ArrowError| ClientError::Unexpected(e.to_string());
        let all = concat_batches(&schema, &answer.batches).map_err(bad)?;
        let bytes = all.get_array_memory_size().max(1);
        let parts = self
            .partitions
            .unwrap_or_else(|| bytes.div_ceil(64 << 20))
            .clamp(1, rows.max(1));
        let mut writer = self.client.dataset_writer(name, false).await?;
        let per = rows.div_ceil(parts).max(1);
        let mut start = 0;
        while start < rows || (rows == 0 && start == 0) {
            let len = per.min(rows - start);
            let mut partition = PartitionBuilder::new(&schema).map_err(bad)?;
            partition.push(&all.slice(start, len)).map_err(bad)?;
            let partition = partition.finish().map_err(bad)?;
            writer.add_table_partition(&partition).await?;
            start += len;
            if rows == 0 {
                break;
            }
        }
        writer.commit("arrow-ipc", &schema_json(&schema)).await
    }
}
