//! `tern put` and `tern get`: files in, files out.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tern_client::Client;
use tern_client::export::{FileSink, OutputFormat, decode_partition};
use tern_client::ingest::{
    Compression, InputFile, InputFormat, PartitionBuilder, arrow_bytes, check_same_schema,
    schema_json,
};

#[derive(Args)]
pub struct PutArgs {
    /// Files to store (CSV, Parquet, Arrow IPC, JSON lines), or one NumPy array (.npy).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The dataset's name.
    #[arg(long)]
    name: String,
    /// Cut the input into this many partitions of equal rows (one row each if it has fewer).
    #[arg(long, conflicts_with = "partition_size")]
    partitions: Option<u64>,
    /// Cut a partition when it holds this much Arrow data (e.g. 64MiB, 500KB).
    #[arg(long, default_value = "64MiB")]
    partition_size: String,
    /// The input format, when the file names do not tell.
    #[arg(long)]
    format: Option<String>,
    /// Columns and types for CSV/JSON instead of inferring them, e.g. "id:Int64,name:Utf8".
    #[arg(long)]
    schema: Option<String>,
    /// Replace an existing dataset of that name (as a new version).
    #[arg(long)]
    replace: bool,
    /// An array's chunk shape, for example 1000,1000 (default: chunks of about 32 MiB).
    #[arg(long)]
    chunks: Option<String>,
    /// How partitions are compressed: auto (zstd when it saves a fifth or more), zstd, or
    /// none (more bytes stored, and first reads that skip decompressing).
    #[arg(long, default_value = "auto", value_parser = ["auto", "zstd", "none"])]
    compression: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct SqlArgs {
    /// The query, for example "SELECT plate_state, count(*) FROM tickets GROUP BY 1".
    query: String,
    /// Write the answer to this file (.parquet, .csv, .arrow, .json) instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the stages and tasks the query would run, without running it.
    #[arg(long, conflicts_with_all = ["analyze", "out"])]
    explain: bool,
    /// Run it, then print per stage its tasks, rows and time, and where the tasks ran.
    #[arg(long)]
    analyze: bool,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct GetArgs {
    name: String,
    /// Output file; its extension picks the format (.parquet, .csv, .arrow, .json; .npy for
    /// an array).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    quiet: bool,
}

/// "64MiB", "500KB", "1g", "12345".
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a size"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {text:?} (use KB, KiB, MB, MiB, GB, GiB)"),
    };
    let bytes = (number * factor as f64) as u64;
    if bytes == 0 {
        bail!("size {text:?} must be above zero");
    }
    Ok(bytes)
}

/// A size as [`parse_size`] reads it, where 0 means "none".
pub fn parse_size_or_zero(text: &str) -> Result<u64> {
    match text.trim() {
        "0" => Ok(0),
        _ => parse_size(text),
    }
}

fn parse_schema(text: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for column in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let (name, ty) = column
            .split_once(':')
            .ok_or_else(|| anyhow!("--schema column {column:?} should be NAME:TYPE"))?;
        let ty: DataType = ty
            .trim()
            .parse()
            .map_err(|e| anyhow!("--schema column {name:?}: {e}"))?;
        fields.push(Field::new(name.trim(), ty, true));
    }
    if fields.is_empty() {
        bail!("--schema names no columns");
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub async fn put(dir: &Path, args: PutArgs) -> Result<()> {
    let client = Client::open(dir)?;
    let npy = |p: &PathBuf| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if args.format.as_deref() == Some("npy") || args.paths.iter().any(npy) {
        let [path] = args.paths.as_slice() else {
            bail!("an array is stored from one .npy file at a time");
        };
        let chunks = args
            .chunks
            .as_deref()
            .map(crate::arrays::parse_chunks)
            .transpose()?;
        return crate::arrays::put_npy(&client, path, &args.name, chunks, args.replace).await;
    }
    if args.chunks.is_some() {
        bail!(
            "--chunks is for arrays (.npy files); tables are cut by --partitions or --partition-size"
        );
    }
    let format = match &args.format {
        Some(f) => Some(
            InputFormat::parse(f)
                .ok_or_else(|| anyhow!("unknown --format {f:?} (csv, parquet, arrow, json)"))?,
        ),
        None => None,
    };
    let schema = args.schema.as_deref().map(parse_schema).transpose()?;
    let cut_bytes = parse_size(&args.partition_size)?;
    let compression = match args.compression.as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Auto,
    };
    if args.partitions == Some(0) {
        bail!("--partitions must be at least 1");
    }
    let mut total_input = 0u64;
    for path in &args.paths {
        total_input += std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
    }

    let started = Instant::now();
    let bar = progress(total_input, args.quiet);
    let mut writer = client.dataset_writer(&args.name, args.replace).await?;
    // Parsing and compressing (CPU) on a blocking thread, storing (network and disks) here:
    // the next partition is cut while the last one travels down its chain. The channel holds
    // one finished partition, so at most three are in memory at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let stored = Arc::new(AtomicU64::new(0));
    let cutter = {
        let (paths, bar, stored) = (args.paths.clone(), bar.clone(), stored.clone());
        let cut = Cut {
            format,
            schema,
            compression,
            bytes: cut_bytes,
            partitions: args.partitions,
        };
        tokio::task::spawn_blocking(move || cut_partitions(&paths, &cut, &bar, &stored, &tx))
    };
    while let Some(partition) = rx.recv().await {
        if let Err(e) = writer.add_table_partition(&partition).await {
            drop(rx);
            let _ = cutter.await;
            return Err(e.into());
        }
        stored.fetch_add(1, Ordering::Relaxed);
    }
    let first_schema = cutter.await.context("the partition cutter failed")??;
    let record = writer
        .commit("arrow-ipc", &schema_json(&first_schema))
        .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    println!(
        "stored {} (version {}): {} partitions, {} rows, {:.1} MB read, {:.1} MB stored ×3 in {:.1} s ({:.1} MB/s)",
        record.name,
        record.version,
        record.partitions.len(),
        record.rows(),
        total_input as f64 / 1e6,
        record.bytes() as f64 / 1e6,
        secs,
        total_input as f64 / 1e6 / secs
    );
    Ok(())
}

/// How `tern put` cuts its input.
struct Cut {
    format: Option<InputFormat>,
    schema: Option<SchemaRef>,
    compression: Compression,
    /// Cut when a partition holds this many bytes of Arrow data…
    bytes: u64,
    /// … or, with `--partitions N`, into N partitions of equal rows (as Dask's `npartitions`).
    partitions: Option<u64>,
}

/// Where each partition ends, as rows of the whole input: `partitions` of equal rows (within
/// one), or one row each when the input has fewer rows than that (at least one partition).
/// Computed per partition, so a large count costs no memory.
#[derive(Debug, Clone, Copy)]
struct RowCut {
    rows: u64,
    count: u64,
}

impl RowCut {
    fn new(rows: u64, partitions: u64) -> Self {
        Self {
            rows,
            count: partitions.min(rows).max(1),
        }
    }

    /// The row partition `k` ends before (`None` past the last partition).
    fn end(&self, k: u64) -> Option<u64> {
        (k < self.count).then(|| ((k as u128 + 1) * self.rows as u128 / self.count as u128) as u64)
    }
}

/// Read every input file, cut it into partitions and send each (bytes, rows) to `out`.
/// Returns the schema. An empty input still makes one empty partition with the schema.
/// Partitions end on row boundaries inside the reader's batches, so any count or size is
/// kept to the row.
fn cut_partitions(
    paths: &[PathBuf],
    cut: &Cut,
    bar: &ProgressBar,
    stored: &AtomicU64,
    out: &tokio::sync::mpsc::Sender<tern_client::ingest::Partition>,
) -> Result<SchemaRef> {
    // With --partitions, the rows are counted first (Parquet from its footer).
    let ends = match cut.partitions {
        Some(n) => {
            bar.set_message("counting rows");
            let mut rows = 0u64;
            for path in paths {
                rows += tern_client::ingest::count_rows(path, cut.format, cut.schema.clone())?;
            }
            if rows < n {
                eprintln!(
                    "note: the input has {rows} rows, fewer than --partitions {n}: {} partition(s) of one row each",
                    rows.max(1)
                );
            }
            Some(RowCut::new(rows, n))
        }
        None => None,
    };
    let mut first: Option<InputFile> = None;
    let mut builder: Option<PartitionBuilder> = None;
    let (mut rows, mut read_before, mut cut_count) = (0u64, 0u64, 0u64);
    let send = |done: PartitionBuilder, count: &mut u64| -> Result<()> {
        *count += 1;
        // A closed channel means the storing side failed; it reports why.
        out.blocking_send(done.finish()?)
            .map_err(|_| anyhow!("storing stopped"))
    };
    for path in paths {
        let counter = Arc::new(AtomicU64::new(0));
        let mut input = InputFile::open(path, cut.format, cut.schema.clone(), counter.clone())?;
        if let Some(f) = &first {
            check_same_schema(f, &input)?;
        }
        let file_schema = input.schema.clone();
        while let Some(batch) = input.next_batch() {
            let batch = batch?;
            let per_row = (arrow_bytes(&batch) / batch.num_rows().max(1) as u64).max(1);
            let mut offset = 0usize;
            while offset < batch.num_rows() {
                let part = match builder.as_mut() {
                    Some(b) => b,
                    None => builder.insert(
                        PartitionBuilder::new(&file_schema)?.with_compression(cut.compression),
                    ),
                };
                let left = (batch.num_rows() - offset) as u64;
                // Rows this partition still takes from the batch.
                let take = match &ends {
                    Some(ends) => {
                        let end = ends.end(cut_count).unwrap_or(u64::MAX);
                        end.saturating_sub(rows).min(left)
                    }
                    None => cut
                        .bytes
                        .saturating_sub(part.arrow_bytes)
                        .div_ceil(per_row)
                        .clamp(1, left),
                };
                if take > 0 {
                    part.push(&batch.slice(offset, take as usize))?;
                    offset += take as usize;
                    rows += take;
                }
                let full = match &ends {
                    Some(ends) => ends
                        .end(cut_count)
                        .is_some_and(|end| rows >= end && part.rows > 0),
                    None => part.arrow_bytes >= cut.bytes,
                };
                if full {
                    send(builder.take().expect("a partition is open"), &mut cut_count)?;
                } else if take == 0 {
                    // Past the last boundary (the input grew while it was read): the rest
                    // goes to the last partition.
                    part.push(&batch.slice(offset, left as usize))?;
                    offset += left as usize;
                    rows += left;
                }
            }
            let read = read_before + counter.load(Ordering::Relaxed);
            bar.set_position(read);
            bar.set_message(format!(
                "{rows} rows, {} partitions stored",
                stored.load(Ordering::Relaxed)
            ));
        }
        read_before += counter.load(Ordering::Relaxed);
        if first.is_none() {
            first = Some(input);
        }
    }
    let Some(first) = first else {
        bail!("no input files")
    };
    match builder.take() {
        Some(done) => send(done, &mut cut_count)?,
        None if cut_count == 0 => send(PartitionBuilder::new(&first.schema)?, &mut cut_count)?,
        None => {}
    }
    Ok(first.schema)
}

/// Decode each partition from `parts` (in order) and write its rows to `out`; the file is
/// finished only when every partition arrived. Returns the rows written.
fn write_partitions(
    out: &Path,
    format: OutputFormat,
    dataset: &tern_proto::DatasetRecord,
    bar: &ProgressBar,
    mut parts: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64> {
    let mut sink: Option<FileSink> = None;
    let mut rows = 0u64;
    for (i, partition) in dataset.partitions.iter().enumerate() {
        let Some(bytes) = parts.blocking_recv() else {
            bail!("reading {} stopped at partition {i}", dataset.name);
        };
        let (schema, batches) = decode_partition(bytes).with_context(|| {
            format!(
                "partition {i} of {} ({})",
                dataset.name,
                partition.block.prefix(12)
            )
        })?;
        let file = match sink.as_mut() {
            Some(s) => s,
            None => sink.insert(FileSink::create(out, format, &schema)?),
        };
        for batch in &batches {
            file.write(batch)?;
            rows += batch.num_rows() as u64;
        }
        bar.inc(partition.bytes);
        bar.set_message(format!("{rows} rows"));
    }
    if let Some(sink) = sink {
        sink.finish()?;
    }
    Ok(rows)
}

pub async fn get(dir: &Path, args: GetArgs) -> Result<()> {
    let client = Client::open(dir)?;
    if args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return crate::arrays::get_npy(&client, &args.name, &args.out).await;
    }
    let format = OutputFormat::from_path(&args.out).ok_or_else(|| {
        anyhow!(
            "{}: use a .parquet, .csv, .arrow or .json file name (.npy for an array)",
            args.out.display()
        )
    })?;
    let dataset = client
        .dataset(&args.name)
        .await?
        .ok_or_else(|| anyhow!("no dataset named {:?}", args.name))?;
    if dataset.format == tern_array::FORMAT {
        bail!("{:?} is an array: write it to a .npy file", dataset.name);
    }
    if dataset.format != "arrow-ipc" {
        bail!(
            "dataset {:?} holds {:?} partitions, not tables",
            dataset.name,
            dataset.format
        );
    }
    let addresses = client.node_addresses().await?;
    let bar = progress(dataset.bytes(), args.quiet);
    // Reading here, decoding and writing on a blocking thread: the next partition is fetched
    // while the last one is written out.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let writer = {
        let (out, dataset, bar) = (args.out.clone(), dataset.clone(), bar.clone());
        tokio::task::spawn_blocking(move || write_partitions(&out, format, &dataset, &bar, rx))
    };
    let mut failed = None;
    for i in 0..dataset.partitions.len() {
        match client.read_partition(&dataset, i, &addresses).await {
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(anyhow::Error::from(e));
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.context("the file writer failed")?;
    let rows = match (failed, written) {
        (None, Ok(rows)) => rows,
        (Some(e), _) | (None, Err(e)) => {
            let _ = std::fs::remove_file(&args.out);
            return Err(e);
        }
    };
    bar.finish_and_clear();
    println!(
        "wrote {rows} rows of {} (version {}) to {}",
        dataset.name,
        dataset.version,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_asked_for_are_equal_to_a_row_and_never_empty() {
        let ends = |rows, n| {
            let cut = RowCut::new(rows, n);
            (0..).map_while(|k| cut.end(k)).collect::<Vec<u64>>()
        };
        assert_eq!(ends(10, 3), vec![3, 6, 10]);
        assert_eq!(ends(30_000, 30_000).len(), 30_000);
        assert_eq!(ends(5, 8), vec![1, 2, 3, 4, 5], "one row each");
        assert_eq!(ends(0, 4), vec![0], "one empty partition");
        let sizes: Vec<u64> = std::iter::once(0)
            .chain(ends(20_000, 37))
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect();
        assert_eq!(sizes.iter().sum::<u64>(), 20_000);
        assert!(sizes.iter().all(|&s| s == 540 || s == 541), "{sizes:?}");
        // A count in the billions is arithmetic, not a list.
        let huge = RowCut::new(u64::MAX / 2, u64::MAX / 4);
        assert_eq!(huge.end(huge.count - 1), Some(u64::MAX / 2));
    }

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("500KB").unwrap(), 500_000);
        assert_eq!(parse_size("12345").unwrap(), 12345);
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn schemas_parse_from_name_type_lists() {
        let schema = parse_schema("id:Int64, name:Utf8").unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert!(parse_schema("id").is_err());
        assert!(parse_schema("id:NotAType").is_err());
    }
}

/// `tern node drain ID`: start the drain, then follow the node's replica count to zero.
pub async fn drain(
    dir: &Path,
    id: u64,
    no_wait: bool,
    timeout_secs: u64,
    quiet: bool,
) -> Result<()> {
    let client = Client::open(dir)?;
    client.drain(id).await?;
    if no_wait {
        println!("node {id} is draining (follow it with tern status)");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(timeout_secs);
    let node_of =
        |status: &tern_proto::ClusterStatus| status.nodes.iter().find(|n| n.id == id).cloned();
    let first = node_of(&client.status().await?).ok_or_else(|| anyhow!("there is no node {id}"))?;
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(first.stored_partitions);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} replicas moved {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    loop {
        if let Some(node) = client.status().await.ok().as_ref().and_then(node_of) {
            bar.set_position(
                first
                    .stored_partitions
                    .saturating_sub(node.stored_partitions),
            );
            if node.state == tern_proto::NodeState::Drained {
                bar.finish_and_clear();
                println!(
                    "node {id} drained in {:.1} s: its {} replicas live on other nodes; it can be removed",
                    started.elapsed().as_secs_f64(),
                    first.stored_partitions
                );
                return Ok(());
            }
            if node.state != tern_proto::NodeState::Draining {
                bar.abandon();
                bail!("node {id} stopped draining: it is {} now", node.state);
            }
        }
        if std::time::Instant::now() >= deadline {
            bar.abandon();
            bail!(
                "node {id} was not drained within {timeout_secs} s; the drain goes on (see tern status)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `tern sql`.
pub async fn sql(dir: &Path, args: SqlArgs) -> Result<()> {
    let client = Client::open(dir)?;
    if args.explain {
        print!("{}", client.explain(&args.query).await?);
        println!();
        return Ok(());
    }
    let started = Instant::now();
    // Never resubmitted on its own: a query whose coordinator died may be what killed it,
    // and running it again would take the next node down too. The error says what happened.
    let running = run_query(&client, &args);
    let answer = tokio::select! {
        answer = running => Some(answer),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(answer) = answer else {
        // The query's stream is dropped by now, which tells the coordinator to stop; give
        // that a moment to leave before the process does.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        bail!("cancelled: the cluster stops the query");
    };
    let answer = answer?;
    let secs = started.elapsed().as_secs_f64();
    match &args.out {
        Some(out) => println!(
            "wrote {} rows to {} in {secs:.2} s",
            answer.rows,
            out.display()
        ),
        None => {
            let table = arrow::util::pretty::pretty_format_batches(&answer.batches)
                .context("formatting the answer")?;
            println!("{table}");
            println!("{} rows in {secs:.2} s", answer.rows);
        }
    }
    if args.analyze {
        print!("{}", crate::output::stages_table(&answer.stages));
    }
    Ok(())
}

/// What `tern sql` ran: the rows it kept to print (none when they went to a file).
struct SqlOutcome {
    rows: u64,
    batches: Vec<arrow::record_batch::RecordBatch>,
    stages: Vec<tern_proto::StageReport>,
}

/// Run the query once: a progress bar follows its stages on the terminal, and with `--out` each
/// batch goes to the file as it arrives.
async fn run_query(
    client: &Client,
    args: &SqlArgs,
) -> Result<SqlOutcome, tern_client::ClientError> {
    use tern_client::QueryUpdate;
    let format = match &args.out {
        Some(out) => Some(OutputFormat::from_path(out).ok_or_else(|| {
            tern_client::ClientError::Unexpected(format!(
                "{}: use a .parquet, .csv, .arrow or .json file name",
                out.display()
            ))
        })?),
        None => None,
    };
    let bar = query_progress(args.quiet);
    let mut stream = client.sql_stream(&args.query).await?;
    let mut sink: Option<FileSink> = None;
    let mut batches = Vec::new();
    let mut planned: Vec<tern_proto::StagePlanned> = Vec::new();
    let mut done_per_stage = std::collections::BTreeMap::new();
    let mut retried = std::collections::BTreeMap::new();
    let stages = loop {
        let update = match stream.next_update().await {
            Ok(Some(update)) => update,
            Ok(None) => break stream.stages().to_vec(),
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        match update {
            QueryUpdate::Planned(stages) => {
                bar.set_length(stages.iter().map(|s| s.tasks).sum());
                planned = stages;
            }
            // Stages that read different data run at once: the bar counts every task of the
            // query and names the stage that moved last.
            QueryUpdate::Progress {
                stage,
                done,
                retries,
                ..
            } => {
                done_per_stage.insert(stage, done);
                retried.insert(stage, retries);
                bar.set_position(done_per_stage.values().sum());
                let what = planned
                    .iter()
                    .find(|s| s.stage == stage)
                    .map_or("", |s| s.what.as_str());
                let retries = match retried.values().sum::<u64>() {
                    0 => String::new(),
                    n => format!(" ({n} attempts retried)"),
                };
                bar.set_message(format!("stage {stage}/{}: {what}{retries}", planned.len()));
            }
            QueryUpdate::Batch(batch) => {
                bar.set_message(format!("final stage: {} rows received", stream.rows()));
                match (&args.out, format) {
                    (Some(out), Some(format)) => {
                        if sink.is_none() {
                            sink = Some(FileSink::create(out, format, &batch.schema())?);
                        }
                        if let Some(sink) = sink.as_mut() {
                            sink.write(&batch)?;
                        }
                    }
                    _ => batches.push(batch),
                }
            }
            QueryUpdate::Finished(stages) => break stages,
        }
    };
    bar.finish_and_clear();
    if let (Some(out), Some(format)) = (&args.out, format) {
        // An empty answer still writes a file with the answer's columns.
        let sink = match sink {
            Some(sink) => sink,
            None => {
                let schema = stream.schema().ok_or_else(|| {
                    tern_client::ClientError::Unexpected("the answer had no schema".into())
                })?;
                FileSink::create(out, format, &schema)?
            }
        };
        sink.finish()?;
    }
    Ok(SqlOutcome {
        rows: stream.rows(),
        batches,
        stages,
    })
}

/// The bar `tern sql` draws on a terminal: the running stage and its finished tasks.
fn query_progress(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
