//! Merkle hash trees as Tahoe builds them (`allmydata/hashtree.py`): a complete binary tree stored as a flat array
//! (node 0 is the root, node i has children 2i+1 and 2i+2), leaves padded to a power of two with
//! `tagged_hash("Merkle tree empty leaf", "<leaf number>")`, inner nodes `tagged_pair_hash("Merkle tree internal
//! node", left, right)`.
//!
//! [`HashTree`] is built from all leaves (by an uploader). [`IncompleteHashTree`] is what a downloader fills in from
//! hashes sent by an untrusted server: every hash is checked against the root before it is kept, and a failed
//! check leaves the tree as it was.

use super::hashutil::{Hash, tagged_hash, tagged_pair_hash, tags};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashTreeError {
    #[error("hash tree node {index} does not match: {what}")]
    BadHash { index: usize, what: &'static str },
    #[error("not enough hashes to validate hash tree node {index}")]
    NotEnoughHashes { index: usize },
    #[error("hash tree node {index} is out of range (the tree has {len} nodes)")]
    OutOfRange { index: usize, len: usize },
}

/// The hash of padding leaf number `leaf_number`.
pub fn empty_leaf_hash(leaf_number: usize) -> Hash {
    tagged_hash(tags::MERKLE_EMPTY_LEAF, leaf_number.to_string().as_bytes())
}

/// The hash of an inner node from its two children.
pub fn pair_hash(left: &Hash, right: &Hash) -> Hash {
    tagged_pair_hash(tags::MERKLE_INTERNAL_NODE, left, right)
}

fn parent(i: usize) -> usize {
    (i - 1) / 2
}

fn sibling(i: usize) -> usize {
    if i % 2 == 1 { i + 1 } else { i - 1 }
}

/// Depth of node `i` (the root is depth 0).
fn depth(i: usize) -> usize {
    (i + 1).ilog2() as usize
}

/// The geometry shared by complete and incomplete trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    first_leaf: usize,
    node_count: usize,
}

impl Shape {
    fn for_leaves(num_leaves: usize) -> Self {
        let padded = num_leaves.max(1).next_power_of_two();
        Shape {
            first_leaf: padded - 1,
            node_count: 2 * padded - 1,
        }
    }

    /// The nodes a verifier needs beside the path to check node `index` against the root: its siblings up the tree.
    fn uncles(&self, mut index: usize) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        while index != 0 {
            needed.insert(sibling(index));
            index = parent(index);
        }
        needed
    }

    fn leaf_index(&self, leaf_number: usize) -> Result<usize, HashTreeError> {
        let index = self.first_leaf + leaf_number;
        if index >= self.node_count {
            return Err(HashTreeError::OutOfRange {
                index,
                len: self.node_count,
            });
        }
        Ok(index)
    }
}

/// A hash tree over all of its leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    nodes: Vec<Hash>,
    shape: Shape,
}

impl HashTree {
    /// Builds the tree over `leaves` (zero leaves give a one-node tree holding the empty-leaf hash, as Tahoe does).
    pub fn new(leaves: &[Hash]) -> Self {
        let shape = Shape::for_leaves(leaves.len());
        let mut nodes = vec![[0u8; 32]; shape.node_count];
        nodes[shape.first_leaf..shape.first_leaf + leaves.len()].copy_from_slice(leaves);
        for leaf_number in leaves.len()..shape.node_count - shape.first_leaf {
            nodes[shape.first_leaf + leaf_number] = empty_leaf_hash(leaf_number);
        }
        for i in (0..shape.first_leaf).rev() {
            nodes[i] = pair_hash(&nodes[2 * i + 1], &nodes[2 * i + 2]);
        }
        HashTree { nodes, shape }
    }

    pub fn root(&self) -> &Hash {
        &self.nodes[0]
    }

    /// All nodes in Tahoe's order (root first).
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    pub fn node(&self, index: usize) -> Option<&Hash> {
        self.nodes.get(index)
    }

    pub fn first_leaf_index(&self) -> usize {
        self.shape.first_leaf
    }

    /// The node indexes a downloader needs to verify leaf `leaf_number` (plus the leaf itself if asked).
    pub fn needed_hashes(
        &self,
        leaf_number: usize,
        include_leaf: bool,
    ) -> Result<BTreeSet<usize>, HashTreeError> {
        let leaf = self.shape.leaf_index(leaf_number)?;
        let mut needed = self.shape.uncles(leaf);
        if include_leaf {
            needed.insert(leaf);
        }
        Ok(needed)
    }
}

/// A hash tree known only in part, filled in as verified hashes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteHashTree {
    nodes: Vec<Option<Hash>>,
    shape: Shape,
}

impl IncompleteHashTree {
    pub fn new(num_leaves: usize) -> Self {
        let shape = Shape::for_leaves(num_leaves);
        IncompleteHashTree {
            nodes: vec![None; shape.node_count],
            shape,
        }
    }

    pub fn nodes(&self) -> &[Option<Hash>] {
        &self.nodes
    }

    pub fn root(&self) -> Option<&Hash> {
        self.nodes[0].as_ref()
    }

    pub fn leaf(&self, leaf_number: usize) -> Option<&Hash> {
        let index = self.shape.leaf_index(leaf_number).ok()?;
        self.nodes[index].as_ref()
    }

    /// The node indexes still missing to verify leaf `leaf_number`.
    pub fn needed_hashes(
        &self,
        leaf_number: usize,
        include_leaf: bool,
    ) -> Result<BTreeSet<usize>, HashTreeError> {
        let leaf = self.shape.leaf_index(leaf_number)?;
        let mut needed = self.shape.uncles(leaf);
        if include_leaf {
            needed.insert(leaf);
        }
        needed.retain(|&i| self.nodes[i].is_none());
        Ok(needed)
    }

    /// Adds `hashes` (by node index) and `leaves` (by leaf number), checking each new one against its sibling and
    /// parent up to a node already known (ultimately the root). On any error, nothing new is kept.
    pub fn set_hashes(
        &mut self,
        hashes: &BTreeMap<usize, Hash>,
        leaves: &BTreeMap<usize, Hash>,
    ) -> Result<(), HashTreeError> {
        let mut incoming = hashes.clone();
        for (&leaf_number, leaf_hash) in leaves {
            let index = self.shape.leaf_index(leaf_number)?;
            if incoming.get(&index).is_some_and(|h| h != leaf_hash) {
                return Err(HashTreeError::BadHash {
                    index,
                    what: "a leaf and a hash given for the same node differ",
                });
            }
            incoming.insert(index, *leaf_hash);
        }
        if let Some(&index) = incoming.keys().find(|&&i| i >= self.nodes.len()) {
            return Err(HashTreeError::OutOfRange {
                index,
                len: self.nodes.len(),
            });
        }
        let mut added = Vec::new();
        let result = self.add_and_verify(&incoming, &mut added);
        if result.is_err() {
            for i in added {
                self.nodes[i] = None;
            }
        }
        result
    }

    fn add_and_verify(
        &mut self,
        incoming: &BTreeMap<usize, Hash>,
        added: &mut Vec<usize>,
    ) -> Result<(), HashTreeError> {
        let max_depth = depth(self.nodes.len() - 1);
        let mut to_check: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); max_depth + 1];
        for (&i, hash) in incoming {
            match &self.nodes[i] {
                Some(known) if known != hash => {
                    return Err(HashTreeError::BadHash {
                        index: i,
                        what: "differs from the hash already verified",
                    });
                }
                Some(_) => {}
                None => {
                    self.nodes[i] = Some(*hash);
                    added.push(i);
                    to_check[depth(i)].insert(i);
                }
            }
        }
        // Deepest first, so each parent computed here is itself checked one level up.
        for level in (1..to_check.len()).rev() {
            while let Some(i) = to_check[level].pop_first() {
                let sib = sibling(i);
                let (Some(mine), Some(theirs)) = (self.nodes[i], self.nodes[sib]) else {
                    return Err(HashTreeError::NotEnoughHashes { index: i });
                };
                let (left, right) = if i < sib {
                    (mine, theirs)
                } else {
                    (theirs, mine)
                };
                let computed = pair_hash(&left, &right);
                let p = parent(i);
                match &self.nodes[p] {
                    Some(known) if *known != computed => {
                        return Err(HashTreeError::BadHash {
                            index: p,
                            what: "its children do not hash to it",
                        });
                    }
                    Some(_) => {}
                    None => {
                        self.nodes[p] = Some(computed);
                        added.push(p);
                        to_check[level - 1].insert(p);
                    }
                }
                to_check[level].remove(&sib);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_indexes_are_errors() {
        let mut tree = IncompleteHashTree::new(4);
        let far = BTreeMap::from([(99usize, [0u8; 32])]);
        assert!(matches!(
            tree.set_hashes(&far, &BTreeMap::new()),
            Err(HashTreeError::OutOfRange { .. })
        ));
        assert!(tree.needed_hashes(4, false).is_err());
        let full = HashTree::new(&[[1; 32], [2; 32], [3; 32]]);
        assert!(full.needed_hashes(4, false).is_err());
        assert!(
            full.needed_hashes(3, false).is_ok(),
            "padding leaves are addressable, as in Tahoe"
        );
    }

    #[test]
    fn verifies_a_leaf_against_the_root_only() {
        let leaves: Vec<Hash> = (0..5u8).map(|i| [i; 32]).collect();
        let full = HashTree::new(&leaves);
        let mut partial = IncompleteHashTree::new(5);
        let root = BTreeMap::from([(0, *full.root())]);
        partial.set_hashes(&root, &BTreeMap::new()).unwrap();
        let proof: BTreeMap<usize, Hash> = full
            .needed_hashes(3, false)
            .unwrap()
            .into_iter()
            .map(|i| (i, full.nodes()[i]))
            .collect();
        partial
            .set_hashes(&proof, &BTreeMap::from([(3, leaves[3])]))
            .unwrap();
        assert_eq!(partial.leaf(3), Some(&leaves[3]));
        let mut forged = partial.clone();
        let before = forged.clone();
        let err = forged.set_hashes(&BTreeMap::new(), &BTreeMap::from([(2, [9; 32])]));
        assert!(matches!(err, Err(HashTreeError::BadHash { .. })));
        assert_eq!(forged, before, "a failed check keeps nothing");
    }
}
