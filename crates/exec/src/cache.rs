//! Decoded columns of stored partitions, kept in memory up to a byte budget (Spark's cached
//! blocks, the memory Dask workers keep data in).
//!
//! A scan reads a whole block (every column), checks its hash and decompresses the columns it
//! needs: for a table scan that is most of a query's work, and memory bandwidth, not the disk,
//! is what bounds it. Blocks never change (a block is named by its hash), so a column decoded
//! once can answer every later scan of it without a way to go stale. Entries are one column of
//! one block, or (for the array chunks graph tasks read, which kernels decode in place) a
//! whole block's bytes; the least recently used go first when the budget is reached, whatever
//! their kind.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::FieldRef;
use tern_proto::BlockHash;

/// One column of one block: its field and its arrays, one per batch of the block.
#[derive(Debug, Clone)]
pub struct CachedColumn {
    pub field: FieldRef,
    pub arrays: Arc<[ArrayRef]>,
}

/// See the module docs.
#[derive(Debug)]
pub struct ColumnCache {
    budget: u64,
    inner: Mutex<Inner>,
    /// Scans answered from here without reading their block.
    hits: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    used: u64,
    /// Bumped on every use; an entry's last use orders eviction.
    tick: u64,
    /// Columns by (block, column index); whole blocks at [`WHOLE_BLOCK`].
    columns: HashMap<(BlockHash, usize), Entry>,
    by_last_use: BTreeMap<u64, (BlockHash, usize)>,
    /// Rows in each batch of a block (what a scan of no columns, `count(*)`, needs), kept while
    /// any of its columns is.
    batch_rows: HashMap<BlockHash, (Arc<[usize]>, usize)>,
}

#[derive(Debug)]
struct Entry {
    held: Held,
    bytes: u64,
    last_use: u64,
}

#[derive(Debug)]
enum Held {
    Column(CachedColumn),
    Block(bytes::Bytes),
}

/// The column index a whole block is kept at.
const WHOLE_BLOCK: usize = usize::MAX;

impl ColumnCache {
    /// A cache holding at most `budget` bytes of decoded arrays (0: it keeps nothing).
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of arrays held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Scans answered from here without reading their block, since the node started.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rows per batch of `block` and those of `columns` held here (`None` where not),
    /// marking them used.
    pub fn lookup(
        &self,
        block: &BlockHash,
        columns: &[usize],
    ) -> (Option<Arc<[usize]>>, Vec<Option<CachedColumn>>) {
        let mut inner = self.lock();
        let rows = inner.batch_rows.get(block).map(|(rows, _)| rows.clone());
        let found: Vec<Option<CachedColumn>> = columns
            .iter()
            .map(|&c| {
                inner.touch(*block, c).and_then(|e| match &e.held {
                    Held::Column(column) => Some(column.clone()),
                    Held::Block(_) => None,
                })
            })
            .collect();
        if rows.is_some() && found.iter().all(Option::is_some) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        (rows, found)
    }

    /// Keep column `column` of `block`, then drop the least recently used columns past the
    /// budget. A column larger than the whole budget is not kept.
    pub fn insert(&self, block: BlockHash, column: usize, value: CachedColumn) {
        let bytes = held_bytes(&value.arrays).max(1);
        if bytes > self.budget {
            return;
        }
        let rows: Arc<[usize]> = value.arrays.iter().map(|a| a.len()).collect();
        let mut inner = self.lock();
        inner.keep(block, column, Held::Column(value), bytes, self.budget);
        inner.batch_rows.entry(block).or_insert_with(|| (rows, 0)).1 += 1;
    }

    /// The bytes of `block` if they are held here, marking them used.
    pub fn lookup_block(&self, block: &BlockHash) -> Option<bytes::Bytes> {
        let mut inner = self.lock();
        let found = inner
            .touch(*block, WHOLE_BLOCK)
            .and_then(|e| match &e.held {
                Held::Block(bytes) => Some(bytes.clone()),
                Held::Column(_) => None,
            });
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keep the bytes of `block` (checked against its name by whoever read it), then drop
    /// the least recently used entries past the budget.
    pub fn insert_block(&self, block: BlockHash, bytes: bytes::Bytes) {
        let size = (bytes.len() as u64).max(1);
        if size > self.budget {
            return;
        }
        self.lock()
            .keep(block, WHOLE_BLOCK, Held::Block(bytes), size, self.budget);
    }
}

/// The memory `arrays` keep alive: each allocation once, at its capacity. Arrow's own
/// `get_array_memory_size` counts every buffer at its allocation's capacity, so a column
/// whose offsets and values are windows on one read of its bytes was counted twice.
fn held_bytes(arrays: &[ArrayRef]) -> u64 {
    fn visit(data: &arrow::array::ArrayData, seen: &mut HashMap<usize, u64>) {
        let buffers = data
            .buffers()
            .iter()
            .chain(data.nulls().map(|n| n.buffer()));
        for buffer in buffers {
            seen.insert(
                buffer.data_ptr().as_ptr() as usize,
                buffer.capacity() as u64,
            );
        }
        for child in data.child_data() {
            visit(child, seen);
        }
    }
    let mut seen = HashMap::new();
    for array in arrays {
        visit(&array.to_data(), &mut seen);
    }
    seen.values().sum()
}

impl Inner {
    fn keep(&mut self, block: BlockHash, column: usize, held: Held, bytes: u64, budget: u64) {
        self.remove((block, column));
        self.tick += 1;
        let last_use = self.tick;
        self.by_last_use.insert(last_use, (block, column));
        self.columns.insert(
            (block, column),
            Entry {
                held,
                bytes,
                last_use,
            },
        );
        self.used += bytes;
        while self.used > budget {
            let Some((_, oldest)) = self.by_last_use.pop_first() else {
                break;
            };
            self.remove(oldest);
        }
    }

    fn touch(&mut self, block: BlockHash, column: usize) -> Option<&Entry> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.columns.get_mut(&(block, column))?;
        self.by_last_use.remove(&entry.last_use);
        entry.last_use = tick;
        self.by_last_use.insert(tick, (block, column));
        Some(entry)
    }

    fn remove(&mut self, key: (BlockHash, usize)) {
        let Some(entry) = self.columns.remove(&key) else {
            return;
        };
        self.by_last_use.remove(&entry.last_use);
        self.used -= entry.bytes;
        if key.1 == WHOLE_BLOCK {
            return;
        }
        if let Some((_, held)) = self.batch_rows.get_mut(&key.0) {
            *held -= 1;
            if *held == 0 {
                self.batch_rows.remove(&key.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

    fn column(values: usize) -> CachedColumn {
        CachedColumn {
            field: Arc::new(Field::new("x", DataType::Int64, false)),
            arrays: vec![Arc::new(Int64Array::from_iter_values(0..values as i64)) as ArrayRef]
                .into(),
        }
    }

    fn block(n: u8) -> BlockHash {
        BlockHash([n; 32])
    }

    #[test]
    fn an_allocation_shared_by_buffers_or_batches_is_counted_once() {
        use arrow::array::{Array, StringArray};
        use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
        // Offsets (4 rows) and values in one allocation, as a read of a column's bytes gives.
        let mut bytes = Vec::with_capacity(64);
        for offset in [0i32, 1, 3, 6, 10] {
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        bytes.extend_from_slice(b"abbcccdddd");
        let one_read = Buffer::from_vec(bytes);
        let offsets = ScalarBuffer::<i32>::new(one_read.clone(), 0, 5);
        let values = one_read.slice_with_length(20, 10);
        let strings = StringArray::new(OffsetBuffer::new(offsets), values, None);
        assert_eq!(strings.value(3), "dddd");
        let arrays: Vec<ArrayRef> = vec![Arc::new(strings.clone()), Arc::new(strings.slice(1, 2))];
        assert_eq!(held_bytes(&arrays), one_read.capacity() as u64);
        assert!(
            arrays
                .iter()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
                >= 4 * one_read.capacity()
        );
    }

    #[test]
    fn the_least_recently_used_column_goes_first() {
        let one = held_bytes(&column(1000).arrays);
        let cache = ColumnCache::new(3 * one);
        for b in 0..3 {
            cache.insert(block(b), 0, column(1000));
        }
        // Block 0 used again: block 1 is now the oldest.
        assert!(cache.lookup(&block(0), &[0]).1[0].is_some());
        assert_eq!(cache.hits(), 1);
        cache.insert(block(3), 0, column(1000));
        let held = |b: u8| cache.lookup(&block(b), &[0]).1[0].is_some();
        assert!(!held(1), "the least recently used column was kept");
        assert!(held(0) && held(2) && held(3));
        assert!(cache.used() <= cache.budget());
    }

    #[test]
    fn batch_rows_stay_while_any_column_of_the_block_does() {
        let one = held_bytes(&column(10).arrays);
        let cache = ColumnCache::new(2 * one);
        cache.insert(block(1), 0, column(10));
        cache.insert(block(1), 1, column(10));
        assert_eq!(cache.lookup(&block(1), &[]).0.as_deref(), Some(&[10][..]));
        cache.insert(block(2), 0, column(10));
        cache.insert(block(2), 1, column(10));
        assert!(cache.lookup(&block(1), &[]).0.is_none());
        assert_eq!(cache.used(), 2 * one);
    }

    #[test]
    fn whole_blocks_share_the_budget_and_the_order_of_use_with_columns() {
        let one = held_bytes(&column(1000).arrays);
        let cache = ColumnCache::new(3 * one);
        cache.insert(block(1), 0, column(1000));
        let bytes = bytes::Bytes::from(vec![7u8; one as usize]);
        cache.insert_block(block(2), bytes.clone());
        cache.insert_block(block(3), bytes.clone());
        assert_eq!(cache.lookup_block(&block(2)).as_deref(), Some(&bytes[..]));
        assert!(
            cache.lookup_block(&block(1)).is_none(),
            "a column is not a block"
        );
        assert!(
            cache.lookup(&block(2), &[0]).1[0].is_none(),
            "a block is not a column"
        );
        // Over the budget: the column, least recently used, goes first.
        cache.insert_block(block(4), bytes.clone());
        assert!(cache.lookup(&block(1), &[0]).1[0].is_none());
        assert!(
            cache.lookup(&block(1), &[]).0.is_none(),
            "its rows went with it"
        );
        assert!(cache.lookup_block(&block(3)).is_some());
        assert_eq!(cache.used(), 3 * one);
    }

    #[test]
    fn nothing_is_kept_without_a_budget_and_replacing_counts_once() {
        let none = ColumnCache::new(0);
        none.insert(block(1), 0, column(10));
        assert_eq!(none.used(), 0);
        assert!(none.lookup(&block(1), &[0]).1[0].is_none());

        let cache = ColumnCache::new(1 << 20);
        cache.insert(block(1), 0, column(10));
        let once = cache.used();
        cache.insert(block(1), 0, column(10));
        assert_eq!(cache.used(), once);
    }
}
