use super::*;

fn layout(num_blocks: usize, groups: Vec<Option<usize>>) -> KvLayout {
    KvLayout {
        max_seq_len: 1000,
        block_size: 4,
        num_blocks,
        groups,
        bytes_per_block: 1,
    }
}

#[test]
fn full_group_holds_every_token() {
    let mut bm = BlockManager::new(&layout(10, vec![None]));
    let mut seq = SeqBlocks::default();
    bm.extend(&mut seq, 0, 9).unwrap();
    assert_eq!(seq.tables[0].blocks.len(), 3);
    assert_eq!(bm.free_blocks(), 7);
    let t = &seq.tables[0];
    assert_eq!(t.slot(5, 4), Some(t.blocks[1] as usize * 4 + 1));
    assert_eq!(t.slot(12, 4), None);
    bm.extend(&mut seq, 9, 10).unwrap();
    assert_eq!(bm.free_blocks(), 7, "token 9 fits the third block");
    bm.free(&mut seq);
    assert_eq!(bm.free_blocks(), 10);
}

#[test]
fn sliding_group_drops_blocks_behind_the_window() {
    // Window 5: a query at position p sees keys p-4..=p.
    let mut bm = BlockManager::new(&layout(20, vec![Some(5)]));
    let mut seq = SeqBlocks::default();
    bm.extend(&mut seq, 0, 16).unwrap();
    assert_eq!(seq.tables[0].blocks.len(), 4);
    // Next query at 16 sees 12..=16: blocks 3 and 4 only.
    bm.extend(&mut seq, 16, 17).unwrap();
    assert_eq!(seq.tables[0].first, 3);
    assert_eq!(seq.tables[0].blocks.len(), 2);
    assert!(seq.tables[0].slot(12, 4).is_some());
    assert!(seq.tables[0].slot(11, 4).is_none());
    assert_eq!(bm.used_blocks(), 2);
}

#[test]
fn a_long_jump_leaves_an_empty_sliding_table_consistent() {
    let mut bm = BlockManager::new(&layout(20, vec![Some(2), None]));
    let mut seq = SeqBlocks::default();
    bm.extend(&mut seq, 0, 3).unwrap();
    bm.trim(&mut seq, 40);
    assert!(seq.tables[0].blocks.is_empty());
    assert_eq!(seq.tables[0].first, 9, "position 39 lives in block 9");
    assert_eq!(seq.tables[1].blocks.len(), 1, "full groups keep everything");
}

#[test]
fn extend_is_all_or_nothing() {
    let mut bm = BlockManager::new(&layout(3, vec![None, None]));
    let mut seq = SeqBlocks::default();
    let err = bm.extend(&mut seq, 0, 8).unwrap_err();
    assert_eq!(err, BlockError::OutOfBlocks { needed: 4, free: 3 });
    assert_eq!(bm.free_blocks(), 3);
    assert_eq!(seq.num_blocks(), 0);
}

#[test]
fn needed_matches_what_extend_takes() {
    let l = layout(1000, vec![None, Some(6), Some(6)]);
    let mut bm = BlockManager::new(&l);
    let mut seq = SeqBlocks::default();
    let mut pos = 0;
    for chunk in [7, 1, 1, 13, 1, 2, 30, 1] {
        let before = bm.free_blocks();
        bm.trim(&mut seq, pos);
        let freed = bm.free_blocks() - before;
        let need = bm.needed(&seq, pos, pos + chunk);
        bm.extend(&mut seq, pos, pos + chunk).unwrap();
        assert_eq!(before + freed - bm.free_blocks(), need);
        assert!(seq.num_blocks() <= l.blocks_for(pos + chunk, chunk));
        pos += chunk;
    }
}

fn chain(n: usize, salt: Option<&str>) -> Vec<crate::BlockHash> {
    let mut hashes = Vec::new();
    let mut parent = crate::prefix::chain_root(salt);
    for i in 0..n {
        parent = crate::prefix::block_hash(parent, &[i as u32; 4], &[]);
        hashes.push(parent);
    }
    hashes
}

/// A manager with prefix caching and a sequence that computed `tokens` tokens
/// of `hashes`' chain, registered and trimmed as the scheduler does.
fn computed(bm: &mut BlockManager, hashes: &[crate::BlockHash], tokens: usize) -> SeqBlocks {
    let mut seq = SeqBlocks::default();
    bm.extend(&mut seq, 0, tokens).unwrap();
    bm.register(&seq, &hashes[..tokens / 4], 0);
    bm.trim(&mut seq, tokens);
    seq
}

#[test]
fn a_freed_prefix_is_reused_until_its_blocks_are_needed() {
    let mut bm = BlockManager::new(&layout(8, vec![None]));
    bm.set_prefix_caching(true);
    let hashes = chain(3, None);
    let mut a = computed(&mut bm, &hashes, 10);
    let held = a.tables[0].blocks.clone();
    assert_eq!(
        bm.cached_blocks(),
        2,
        "the partly filled third block is not cached"
    );
    bm.free(&mut a);
    assert_eq!(bm.free_blocks(), 8);

    let mut b = SeqBlocks::default();
    assert_eq!(bm.reuse_prefix(&mut b, &hashes, |_| true), 8);
    assert_eq!(b.tables[0].blocks, held[..2]);
    assert_eq!(bm.free_blocks(), 6);
    // A sequence may refuse a length (one inside an image, say).
    let mut c = SeqBlocks::default();
    assert_eq!(bm.reuse_prefix(&mut c, &hashes, |k| k < 2), 4);
    assert_eq!(c.tables[0].blocks, held[..1]);
    assert_eq!(bm.free_blocks(), 6, "a shared block is counted once");
    bm.free(&mut c);
    bm.free(&mut b);
    // Other content, or another salt, finds nothing.
    let mut d = SeqBlocks::default();
    assert_eq!(bm.reuse_prefix(&mut d, &chain(3, Some("x")), |_| true), 0);
    // Cached blocks are taken last, and then forgotten.
    bm.extend(&mut d, 0, 24).unwrap();
    assert!(held[..2].iter().all(|b| !d.tables[0].blocks.contains(b)));
    bm.extend(&mut d, 24, 32).unwrap();
    assert_eq!(bm.cached_blocks(), 0);
    bm.free(&mut d);
    assert_eq!(
        bm.reuse_prefix(&mut SeqBlocks::default(), &hashes, |_| true),
        0
    );
}

#[test]
fn a_sliding_group_needs_only_the_blocks_its_window_reaches() {
    // Window 5 and blocks of 4: a query at 12 sees 8..=12, so block 2 only.
    let mut bm = BlockManager::new(&layout(20, vec![None, Some(5)]));
    bm.set_prefix_caching(true);
    let hashes = chain(5, None);
    let mut a = computed(&mut bm, &hashes, 20);
    assert_eq!(
        a.tables[1].first, 4,
        "the sliding group let go of blocks 0..4"
    );
    bm.free(&mut a);
    // Block 4 would leave nothing to compute of a 20-token prompt, so the caller
    // stops at 4 blocks: the sliding group holds block 3 of them (window).
    let mut b = SeqBlocks::default();
    assert_eq!(bm.reuse_prefix(&mut b, &hashes, |k| k <= 4), 16);
    assert_eq!(b.tables[0].blocks.len(), 4);
    assert_eq!((b.tables[1].first, b.tables[1].blocks.len()), (3, 1));
    bm.free(&mut b);
    // Starting at 8 would need the sliding group's block 1, which it gave back
    // first: the first cached block taken once the 10 uncached ones are gone.
    let mut taker = SeqBlocks::default();
    bm.extend(&mut taker, 0, 4 * 6).unwrap();
    let mut c = SeqBlocks::default();
    let got = bm.reuse_prefix(&mut c, &hashes, |k| k <= 2);
    assert_eq!(got, 0, "{c:?}");
}

#[test]
fn sharing_holders_free_a_block_once_the_last_lets_go() {
    let mut bm = BlockManager::new(&layout(4, vec![None]));
    bm.set_prefix_caching(true);
    let hashes = chain(2, None);
    let mut a = computed(&mut bm, &hashes, 8);
    let mut b = SeqBlocks::default();
    assert_eq!(bm.reuse_prefix(&mut b, &hashes, |k| k < 2), 4);
    bm.free(&mut a);
    assert_eq!(bm.free_blocks(), 3, "b still holds block 0");
    bm.extend(&mut b, 4, 8).unwrap();
    assert_eq!(bm.used_blocks(), 2);
    bm.free(&mut b);
    assert_eq!(bm.free_blocks(), 4);
    bm.set_prefix_caching(false);
    assert_eq!(bm.cached_blocks(), 0);
}
