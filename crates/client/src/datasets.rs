//! Datasets: written partition by partition under a lease ([`DatasetWriter`]), made visible
//! by one catalog commit; listed, read and removed through the catalog.

use std::sync::Arc;
use std::time::Duration;

use tern_proto::{
    DATASETS_TABLE, DatasetRecord, ErrorKind, NodeId, PUT_LEASE_RENEW_MS, PartitionRecord, PutId,
    Request, Response, Transport, validate_dataset_name,
};

use crate::{Client, ClientError};

/// A dataset being written: see [`Client::dataset_writer`].
pub struct DatasetWriter<'a, T: Transport = tern_net::QuicTransport> {
    client: &'a Client<T>,
    name: String,
    /// The version this write replaces (`None`: the name was free), checked at commit.
    replaces: Option<u64>,
    partitions: Vec<PartitionRecord>,
    /// Each partition's bounds, while every partition added has them.
    bounds: Option<Vec<crate::bounds::PartitionBounds>>,
    /// Bytes placed on each node by this writer so far (not yet in the catalog).
    pending: std::collections::HashMap<NodeId, u64>,
    lease: PutLeaseKeeper<T>,
    /// When the write began (the record's creation time).
    created_ms: u64,
}

/// Keeps a write's lease (see [`tern_proto::PutLease`]) alive: renewed in the background
/// until the commit ends it; dropped without a commit, the lease is ended (or, if this
/// process dies, expires) and the cluster collects the write's blocks.
struct PutLeaseKeeper<T: Transport> {
    id: PutId,
    dataset: String,
    /// Renewals the lease has had; `None` once committed, or lost to expiry.
    renewals: Arc<tokio::sync::Mutex<Option<u64>>>,
    renewer: tokio::task::JoinHandle<()>,
    client: Arc<Client<T>>,
}

impl<T: Transport> Drop for PutLeaseKeeper<T> {
    fn drop(&mut self) {
        self.renewer.abort();
        let (renewals, client) = (self.renewals.clone(), self.client.clone());
        let (put, dataset) = (self.id, self.dataset.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let Some(renewals) = renewals.lock().await.take() else {
                    return;
                };
                let end = Request::EndPut {
                    put,
                    dataset,
                    renewals,
                };
                if let Err(e) = client.call(end).await {
                    tracing::debug!(%put, error = %e, "abandoned put's lease left to expire");
                }
            });
        }
    }
}

impl<T: Transport> DatasetWriter<'_, T> {
    /// Store one partition of a table, keeping its bounds for the record (see
    /// [`crate::bounds`]).
    pub async fn add_table_partition(
        &mut self,
        partition: &crate::ingest::Partition,
    ) -> Result<&PartitionRecord, ClientError> {
        let mut bounds = self.bounds.take();
        self.add_partition(&partition.bytes, partition.rows).await?;
        if let Some(bounds) = &mut bounds {
            bounds.push(partition.bounds.clone());
        }
        self.bounds = bounds;
        Ok(self.partitions.last().expect("just added"))
    }

    /// Store one partition now: placed by the cluster, written along its chain of holders.
    /// A partition added this way has no bounds, so neither has the dataset.
    pub async fn add_partition(
        &mut self,
        bytes: &[u8],
        rows: u64,
    ) -> Result<&PartitionRecord, ClientError> {
        let chain = self
            .client
            .place(&[bytes.len() as u64], &self.pending)
            .await?
            .pop()
            .unwrap_or_default();
        let addrs: Vec<String> = chain.iter().map(|(_, addr)| addr.clone()).collect();
        let (block, holders) = self
            .client
            .put_block(bytes, &addrs, Some(self.lease.id))
            .await?;
        if holders.len() < addrs.len() {
            return Err(ClientError::BlockNotStored {
                hash: block,
                reason: format!("only {holders:?} acknowledged"),
            });
        }
        for holder in &holders {
            *self.pending.entry(*holder).or_default() += bytes.len() as u64;
        }
        self.bounds = None;
        self.partitions.push(PartitionRecord {
            block,
            bytes: bytes.len() as u64,
            rows,
            holders,
        });
        Ok(self.partitions.last().expect("just pushed"))
    }

    pub fn partitions(&self) -> &[PartitionRecord] {
        &self.partitions
    }

    /// The version this write replaces (`None`: the name was free when it began); the commit
    /// is refused if the dataset changed since.
    pub fn replaces(&self) -> Option<u64> {
        self.replaces
    }

    /// The catalog record [`DatasetWriter::commit`] would write now.
    pub fn record(&self, format: &str, schema: &str) -> DatasetRecord {
        let bounds = match &self.bounds {
            // Bounds that fail to encode are only a lost chance to skip partitions.
            Some(bounds) if format == "arrow-ipc" => {
                crate::bounds::encode(bounds).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        DatasetRecord {
            bounds,
            name: self.name.clone(),
            version: self.replaces.map_or(1, |v| v + 1),
            format: format.into(),
            schema: schema.into(),
            partitions: self.partitions.clone(),
            created_ms: self.created_ms,
        }
    }

    /// Make the dataset visible: one catalog entry, or nothing if the name changed meanwhile.
    /// The leader checks the record before it commits it.
    pub async fn commit(self, format: &str, schema: &str) -> Result<DatasetRecord, ClientError> {
        let record = self.record(format, schema);
        // Holding the lease's lock keeps a renewal from changing it under the commit.
        let mut renewals = self.lease.renewals.lock().await;
        self.lease.renewer.abort();
        let Some(current) = *renewals else {
            return Err(ClientError::PutLeaseLost { name: self.name });
        };
        let commit = Request::CommitDataset {
            record: record.clone(),
            replaces: self.replaces,
            put: self.lease.id,
            renewals: current,
            write: self.client.new_id(),
        };
        match self.client.call(commit).await {
            Ok(Response::Written { .. }) => {
                *renewals = None;
                Ok(record)
            }
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(ClientError::Remote(e)) if e.kind == ErrorKind::LeaseExpired => {
                *renewals = None;
                Err(ClientError::PutLeaseLost { name: self.name })
            }
            Err(e) => Err(e),
        }
    }
}

fn decode_dataset(bytes: &[u8]) -> Result<DatasetRecord, ClientError> {
    DatasetRecord::decode(bytes)
        .map_err(|e| ClientError::Unexpected(format!("unreadable dataset record: {e}")))
}

impl<T: Transport> Client<T> {
    /// Store a dataset held in memory (see [`Client::dataset_writer`] to stream one).
    pub async fn put_dataset(
        &self,
        name: &str,
        format: &str,
        schema: &str,
        partitions: &[(Vec<u8>, u64)],
        replace: bool,
    ) -> Result<DatasetRecord, ClientError> {
        let mut writer = self.dataset_writer(name, replace).await?;
        for (bytes, rows) in partitions {
            writer.add_partition(bytes, *rows).await?;
        }
        writer.commit(format, schema).await
    }

    /// Start writing dataset `name`: partitions are stored as they are added, each as a block
    /// on three holders; [`DatasetWriter::commit`] then makes the whole dataset visible with one
    /// catalog entry. Dropping the writer before that leaves nothing visible. With `replace`,
    /// an existing dataset of that name gets a new version atomically; without it, an existing
    /// name is an error (checked now, and again at commit).
    pub async fn dataset_writer(
        &self,
        name: &str,
        replace: bool,
    ) -> Result<DatasetWriter<'_, T>, ClientError> {
        validate_dataset_name(name).map_err(ClientError::InvalidName)?;
        let replaces = match self.dataset(name).await? {
            Some(_) if !replace => return Err(ClientError::DatasetExists { name: name.into() }),
            Some(old) => Some(old.version),
            None => None,
        };
        let lease = self.take_put_lease(name).await?;
        Ok(DatasetWriter {
            client: self,
            name: name.into(),
            replaces,
            partitions: Vec::new(),
            bounds: Some(Vec::new()),
            pending: Default::default(),
            lease,
            created_ms: self.clock.wall().as_millis() as u64,
        })
    }

    /// Register a new write of `dataset` in the catalog and keep renewing it.
    async fn take_put_lease(&self, dataset: &str) -> Result<PutLeaseKeeper<T>, ClientError> {
        let id = self.new_id();
        self.call(Request::BeginPut {
            put: id,
            dataset: dataset.into(),
        })
        .await?;
        let renewals = Arc::new(tokio::sync::Mutex::new(Some(0u64)));
        let client = Arc::new(self.sibling());
        let renewer = {
            let (renewals, client) = (renewals.clone(), client.clone());
            let dataset = dataset.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(PUT_LEASE_RENEW_MS)).await;
                    let mut current = renewals.lock().await;
                    let Some(done) = *current else { return };
                    let renew = Request::RenewPut {
                        put: id,
                        dataset: dataset.clone(),
                        renewals: done + 1,
                    };
                    match client.call(renew).await {
                        Ok(_) => *current = Some(done + 1),
                        Err(ClientError::Remote(e)) if e.kind == ErrorKind::LeaseExpired => {
                            tracing::warn!(put = %id, "put lease lost: the cluster expired it");
                            *current = None;
                            return;
                        }
                        // Retried at the next tick; the lease outlives many missed renewals.
                        Err(e) => tracing::debug!(put = %id, error = %e, "lease renewal failed"),
                    }
                }
            })
        };
        Ok(PutLeaseKeeper {
            id,
            dataset: dataset.into(),
            renewals,
            renewer,
            client,
        })
    }

    /// The dataset's record (a linearizable read), if it exists.
    pub async fn dataset(&self, name: &str) -> Result<Option<DatasetRecord>, ClientError> {
        match self.catalog_get(DATASETS_TABLE, name).await? {
            Some(bytes) => Ok(Some(decode_dataset(&bytes)?)),
            None => Ok(None),
        }
    }

    /// One page of dataset summaries, in name order, after `after` (from the first when
    /// `None`): at most `limit` (and `MAX_LIST_PAGE`), and whether more follow. Paging costs
    /// the cluster what a page holds, however many datasets there are.
    pub async fn list_datasets(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<tern_proto::DatasetSummary>, bool), ClientError> {
        let request = Request::ListDatasets {
            after: after.map(str::to_string),
            limit,
        };
        match self.call(request).await? {
            Response::DatasetPage { datasets, more } => Ok((datasets, more)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every dataset's summary, in name order, read a page at a time.
    pub async fn dataset_summaries(&self) -> Result<Vec<tern_proto::DatasetSummary>, ClientError> {
        let (mut all, mut after) = (Vec::new(), None::<String>);
        loop {
            let (page, more) = self
                .list_datasets(after.as_deref(), tern_proto::MAX_LIST_PAGE)
                .await?;
            after = page.last().map(|d| d.name.clone());
            all.extend(page);
            if !more || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// Every dataset, by name (whole records: see [`Self::list_datasets`] to page through
    /// summaries).
    pub async fn datasets(&self) -> Result<Vec<DatasetRecord>, ClientError> {
        let entries = self.catalog_list(DATASETS_TABLE, "", u32::MAX).await?;
        entries
            .iter()
            .map(|(_, bytes)| decode_dataset(bytes))
            .collect()
    }

    /// Remove a dataset from the catalog (its blocks become unreferenced).
    pub async fn remove_dataset(&self, name: &str) -> Result<(), ClientError> {
        let old = self
            .dataset(name)
            .await?
            .ok_or_else(|| ClientError::NoSuchDataset { name: name.into() })?;
        self.remove_dataset_version(name, old.version).await
    }

    /// Remove version `version` of a dataset; if the dataset has changed since (another
    /// version, or gone), nothing is removed and the error is [`ClientError::Conflict`] or
    /// [`ClientError::NotFound`]. Sent once with one write id, so a retry after a lost answer
    /// is not applied twice.
    pub async fn remove_dataset_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<(), ClientError> {
        let remove = Request::RemoveDataset {
            name: name.into(),
            version,
            write: self.new_id(),
        };
        self.call(remove).await?;
        Ok(())
    }
}
