//! Where encoders run: `--device cpu`, `cuda` (every visible GPU) or `cuda:0,2`, and how many
//! encoders that makes.
//!
//! GPUs are counted the way CUDA will number them for the encoders, without loading CUDA (the
//! supervisor never loads an inference runtime): `CUDA_VISIBLE_DEVICES` when it is set (CUDA
//! reads it up to its first invalid entry; empty means none), else the NVIDIA driver's
//! `/proc/driver/nvidia/gpus/*`, else `/dev/nvidia0`, `/dev/nvidia1`, .... Encoders inherit
//! `CUDA_VISIBLE_DEVICES`, so the ordinals given to them (`--device cuda:K`) are the same
//! ones. On CPU, the default is one single-thread encoder per core this process may use.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Result;
use chatspace_proto::Device;
use serde::{Serialize, Serializer};

use crate::bad_input;

/// The `--device` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider on these GPU ordinals (`None`: every visible GPU).
    Cuda(Option<Vec<u32>>),
}

impl DeviceSpec {
    /// The kind of device encoders run on (GPU 0 standing for any GPU), for defaults.
    pub fn kind(&self) -> Device {
        match self {
            DeviceSpec::Cpu => Device::Cpu,
            DeviceSpec::Cuda(_) => Device::Cuda(0),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a device: use cpu, cuda, or cuda:N[,N...] (e.g. cuda:0,2)");
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(None)),
            _ => {
                let list = s.strip_prefix("cuda:").ok_or_else(bad)?;
                let mut ids = Vec::new();
                for part in list.split(',') {
                    let id: u32 = part.trim().parse().map_err(|_| bad())?;
                    if ids.contains(&id) {
                        return Err(format!("`{s}` names GPU {id} twice"));
                    }
                    ids.push(id);
                }
                Ok(DeviceSpec::Cuda(Some(ids)))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(ids)) => {
                let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                write!(f, "cuda:{}", ids.join(","))
            }
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How many GPUs CUDA would show this process, and where that count came from (for messages).
pub fn visible_gpus(cuda_visible: Option<&str>, proc_dir: &Path, dev_dir: &Path) -> (u32, String) {
    if let Some(v) = cuda_visible {
        // CUDA stops at the first entry that is neither an index nor a GPU/MIG UUID.
        let n = v
            .split(',')
            .map(str::trim)
            .take_while(|e| {
                !e.is_empty()
                    && (e.parse::<u32>().is_ok() || e.starts_with("GPU-") || e.starts_with("MIG-"))
            })
            .count();
        return (n as u32, format!("CUDA_VISIBLE_DEVICES={v}"));
    }
    if let Ok(entries) = std::fs::read_dir(proc_dir) {
        let n = entries.flatten().count();
        return (n as u32, format!("{} entries", proc_dir.display()));
    }
    let n = std::fs::read_dir(dev_dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("nvidia").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            })
            .count()
    });
    (
        n as u32,
        format!(
            "no NVIDIA driver in {}, {n} {}/nvidiaN devices",
            proc_dir.display(),
            dev_dir.display()
        ),
    )
}

/// The device each encoder gets (its `--device cpu` or `cuda:K`), one per encoder: on CPU,
/// `encoders` or one per available core divided by `threads`; on GPUs, `encoders` (default one
/// per GPU) spread over the GPUs in turn.
pub fn encoder_devices(
    spec: &DeviceSpec,
    encoders: Option<u32>,
    threads: u32,
) -> Result<Vec<Device>> {
    match spec {
        DeviceSpec::Cpu => {
            let n = encoders.unwrap_or_else(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                (cores / threads.max(1)).max(1)
            });
            Ok(vec![Device::Cpu; n as usize])
        }
        DeviceSpec::Cuda(ids) => {
            let (visible, why) = visible_gpus(
                std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
                Path::new("/proc/driver/nvidia/gpus"),
                Path::new("/dev"),
            );
            let gpus = cuda_ordinals(spec, ids.as_deref(), visible, &why)?;
            let n = encoders.unwrap_or(gpus.len() as u32) as usize;
            Ok((0..n).map(|i| Device::Cuda(gpus[i % gpus.len()])).collect())
        }
    }
}

/// The GPU ordinals `--device` selects among `visible` ones.
fn cuda_ordinals(
    spec: &DeviceSpec,
    ids: Option<&[u32]>,
    visible: u32,
    why: &str,
) -> Result<Vec<u32>> {
    if visible == 0 {
        return Err(bad_input!(
            "--device {spec}: no NVIDIA GPU is visible ({why})"
        ));
    }
    match ids {
        None => Ok((0..visible).collect()),
        Some(ids) => {
            if let Some(bad) = ids.iter().find(|&&id| id >= visible) {
                return Err(bad_input!(
                    "--device {spec}: there is no GPU {bad}; {visible} visible ({why}), numbered from 0"
                ));
            }
            Ok(ids.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_parse_and_print_back() {
        for s in ["cpu", "cuda", "cuda:0", "cuda:0,2"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "cuda: 1, 3".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(vec![1, 3]))
        );
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", "cuda0"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains("is not a device"), "{bad}: {err}");
        }
        assert!(
            "cuda:1,1"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn visible_gpus_follow_cuda_visible_devices_then_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let (proc_dir, dev) = (dir.path().join("gpus"), dir.path().join("dev"));
        let count = |env: Option<&str>| visible_gpus(env, &proc_dir, &dev).0;
        assert_eq!(count(Some("0,1,2")), 3);
        assert_eq!(count(Some("GPU-8f2a,MIG-1c")), 2);
        assert_eq!(count(Some("")), 0);
        assert_eq!(count(Some("-1")), 0);
        assert_eq!(count(Some("1,x,0")), 1); // CUDA stops at the first invalid entry
        assert_eq!(count(None), 0);
        std::fs::create_dir_all(&dev).unwrap();
        for f in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(dev.join(f), "").unwrap();
        }
        assert_eq!(count(None), 2);
        std::fs::create_dir_all(proc_dir.join("0000:3b:00.0")).unwrap();
        assert_eq!(count(None), 1); // the driver's list wins
    }

    #[test]
    fn gpus_are_chosen_among_the_visible_ones() {
        let spec = DeviceSpec::Cuda(None);
        assert_eq!(cuda_ordinals(&spec, None, 3, "").unwrap(), [0, 1, 2]);
        assert_eq!(cuda_ordinals(&spec, Some(&[2, 0]), 3, "").unwrap(), [2, 0]);
        let err = cuda_ordinals(&spec, Some(&[3]), 3, "CUDA_VISIBLE_DEVICES=0,1,2").unwrap_err();
        assert!(
            err.to_string().contains("there is no GPU 3; 3 visible"),
            "{err}"
        );
        let err = cuda_ordinals(&spec, None, 0, "CUDA_VISIBLE_DEVICES=").unwrap_err();
        assert!(
            err.to_string().contains("no NVIDIA GPU is visible"),
            "{err}"
        );
        let cpu = encoder_devices(&DeviceSpec::Cpu, Some(3), 1).unwrap();
        assert_eq!(cpu, [Device::Cpu; 3]);
        assert!(
            !encoder_devices(&DeviceSpec::Cpu, None, 64)
                .unwrap()
                .is_empty()
        );
    }
}
