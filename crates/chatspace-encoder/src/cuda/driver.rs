//! The NVIDIA driver, as GPU error messages describe it: the kernel module's version from
//! `/proc/driver/nvidia/version`, and the CUDA version its user-space library `libcuda.so.1`
//! supports. The CUDA 13 build of ONNX Runtime needs a driver of the R580 branch or newer.

/// Where the NVIDIA kernel module reports its version.
pub const PROC_VERSION: &str = "/proc/driver/nvidia/version";

/// The oldest driver branch CUDA 13 runs on (CUDA 13.0 ships with R580).
pub const NEEDED_DRIVER: u32 = 580;

/// The CUDA version the runtime needs, as `cuDriverGetVersion` writes it (`1000 * major + 10 *
/// minor`): 13.0.
pub const NEEDED_CUDA: i32 = 13_000;

/// What is known about the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Driver {
    /// The kernel module's version (`580.65.06`), when `/proc/driver/nvidia/version` says.
    pub kernel: Option<String>,
    /// The CUDA version `libcuda.so.1` supports (`12020` for 12.2), when it loads.
    pub cuda: Option<i32>,
}

impl Driver {
    /// Reads both, for an error message (so only when something failed).
    pub fn read() -> Driver {
        Driver {
            kernel: std::fs::read_to_string(PROC_VERSION)
                .ok()
                .and_then(|t| kernel_version(&t)),
            cuda: super::probe::driver_cuda_version(),
        }
    }

    /// Whether the driver is known to be too old for CUDA 13.
    pub fn too_old(&self) -> bool {
        self.cuda.is_some_and(|v| v < NEEDED_CUDA)
            || (self.cuda.is_none() && self.kernel_major().is_some_and(|m| m < NEEDED_DRIVER))
    }

    fn kernel_major(&self) -> Option<u32> {
        self.kernel.as_deref()?.split('.').next()?.parse().ok()
    }

    /// One clause for a message: the driver's versions and what CUDA 13 needs.
    pub fn describe(&self) -> String {
        let kernel = match &self.kernel {
            Some(v) => format!("NVIDIA driver {v} (from {PROC_VERSION})"),
            None => format!("no NVIDIA kernel driver loaded ({PROC_VERSION} is missing)"),
        };
        let cuda = match self.cuda {
            Some(v) => format!(
                "; libcuda.so.1 supports CUDA {}.{}",
                v / 1000,
                (v % 1000) / 10
            ),
            None => String::new(),
        };
        let update = if self.too_old() {
            ": update the NVIDIA driver"
        } else {
            ""
        };
        format!("{kernel}{cuda}; CUDA 13 needs driver {NEEDED_DRIVER} or newer{update}")
    }
}

/// The version in the `NVRM version:` line of `/proc/driver/nvidia/version`: its first
/// word made of digits and dots (`NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  ...`).
pub fn kernel_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| {
            w.contains('.')
                && w.starts_with(|c: char| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_each_kind_of_proc_file() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 06:54:38 UTC 2025\nGCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n";
        let arm = "NVRM version: NVIDIA UNIX aarch64 Kernel Module  550.54.15  Tue Mar  5 22:15:33 UTC 2024\n";
        assert_eq!(kernel_version(proprietary).as_deref(), Some("535.104.05"));
        assert_eq!(kernel_version(open).as_deref(), Some("580.65.06"));
        assert_eq!(kernel_version(arm).as_deref(), Some("550.54.15"));
        assert_eq!(kernel_version("GCC version: 12.2.0\n"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn old_drivers_are_named_with_what_cuda_13_needs() {
        let old = Driver {
            kernel: Some("535.104.05".into()),
            cuda: Some(12_020),
        };
        assert!(old.too_old());
        assert_eq!(
            old.describe(),
            "NVIDIA driver 535.104.05 (from /proc/driver/nvidia/version); libcuda.so.1 \
             supports CUDA 12.2; CUDA 13 needs driver 580 or newer: update the NVIDIA driver"
        );
        // The kernel module alone decides only when libcuda says nothing (forward-compatible
        // user-space libraries can run CUDA 13 on an older module).
        let module_only = Driver {
            kernel: Some("570.86.15".into()),
            cuda: None,
        };
        assert!(module_only.too_old());
        let compat = Driver {
            kernel: Some("535.104.05".into()),
            cuda: Some(13_000),
        };
        assert!(!compat.too_old());
        let new = Driver {
            kernel: Some("580.159.03".into()),
            cuda: Some(13_000),
        };
        assert!(!new.too_old());
        let none = Driver::default();
        assert!(!none.too_old());
        assert_eq!(
            none.describe(),
            "no NVIDIA kernel driver loaded (/proc/driver/nvidia/version is missing); \
             CUDA 13 needs driver 580 or newer"
        );
    }
}
