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
