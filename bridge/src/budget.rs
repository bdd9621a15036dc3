//! The decoding budget: how much memory an input may make a decoder allocate.
//!
//! A decoded [`Value`](crate::Value) node takes 32 bytes however small its encoding (a
//! MessagePack nil is one byte, a Protobuf null two), so a size limit alone lets one
//! input allocate 32 times its size, plus the lists and maps that hold the nodes. The
//! decoders therefore count an input's nodes *before* they build anything, from the raw
//! bytes, and refuse an input that holds more than [`DecodeLimits::node_budget`] of them.

// Without a format feature nothing decodes, and the counting helpers go unused.
#![cfg_attr(not(any(feature = "msgpack", feature = "protobuf")), allow(dead_code))]

use flext_domain::Error;

/// The limits a decoder holds its input to.
///
/// Memory: a decoded tree costs at most about 80 bytes per node (the 32-byte value, its
/// place in a list or a map entry's key and B-tree share) plus the text and bytes it
/// holds, which the input holds too. With the defaults an input of `n` bytes holds at most
/// `4,096 + n / 4` nodes, so decoding it allocates at most about `20 n + 320 KiB` (the
/// `decode_budget` test measures the peak for the worst inputs of both formats), and no
/// input over 8 MiB is read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest input read, in bytes; a larger one is refused before any parsing.
    pub max_bytes: usize,
    /// The nodes any input may hold, however small (values, list items, map entries).
    pub base_nodes: usize,
    /// One node more for every this many bytes of input (0 reads as 1).
    pub bytes_per_node: usize,
}

impl DecodeLimits {
    /// The defaults: 8 MiB, 4,096 nodes plus one per 4 bytes.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_bytes: 8 << 20,
        base_nodes: 4_096,
        bytes_per_node: 4,
    };

    /// How many nodes an input of `len` bytes may hold.
    pub fn node_budget(&self, len: usize) -> usize {
        self.base_nodes
            .saturating_add(len / self.bytes_per_node.max(1))
    }

    /// Refuses input over [`max_bytes`](DecodeLimits::max_bytes).
    pub(crate) fn check_size(&self, format: &str, len: usize) -> Result<(), Error> {
        if len > self.max_bytes {
            return Err(Error::resource_exhausted(
                "ENVELOPE_TOO_LARGE",
                format!(
                    "{len} bytes of {format} exceed the limit of {} (DecodeLimits::max_bytes)",
                    self.max_bytes
                ),
            )
            .with_detail("limit", self.max_bytes));
        }
        Ok(())
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::DEFAULT
    }
}

/// Counts nodes against a budget.
pub(crate) struct NodeCounter<'f> {
    format: &'f str,
    len: usize,
    budget: usize,
    nodes: usize,
}

impl<'f> NodeCounter<'f> {
    pub(crate) fn new(format: &'f str, len: usize, limits: &DecodeLimits) -> Self {
        NodeCounter {
            format,
            len,
            budget: limits.node_budget(len),
            nodes: 0,
        }
    }

    /// Counts `n` nodes more; past the budget, the typed refusal.
    pub(crate) fn add(&mut self, n: usize) -> Result<(), Error> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.budget {
            return Err(Error::resource_exhausted(
                "ENVELOPE_TOO_COMPLEX",
                format!(
                    "the {} envelope holds more than {} values for its {} bytes \
                     (DecodeLimits::node_budget)",
                    self.format, self.budget, self.len
                ),
            )
            .with_detail("format", self.format)
            .with_detail("node_budget", self.budget));
        }
        Ok(())
    }
}
