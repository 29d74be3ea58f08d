//! SQL from the client: [`Client::sql`] runs a query on whichever node takes it (that node
//! coordinates it) and waits for the whole answer; [`Client::sql_stream`] follows it update by
//! update (its plan, progress, rows as they come); [`Client::explain`] shows the stages it
//! would run.

use tern_proto::{Request, Response, Transport};

use crate::{Client, ClientError, export, lost};

/// A query's answer and how it ran.
#[derive(Debug)]
pub struct QueryAnswer {
    pub schema: arrow::datatypes::SchemaRef,
    pub batches: Vec<arrow::record_batch::RecordBatch>,
    pub stages: Vec<tern_proto::StageReport>,
}

impl QueryAnswer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

impl<T: Transport> Client<T> {
    /// Run a SQL query over the stored datasets; the node that takes it coordinates it. The
    /// whole answer (see [`Client::sql_stream`] to take rows as they come).
    pub async fn sql(&self, sql: &str) -> Result<QueryAnswer, ClientError> {
        let mut stream = self.sql_stream(sql).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next_batch().await? {
            batches.push(batch);
        }
        Ok(QueryAnswer {
            schema: stream.schema().ok_or_else(|| {
                ClientError::Unexpected("the query's answer had no schema".into())
            })?,
            batches,
            stages: stream.stages.clone(),
        })
    }

    /// Start a SQL query and follow it: its plan, progress as tasks finish, and the answer's
    /// rows as the coordinator makes them. Dropping the stream stops the query.
    pub async fn sql_stream(&self, sql: &str) -> Result<QueryStream<T>, ClientError> {
        let request = Request::Query {
            sql: sql.into(),
            explain: false,
        };
        let (answer, reader, addr) = self.bulk_open(&request, &[]).await?;
        match answer {
            Response::QueryRunning { job } => Ok(QueryStream {
                job,
                addr,
                events: tern_proto::QueryEvents::new(reader),
                planned: Vec::new(),
                schema: None,
                pending: std::collections::VecDeque::new(),
                stages: Vec::new(),
                rows: 0,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The stages and tasks a SQL query would run.
    pub async fn explain(&self, sql: &str) -> Result<String, ClientError> {
        let request = Request::Query {
            sql: sql.into(),
            explain: true,
        };
        match self.bulk_call(&request).await?.0 {
            Response::Explained(text) => Ok(text),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// What a running query reports, as [`QueryStream::next_update`] hands it over.
#[derive(Debug)]
pub enum QueryUpdate {
    /// The stages the query was cut into, in order (the last runs on the coordinator).
    Planned(Vec<tern_proto::StagePlanned>),
    /// `done` of `total` tasks of stage `stage` have finished; `retries` attempts failed.
    Progress {
        stage: u32,
        done: u64,
        total: u64,
        retries: u64,
    },
    /// Rows of the answer, in order.
    Batch(arrow::record_batch::RecordBatch),
    /// The answer is complete; how each stage ran.
    Finished(Vec<tern_proto::StageReport>),
}

/// A running query: its updates as they arrive from the coordinator. Dropping it closes the
/// stream, and the coordinator stops the query.
pub struct QueryStream<T: Transport = tern_net::QuicTransport> {
    /// The job id the coordinator gave the query (its logs name it).
    pub job: u64,
    addr: String,
    events: tern_proto::QueryEvents<T::Reader>,
    planned: Vec<tern_proto::StagePlanned>,
    schema: Option<arrow::datatypes::SchemaRef>,
    pending: std::collections::VecDeque<arrow::record_batch::RecordBatch>,
    stages: Vec<tern_proto::StageReport>,
    rows: u64,
}

impl<T: Transport> QueryStream<T> {
    /// The next update, `None` after `Finished`. A failed query is an error naming why.
    pub async fn next_update(&mut self) -> Result<Option<QueryUpdate>, ClientError> {
        use tern_proto::QueryEvent;
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(Some(QueryUpdate::Batch(batch)));
            }
            let event = self.events.next().await.map_err(|e| lost(&self.addr, e))?;
            match event {
                None => return Ok(None),
                Some(QueryEvent::Planned { stages }) => {
                    self.planned = stages.clone();
                    return Ok(Some(QueryUpdate::Planned(stages)));
                }
                Some(QueryEvent::Progress {
                    stage,
                    done,
                    retries,
                }) => {
                    let total = self
                        .planned
                        .iter()
                        .find(|s| s.stage == stage)
                        .map_or(done, |s| s.tasks);
                    return Ok(Some(QueryUpdate::Progress {
                        stage,
                        done,
                        total,
                        retries,
                    }));
                }
                Some(QueryEvent::Rows(bytes)) => {
                    let (schema, batches) = export::decode_partition(bytes).map_err(|e| {
                        ClientError::Unexpected(format!("unreadable query answer: {e}"))
                    })?;
                    self.schema.get_or_insert(schema);
                    self.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                    self.pending
                        .extend(batches.into_iter().filter(|b| b.num_rows() > 0));
                }
                Some(QueryEvent::Finished { rows, stages }) => {
                    if rows != self.rows {
                        return Err(ClientError::Unexpected(format!(
                            "the coordinator sent {} rows but counted {rows}",
                            self.rows
                        )));
                    }
                    self.stages = stages.clone();
                    return Ok(Some(QueryUpdate::Finished(stages)));
                }
                Some(QueryEvent::Failed(e)) => return Err(ClientError::Remote(e)),
            }
        }
    }

    /// The answer's next batch (progress is skipped), `None` after the last.
    pub async fn next_batch(
        &mut self,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, ClientError> {
        while let Some(update) = self.next_update().await? {
            if let QueryUpdate::Batch(batch) = update {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// The answer's schema, known once its first rows (or, for an empty answer, its end) came.
    pub fn schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        self.schema.clone()
    }

    /// How each stage ran, once the query has finished.
    pub fn stages(&self) -> &[tern_proto::StageReport] {
        &self.stages
    }

    /// The stages as planned (known after the first update).
    pub fn planned(&self) -> &[tern_proto::StagePlanned] {
        &self.planned
    }

    /// Rows received so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}
