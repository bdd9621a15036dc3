//! What the codecs report, so the host can count encodes and decodes, sizes and latency
//! by format. The bridge depends on the domain only; `flext-application`'s
//! `BridgeMetrics` turns these reports into the metrics port's counters and histograms.

use std::time::Duration;

/// Encode or decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Writing an envelope.
    Encode,
    /// Reading an envelope.
    Decode,
}

impl Operation {
    /// `"encode"` or `"decode"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Encode => "encode",
            Operation::Decode => "decode",
        }
    }
}

/// The wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// MessagePack.
    MessagePack,
    /// Protobuf.
    Protobuf,
}

impl Format {
    /// `"msgpack"` or `"protobuf"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MessagePack => "msgpack",
            Format::Protobuf => "protobuf",
        }
    }
}

/// Receives one report per encode or decode.
pub trait Observer: Send + Sync {
    /// `bytes` is the encoded size (the input's, for a decode); `ok` whether it succeeded.
    fn observe(
        &self,
        operation: Operation,
        format: Format,
        bytes: usize,
        elapsed: Duration,
        ok: bool,
    );
}
