//! Storing a dataset one partition at a time: [`DatasetPut`] encodes each partition as it is
//! given and hands it to a writer task that stores it in triplicate while Python makes the
//! next, so storing an array or a frame larger than the client's memory holds about two
//! partitions at once, not all of them.

use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use pyo3::prelude::*;
use tern_client::ingest::{PartitionBuilder, schema_json};
use tern_client::{Client, ClientError};
use tern_proto::DatasetRecord;
use tokio::sync::mpsc;

use crate::{TernError, arrow_err, record_json, runtime, streams, to_py, wait};

/// Encoded partitions waiting for the writer (each being stored counts as one more).
const QUEUED_PARTITIONS: usize = 1;

enum Message {
    Partition(tern_client::ingest::Partition),
    /// Every partition was given: commit them, described by this schema.
    Commit(String),
}

/// A dataset being stored (`NativeClient.put_stream`): `add` each partition, then `commit`.
/// Dropped without a commit, nothing is committed and the stored blocks are collected later.
#[pyclass(module = "tern._tern", frozen)]
pub struct DatasetPut {
    sender: mpsc::Sender<Message>,
    writer: Mutex<Option<tokio::task::JoinHandle<Result<DatasetRecord, ClientError>>>>,
    /// The first partition's columns, which every other must have.
    first: Mutex<Option<SchemaRef>>,
    /// The schema to record (`None`: the first partition's, described).
    schema: Option<String>,
    added: Mutex<usize>,
}

impl DatasetPut {
    pub fn start(
        client: std::sync::Arc<Client>,
        name: String,
        replace: bool,
        format: &'static str,
        schema: Option<String>,
    ) -> Self {
        let (sender, mut received) = mpsc::channel(QUEUED_PARTITIONS);
        let writer = runtime().spawn(async move {
            let mut writer = client.dataset_writer(&name, replace).await?;
            while let Some(message) = received.recv().await {
                match message {
                    Message::Partition(partition) => {
                        writer.add_table_partition(&partition).await?;
                    }
                    Message::Commit(schema) => return writer.commit(format, &schema).await,
                }
            }
            Err(ClientError::Unexpected(format!(
                "storing {name} was abandoned before its commit"
            )))
        });
        Self {
            sender,
            writer: Mutex::new(Some(writer)),
            first: Mutex::new(None),
            schema,
            added: Mutex::new(0),
        }
    }

    /// Why the writer stopped (it only stops early on an error).
    fn stopped(&self, py: Python<'_>) -> PyErr {
        let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return TernError::new_err("this dataset was already committed or failed");
        };
        match wait(py, writer) {
            Ok(Ok(Ok(_))) => TernError::new_err("this dataset was already committed"),
            Ok(Ok(Err(e))) => to_py(e),
            Ok(Err(e)) => TernError::new_err(format!("the writer stopped: {e}")),
            Err(e) => e,
        }
    }

    fn send(&self, py: Python<'_>, message: Message) -> PyResult<()> {
        let sender = self.sender.clone();
        match wait(py, async move { sender.send(message).await }) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.stopped(py)),
            Err(e) => Err(e),
        }
    }
}

#[pymethods]
impl DatasetPut {
    /// Store one more partition (Arrow data: a pyarrow Table), in triplicate. Returns once
    /// it is encoded and queued; a failure to store it is raised here or by `commit`.
    pub fn add(&self, py: Python<'_>, partition: Bound<'_, PyAny>) -> PyResult<()> {
        let (this, batches) = streams::import(&partition)?;
        let index = {
            let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
            *added += 1;
            *added - 1
        };
        {
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            match &*first {
                None => *first = Some(this.clone()),
                Some(first) if first.fields() != this.fields() => {
                    return Err(TernError::new_err(format!(
                        "partition {index} has columns {:?}, the first one {:?}",
                        this.fields().iter().map(|f| f.name()).collect::<Vec<_>>(),
                        first.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                    )));
                }
                Some(_) => {}
            }
        }
        let encoded = py.allow_threads(move || {
            let mut builder = PartitionBuilder::new(&this)?;
            for batch in &batches {
                // A node reads at most 16 million rows in one batch.
                for start in (0..batch.num_rows().max(1)).step_by(tern_array::chunk::BATCH_ELEMENTS)
                {
                    let rows = tern_array::chunk::BATCH_ELEMENTS.min(batch.num_rows() - start);
                    builder.push(&batch.slice(start, rows))?;
                }
            }
            builder.finish()
        });
        let partition = encoded.map_err(arrow_err)?;
        self.send(py, Message::Partition(partition))
    }

    /// Commit every partition added as the dataset (its new version with `replace`); the
    /// record written, as JSON text.
    pub fn commit(&self, py: Python<'_>) -> PyResult<String> {
        let schema = match &self.schema {
            Some(described) => described.clone(),
            None => match &*self.first.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(first) => schema_json(first),
                None => return Err(TernError::new_err("no partitions to store")),
            },
        };
        self.send(py, Message::Commit(schema))?;
        let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(TernError::new_err("this dataset was already committed"));
        };
        match wait(py, writer)? {
            Ok(Ok(record)) => Ok(record_json(&record)),
            Ok(Err(e)) => Err(to_py(e)),
            Err(e) => Err(TernError::new_err(format!("the writer stopped: {e}"))),
        }
    }
}
