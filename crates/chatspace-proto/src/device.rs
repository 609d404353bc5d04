//! Where an encoder runs: the `--device` value the supervisor gives each encoder it starts.

use std::fmt;
use std::str::FromStr;

/// One encoder's device, written `cpu` or `cuda:K` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on this GPU ordinal (as CUDA numbers the visible GPUs).
    Cuda(u32),
}

impl Device {
    /// Default `(rows, padded tokens)` per inference batch here, for both binaries' flags.
    ///
    /// CPU: measured on a 2-core machine (README, "Performance"): small batches stay in cache
    /// and 512 tokens pad about 2%. GPU: a GPU needs large batches to fill its cores and hide
    /// launch overhead; 16,384 tokens is text-embeddings-inference's `--max-batch-tokens`
    /// default (not yet measured here).
    pub const fn batch_defaults(self) -> (u32, u32) {
        match self {
            Device::Cpu => (32, 512),
            Device::Cuda(_) => (512, 16_384),
        }
    }

    /// Default rows per unit of work the supervisor sends an encoder here (`--unit-rows`).
    ///
    /// CPU: 1,024 rows make 32 batches of the CPU defaults. GPU: 2,048 rows (at least four
    /// batches of 512 rows, about eleven of 16,384 tokens for chat-length texts), so that a
    /// unit is mostly full batches; the answer stays within a frame (2,048 vectors of 4,096
    /// dimensions are 32 MiB).
    pub const fn unit_rows_default(self) -> u32 {
        match self {
            Device::Cpu => 1024,
            Device::Cuda(_) => 2048,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(k) => write!(f, "cuda:{k}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            _ => s
                .strip_prefix("cuda:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device: use cpu or cuda:N")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_round_trip_through_their_flag_text() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(7)] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
        }
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        for bad in [
            "", "gpu", "cuda", "cuda:", "cuda:+1", "cuda:-1", "cuda:x", "CPU",
        ] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
