//! `tern put x.npy` and `tern get x --out x.npy`: NumPy arrays in and out, a band of chunks
//! (one row of the chunk grid) in memory at a time.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tern_array::{ArrayMeta, FORMAT, chunk, npy};
use tern_client::Client;
use tern_client::export::decode_partition;
use tern_client::ingest::PartitionBuilder;
use tern_proto::human_bytes;

/// "1000,1000" as chunk lengths.
pub fn parse_chunks(text: &str) -> Result<Vec<u64>> {
    text.split(',')
        .map(|n| {
            n.trim()
                .parse::<u64>()
                .with_context(|| format!("--chunks {text:?}: lengths separated by commas"))
        })
        .collect()
}

/// Store the array in `.npy` file `path` as dataset `name`, cut into `chunks` (about 32 MiB
/// each when not given).
pub async fn put_npy(
    client: &Client,
    path: &Path,
    name: &str,
    chunks: Option<Vec<u64>>,
    replace: bool,
) -> Result<()> {
    let started = Instant::now();
    let mut file = BufReader::new(
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let header = npy::read_header(&mut file).with_context(|| format!("{}", path.display()))?;
    let chunks = chunks.unwrap_or_else(|| ArrayMeta::auto_chunks(&header.dtype, &header.shape));
    let meta = ArrayMeta::new(header.dtype.clone(), header.shape.clone(), chunks)?;
    let mut writer = client.dataset_writer(name, replace).await?;
    // Reading and compressing on a blocking thread, storing here: one chunk in the channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, u64)>(1);
    let cutter = {
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || cut_chunks(&mut file, &header, &meta, &tx))
    };
    while let Some((bytes, rows)) = rx.recv().await {
        if let Err(e) = writer.add_partition(&bytes, rows).await {
            drop(rx);
            let _ = cutter.await;
            return Err(e.into());
        }
    }
    cutter.await.context("the chunk cutter failed")??;
    let record = writer.commit(FORMAT, &meta.to_json()).await?;
    println!(
        "stored {} (version {}): {}, {} stored ×3 in {:.1} s",
        record.name,
        record.version,
        meta.describe(),
        human_bytes(record.bytes()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Read the data after `header` band by band, cut each band into its chunks and send each
/// chunk's block (and element count) to `out`.
fn cut_chunks(
    file: &mut BufReader<File>,
    header: &npy::Header,
    meta: &ArrayMeta,
    out: &tokio::sync::mpsc::Sender<(Vec<u8>, u64)>,
) -> Result<()> {
    let itemsize = meta.dtype.itemsize();
    // Fortran order is turned around whole; C order is read a band at a time.
    let whole = if header.fortran_order {
        let data = npy::read_data(file, header, meta.elements() * itemsize)?;
        Some(npy::fortran_to_c(&data, &meta.shape, itemsize))
    } else {
        None
    };
    let schema = chunk::schema(&meta.dtype);
    let mut at = 0usize;
    for band in 0..chunk::bands(meta) {
        let bytes = chunk::band_bytes(meta, band) as usize;
        let data = match &whole {
            Some(all) => all[at..at + bytes].to_vec(),
            None => npy::read_data(file, header, bytes as u64)?,
        };
        at += bytes;
        for index in chunk::band_chunks(meta, band) {
            let mut builder = PartitionBuilder::new(&schema)?;
            for batch in chunk::to_batches(&meta.dtype, chunk::cut_from_band(meta, &data, index))? {
                builder.push(&batch)?;
            }
            let partition = builder.finish()?;
            if out
                .blocking_send((partition.bytes, partition.rows))
                .is_err()
            {
                return Ok(()); // the writer stopped; it says why
            }
        }
    }
    Ok(())
}

/// Write array dataset `name` to `.npy` file `out`.
pub async fn get_npy(client: &Client, name: &str, out: &PathBuf) -> Result<()> {
    let dataset = client
        .dataset(name)
        .await?
        .with_context(|| format!("no dataset named {name:?}"))?;
    if dataset.format != FORMAT {
        bail!(
            "{name:?} is a table ({}), not an array: write it to .parquet, .csv, .arrow or .json",
            dataset.format
        );
    }
    let meta = ArrayMeta::from_json(&dataset.schema)?;
    let addresses = client.node_addresses().await?;
    let written = async {
        let mut file = BufWriter::new(
            File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
        );
        npy::write_header(&mut file, &meta.dtype, &meta.shape)?;
        for band in 0..chunk::bands(&meta) {
            let mut data = vec![0u8; chunk::band_bytes(&meta, band) as usize];
            for index in chunk::band_chunks(&meta, band) {
                let bytes = client.read_partition(&dataset, index, &addresses).await?;
                let (_, batches) =
                    decode_partition(bytes).with_context(|| format!("chunk {index} of {name}"))?;
                let values = chunk::from_batches(&meta, index, &batches)?;
                chunk::place_in_band(&meta, &mut data, index, &values);
            }
            file.write_all(&data)?;
        }
        file.flush()?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    println!(
        "wrote {name} (version {}): {} to {}",
        dataset.version,
        meta.describe(),
        out.display()
    );
    Ok(())
}
