//! Task graphs on the cluster: [`Client::compute_graph`] hands a graph to a node, which
//! coordinates it (every task on the least busy holder of its inputs) and sends back progress
//! and each wanted task's outcome as it ends; [`Client::graph_stream`] follows it update by
//! update. Building graphs (and running them in this process) is `tern-graph`'s business.

use std::collections::BTreeMap;

use tern_proto::{
    BulkRead, EventDecoder, Graph, GraphEvent, GraphReport, Request, Response, Submission, TaskKey,
    TaskOutcome, Transport,
};

use crate::{Client, ClientError, lost};

/// What a graph computed: each wanted task's outcome, and how it ran.
#[derive(Debug, Clone)]
pub struct GraphAnswer {
    pub job: u64,
    pub outcomes: BTreeMap<TaskKey, TaskOutcome>,
    pub report: GraphReport,
}

/// What a running graph reports, as [`GraphStream::next_update`] hands it over.
#[derive(Debug, Clone)]
pub enum GraphUpdate {
    /// `done` of `tasks` distinct tasks have ended.
    Progress { done: u64, tasks: u64 },
    /// A wanted task ended.
    Output { key: TaskKey, outcome: TaskOutcome },
    /// Every wanted task has ended; how the graph ran.
    Finished(GraphReport),
    /// A wanted task's output stays kept on the cluster, there (a submission that keeps its
    /// outputs says so before the task's `Output`).
    Kept(tern_proto::KeptOutput),
}

/// A running graph. Dropping it closes the stream, and the coordinator stops the graph and
/// releases what it kept.
pub struct GraphStream<T: Transport = tern_net::QuicTransport> {
    /// The job id the coordinator gave the graph (its logs and `tern jobs` name it).
    pub job: u64,
    /// Distinct tasks in the graph.
    pub tasks: u64,
    addr: String,
    reader: T::Reader,
    decoder: EventDecoder,
    over: bool,
    /// The coordinator holds the outputs after `Finished`, while the stream is open.
    keep: bool,
    /// Earlier submissions whose kept outputs this one reads: held while it runs.
    _reads: Vec<std::sync::Arc<crate::submit::Hold>>,
}

impl<T: Transport> GraphStream<T> {
    /// The address of the node coordinating the graph.
    pub fn coordinator(&self) -> &str {
        &self.addr
    }

    /// The next update, `None` after `Finished` (for a submission that keeps its outputs, once
    /// the coordinator stops holding them). A graph that could not run is an error.
    pub async fn next_update(&mut self) -> Result<Option<GraphUpdate>, ClientError> {
        loop {
            if self.over {
                return Ok(None);
            }
            let event = self
                .decoder
                .next_event::<GraphEvent>()
                .map_err(|e| lost(&self.addr, e))?;
            match event {
                Some(GraphEvent::Progress { done, tasks }) => {
                    return Ok(Some(GraphUpdate::Progress { done, tasks }));
                }
                Some(GraphEvent::Output { key, outcome }) => {
                    return Ok(Some(GraphUpdate::Output { key, outcome }));
                }
                Some(GraphEvent::Finished(report)) => {
                    self.over = !self.keep;
                    self._reads.clear();
                    return Ok(Some(GraphUpdate::Finished(report)));
                }
                Some(GraphEvent::Kept(at)) => return Ok(Some(GraphUpdate::Kept(at))),
                Some(GraphEvent::Holding) => {}
                Some(GraphEvent::Failed(e)) => {
                    self.over = true;
                    return Err(ClientError::Remote(e));
                }
                None => {}
            }
            match self
                .reader
                .next_chunk()
                .await
                .map_err(|e| lost(&self.addr, e))?
            {
                Some(chunk) => self.decoder.push(&chunk),
                None => {
                    return Err(lost(
                        &self.addr,
                        "the answer ended before the graph finished",
                    ));
                }
            }
        }
    }
}

impl<T: Transport> Client<T> {
    /// Every node's running and recent jobs (queries and graphs), running first, then
    /// newest first. Nodes that do not answer are left out.
    pub async fn jobs(&self) -> Result<Vec<tern_proto::JobInfo>, ClientError> {
        let mut all = Vec::new();
        for node in self.status().await?.nodes {
            let asked = self
                .transport
                .call_within(
                    &node.address,
                    Request::Jobs,
                    std::time::Duration::from_secs(5),
                )
                .await;
            match asked {
                Ok(Response::Jobs(jobs)) => all.extend(jobs),
                Ok(Response::Error(e)) => return Err(ClientError::from_reply(e)),
                _ => {}
            }
        }
        all.sort_by_key(|j| {
            (
                j.state != tern_proto::JobState::Running,
                std::cmp::Reverse(j.started_ms),
            )
        });
        Ok(all)
    }

    /// Cancel job `job` on whichever node coordinates it.
    pub async fn cancel_job(&self, job: u64) -> Result<(), ClientError> {
        for node in self.status().await?.nodes {
            let asked = self
                .transport
                .call_within(
                    &node.address,
                    Request::CancelJob { job },
                    std::time::Duration::from_secs(5),
                )
                .await;
            match asked {
                Ok(Response::Ack) => return Ok(()),
                Ok(Response::Error(e)) if e.kind == tern_proto::ErrorKind::NotFound => {}
                Ok(Response::Error(e)) => return Err(ClientError::from_reply(e)),
                _ => {}
            }
        }
        Err(ClientError::NotFound(format!(
            "no node is running job {job:x} (`tern jobs` lists them)"
        )))
    }

    /// Start `graph` on the cluster and follow it. Outputs this client's futures keep that it
    /// reads are read where they are kept (see [`Client::submit`]).
    pub async fn graph_stream(&self, graph: &Graph) -> Result<GraphStream<T>, ClientError> {
        self.kept.wait_for_inputs(graph).await;
        let (submission, reads) = self.kept.resolve(graph.clone(), false, false);
        let mut stream = self.graph_stream_of(&submission).await?;
        stream._reads = reads;
        Ok(stream)
    }

    pub(crate) async fn graph_stream_of(
        &self,
        submission: &Submission,
    ) -> Result<GraphStream<T>, ClientError> {
        let body = tern_proto::encode_submission(submission);
        let request = Request::SubmitGraph {
            bytes: body.len() as u64,
        };
        let (answer, reader, addr) = self.bulk_open(&request, &body).await?;
        match answer {
            Response::GraphRunning { job, tasks } => Ok(GraphStream {
                job,
                tasks,
                addr,
                reader,
                decoder: EventDecoder::default(),
                over: false,
                keep: submission.keep,
                _reads: Vec::new(),
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Run `graph` on the cluster and wait for every wanted task's outcome (every task's,
    /// when it names none).
    pub async fn compute_graph(&self, graph: &Graph) -> Result<GraphAnswer, ClientError> {
        let mut stream = self.graph_stream(graph).await?;
        let mut outcomes = BTreeMap::new();
        while let Some(update) = stream.next_update().await? {
            match update {
                GraphUpdate::Progress { .. } | GraphUpdate::Kept(_) => {}
                GraphUpdate::Output { key, outcome } => {
                    outcomes.insert(key, outcome);
                }
                GraphUpdate::Finished(report) => {
                    return Ok(GraphAnswer {
                        job: stream.job,
                        outcomes,
                        report,
                    });
                }
            }
        }
        Err(lost(&stream.addr, "the graph ended without finishing"))
    }
}
