use super::*;

#[test]
fn blocks_are_named_by_content_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let a = store.put(b"partition 0").unwrap();
    assert_eq!(a, store.put(b"partition 0").unwrap());
    assert_eq!(a, BlockHash::of(b"partition 0"));
    let big = vec![7u8; 3 << 20];
    let b = store.put(&big).unwrap();
    assert_eq!(
        store.get(&b).unwrap(),
        big,
        "large blocks round-trip through blob files"
    );
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(store.hashes().unwrap().len(), 2);
    store.delete(&a).unwrap();
    assert!(matches!(store.get(&a), Err(StoreError::NotFound { .. })));
}

#[test]
fn space_of_deleted_blocks_is_reclaimed_once_garbage_is_a_third_of_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let disk = RocksDisk::open(dir.path(), &FAMILIES)
        .unwrap()
        .reclaim_at_least(1 << 20);
    let store = BlockStore::on(Arc::new(disk)).unwrap();
    let blocks: Vec<BlockHash> = (0..16u8)
        .map(|i| store.put(&vec![i; 1 << 20]).unwrap())
        .collect();
    store.flush().unwrap();
    let full = store.bytes_on_disk().unwrap();
    assert!(full >= 16 << 20, "{full}");

    store.delete(&blocks[0]).unwrap();
    assert_eq!(
        store.reclaim_space().unwrap(),
        0,
        "one block in sixteen is not worth rewriting the rest"
    );
    for hash in &blocks[1..12] {
        store.delete(hash).unwrap();
    }
    store.flush().unwrap();
    assert!(store.reclaim_space().unwrap() >= 12 << 20);
    let after = store.bytes_on_disk().unwrap();
    assert!(after < 6 << 20, "{after} bytes on disk for 4 MiB of blocks");
    for (i, hash) in blocks.iter().enumerate().skip(12) {
        assert_eq!(store.get(hash).unwrap(), vec![i as u8; 1 << 20]);
    }
    assert_eq!(
        store.reclaim_space().unwrap(),
        0,
        "nothing is left to reclaim"
    );
}

#[test]
fn claims_name_the_puts_a_block_arrived_for_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let (p1, p2) = (PutId([1; 16]), PutId([2; 16]));
    let bytes = b"shared partition";
    let hash = BlockHash::of(bytes);
    let other = BlockHash::of(b"other");
    store.put_verified(&hash, bytes, Some(p1)).unwrap();
    store.put_verified(&hash, bytes, Some(p2)).unwrap();
    store.put_verified(&other, b"other", Some(p1)).unwrap();
    assert_eq!(store.claims(&hash).unwrap(), vec![p1, p2]);
    store.drop_claim(&hash, &p1).unwrap();
    assert_eq!(store.claims(&hash).unwrap(), vec![p2]);
    store.delete(&hash).unwrap();
    assert!(store.claims(&hash).unwrap().is_empty());
    assert_eq!(
        store.claims(&other).unwrap(),
        vec![p1],
        "other blocks keep theirs"
    );
    assert_eq!(store.hashes().unwrap(), vec![other]);
}

#[test]
fn corruption_is_detected_on_store_and_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let hash = BlockHash::of(b"good bytes");
    let refused = store.put_verified(&hash, b"bad bytes", None).unwrap_err();
    assert!(
        matches!(refused, StoreError::CorruptBlock { .. }),
        "{refused}"
    );
    assert!(
        !store.contains(&hash).unwrap(),
        "a refused block is not kept"
    );

    store.put_verified(&hash, b"good bytes", None).unwrap();
    assert!(store.verify(&hash).unwrap());
    store.flip_for_test(&hash, 9, 0x1e).unwrap();
    assert!(!store.verify(&hash).unwrap());
    // Storing the same block again replaces the damaged copy.
    store.put_verified(&hash, b"good bytes", None).unwrap();
    assert!(store.verify(&hash).unwrap());
    store.flip_for_test(&hash, 9, 0x1e).unwrap();
    let err = store.get(&hash).unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains(&hash.to_string()),
        "{err}"
    );
}

/// A disk whose reads fail as told: an I/O error that may pass, or damage it reports.
struct Flaky {
    disk: RocksDisk,
    fail: std::sync::Mutex<Option<DiskError>>,
}

impl Disk for Flaky {
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.disk.get(family, key)
    }
    fn get_self_checked(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => self.disk.get_self_checked(family, key),
        }
    }
    fn write(&self, batch: Batch, sync: bool) -> Result<(), DiskError> {
        self.disk.write(batch, sync)
    }
    fn scan<'a>(
        &'a self,
        family: &str,
        from: &[u8],
        order: Order,
    ) -> Result<disk::Entries<'a>, DiskError> {
        self.disk.scan(family, from, order)
    }
    fn used_bytes(&self) -> Result<u64, DiskError> {
        self.disk.used_bytes()
    }
    fn flush(&self) -> Result<(), DiskError> {
        self.disk.flush()
    }
}

/// Scrub condemns a copy only when it is known bad: an I/O error is an error, not a
/// verdict (the caller keeps the copy and looks again later).
#[test]
fn only_known_damage_condemns_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(Flaky {
        disk: RocksDisk::open(dir.path(), &FAMILIES).unwrap(),
        fail: Default::default(),
    });
    let store = BlockStore::on(flaky.clone()).unwrap();
    let hash = store.put(b"block").unwrap();
    *flaky.fail.lock().unwrap() = Some(DiskError::Io("EIO, for now".into()));
    assert!(matches!(store.verify(&hash), Err(StoreError::Io(_))));
    *flaky.fail.lock().unwrap() = Some(DiskError::Corrupt("bad blob checksum".into()));
    assert!(!store.verify(&hash).unwrap());
    *flaky.fail.lock().unwrap() = None;
    assert!(store.verify(&hash).unwrap());
}

fn scattered(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i + seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

#[test]
fn a_block_reads_by_groups_each_checked_against_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let g = GROUP_BYTES as usize;
    let data = scattered(5 * g + 300, 1);
    let hash = store.put(&data).unwrap();
    let read_before = store.bytes_read();
    let ranges = store.ranges(&hash).unwrap().expect("stored in groups");
    assert_eq!(ranges.len(), data.len() as u64);
    let mut out = vec![0u8; data.len()];
    assert_eq!(
        ranges.read_groups(&[1, 5], &mut out).unwrap(),
        (g + 300) as u64
    );
    assert_eq!(out[g..2 * g], data[g..2 * g]);
    assert_eq!(out[5 * g..], data[5 * g..]);
    assert!(
        out[..g].iter().all(|b| *b == 0),
        "groups not asked are not read"
    );
    assert_eq!(store.bytes_read() - read_before, (g + 300) as u64);

    store.flip_for_test(&hash, 3 * g as u64 + 17, 0x40).unwrap();
    let ranges = store.ranges(&hash).unwrap().unwrap();
    ranges
        .read_groups(&[2, 4], &mut out)
        .expect("other groups still read");
    let err = ranges.read_groups(&[3], &mut out).unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptRange { hash: h, .. } if *h == hash),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("offset {}", 3 * g)),
        "{err}"
    );
    assert!(matches!(
        store.get(&hash),
        Err(StoreError::CorruptBlock { .. })
    ));
    assert!(!store.verify(&hash).unwrap());
    store.put(&data).unwrap();
    assert!(store.verify(&hash).unwrap(), "stored again, it is whole");
}

#[test]
fn blocks_stored_whole_by_earlier_versions_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let data = scattered(3 * GROUP_BYTES as usize, 2);
    let hash = store.put_whole_for_test(&data).unwrap();
    assert!(store.ranges(&hash).unwrap().is_none(), "read whole");
    assert_eq!(store.get(&hash).unwrap(), data);
    assert_eq!(store.size(&hash).unwrap(), Some(data.len() as u64));
    assert_eq!(store.list().unwrap(), vec![(hash, data.len() as u64)]);
    assert!(store.verify(&hash).unwrap());
    // Stored again (a repair, say), it is kept in groups, once.
    store.put(&data).unwrap();
    assert!(store.ranges(&hash).unwrap().is_some());
    assert_eq!(store.get(&hash).unwrap(), data);
    store.delete(&hash).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(
        store
            .disk
            .scan(BLOCKS, &[], Order::Ascending)
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        store
            .disk
            .scan(OUTBOARDS, &[], Order::Ascending)
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_damaged_outboard_refuses_range_reads_and_scrub_makes_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    let data = scattered(4 * GROUP_BYTES as usize, 3);
    let hash = store.put(&data).unwrap();
    let mut outboard = store.disk.get(OUTBOARDS, &hash.0).unwrap().unwrap();
    outboard[5] ^= 1;
    let mut batch = Batch::default();
    batch.put(OUTBOARDS, hash.0, outboard);
    store.commit(batch).unwrap();
    assert!(matches!(
        store.ranges(&hash),
        Err(StoreError::CorruptRange { .. })
    ));
    assert!(store.verify(&hash).unwrap(), "the bytes are intact");
    let ranges = store
        .ranges(&hash)
        .unwrap()
        .expect("the outboard was made again");
    let mut out = vec![0u8; data.len()];
    ranges.read_groups(&[0, 1, 2, 3], &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn blocks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hash = BlockStore::open(dir.path())
        .unwrap()
        .put(b"durable")
        .unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&hash).unwrap(), b"durable");
}
