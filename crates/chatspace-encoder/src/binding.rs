//! I/O binding: where a batch's inputs are staged and where the model's output lands.
//!
//! Every run goes through one ONNX Runtime [`IoBinding`], on every device, so the path CI runs on
//! CPU is the one a GPU runs. What differs is the memory:
//!
//! - **CPU**: inputs are ordinary host tensors and the output is bound to CPU memory; ONNX
//!   Runtime writes the output where the last kernel puts it and it is read in place.
//! - **CUDA** ([`Memory::Pinned`]): inputs are written straight into page-locked (pinned) host
//!   tensors from the session's `CudaPinned` allocator, so the copy to the GPU is one DMA with no
//!   staging through pageable memory; the output is bound to pinned host memory too, so ONNX
//!   Runtime copies it from the GPU once, into a buffer pooling reads in place. Without binding,
//!   the output is copied device → ONNX Runtime's pageable buffer, through the driver's own
//!   pinned staging.
//!
//! [`Memory::Pinned`] falls back to [`Memory::Host`] (with a warning) where the CUDA provider has
//! no pinned allocator; see `Model::load`.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor, TensorValueType};

/// Where a batch's tensors live on the host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Ordinary (pageable) host memory: the CPU provider's, or a fallback for CUDA.
    Host,
    /// Page-locked host memory of the CUDA provider for this GPU ordinal.
    Pinned(u32),
}

/// One session's binding: inputs and output bound per batch.
pub struct Binding {
    binding: IoBinding,
    /// Where the output is bound: re-bound before every run, since ONNX Runtime keeps the
    /// first run's output value bound (with its shape) otherwise.
    out_info: MemoryInfo<'static>,
    /// The pinned allocator inputs are made with ([`Memory::Pinned`] only).
    pinned: Option<Allocator>,
    memory: Memory,
}

impl Binding {
    /// A binding of `output` of `session` to `memory`; inputs are bound with [`Binding::bind`].
    pub fn new(session: &Session, output: &str, memory: Memory) -> ort::Result<Self> {
        let mut binding = session.create_binding()?;
        let (pinned, out_info) = match memory {
            Memory::Host => (None, MemoryInfo::default()),
            Memory::Pinned(k) => {
                let info = |kind| {
                    MemoryInfo::new(
                        AllocationDevice::CUDA_PINNED,
                        k as i32,
                        AllocatorType::Device,
                        kind,
                    )
                };
                let alloc = Allocator::new(session, info(MemoryType::CPUInput)?)?;
                (Some(alloc), info(MemoryType::CPUOutput)?)
            }
        };
        // Bound here too, so a provider that cannot place it fails at load.
        binding.bind_output_to_device(output, &out_info)?;
        Ok(Binding {
            binding,
            out_info,
            pinned,
            memory,
        })
    }

    /// Where this binding stages tensors.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// Binds input `name` to a `shape` tensor holding `data` converted to `T`.
    pub fn bind<T, F>(
        &mut self,
        name: &str,
        shape: [usize; 2],
        data: &[i64],
        convert: F,
    ) -> ort::Result<()>
    where
        T: PrimitiveTensorElementType + std::fmt::Debug + Copy + 'static,
        F: Fn(i64) -> T,
    {
        let tensor = match &self.pinned {
            None => {
                Tensor::from_array((shape, data.iter().map(|&x| convert(x)).collect::<Vec<T>>()))?
            }
            Some(alloc) => {
                let len = shape[0] * shape[1];
                if len != data.len() {
                    return Err(ort::Error::new(format!(
                        "input {name}: {} values for shape {shape:?}",
                        data.len()
                    )));
                }
                let mut t = Tensor::<T>::new(alloc, shape)?;
                let ptr = t.data_ptr_mut().cast::<T>();
                if len > 0 {
                    // SAFETY: `t` was just allocated by the CUDA provider's pinned allocator with
                    // `len` elements of `T`: page-locked host memory, which the CPU can write.
                    // (`ort`'s own accessors refuse it with ONNX Runtime >= 1.23, which reports
                    // pinned memory as a GPU device type; hence the raw pointer.) Nothing else
                    // holds `t` yet.
                    let out = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
                    for (o, &x) in out.iter_mut().zip(data) {
                        *o = convert(x);
                    }
                }
                t
            }
        };
        self.binding.bind_input(name, &tensor)
    }

    /// Runs the session on the bound inputs and takes the bound output out of the result.
    pub fn run(&mut self, session: &mut Session, output: &str) -> ort::Result<DynValue> {
        self.binding.bind_output_to_device(output, &self.out_info)?;
        let mut outputs = session.run_binding(&self.binding)?;
        if self.memory != Memory::Host {
            self.binding.synchronize_outputs()?;
        }
        outputs
            .remove(output)
            .ok_or_else(|| ort::Error::new(format!("the run returned no {output} output")))
    }
}

/// The shape and host-side elements of `value`, a tensor of `T` in host or pinned memory.
///
/// The slice borrows `value`'s buffer: no copy.
pub fn host_view<T>(value: &Tensor<T>) -> ort::Result<(Vec<i64>, &[T])>
where
    T: PrimitiveTensorElementType + std::fmt::Debug + 'static,
{
    let device = value.memory_info().allocation_device();
    if device != AllocationDevice::CPU && device != AllocationDevice::CUDA_PINNED {
        return Err(ort::Error::new(format!(
            "the output is in {} memory, which the CPU cannot read",
            device.as_str()
        )));
    }
    let shape: Vec<i64> = value.shape().iter().copied().collect();
    let len: usize = shape.iter().map(|&d| d.max(0) as usize).product();
    if len == 0 {
        return Ok((shape, &[]));
    }
    // SAFETY: the tensor holds `len` elements of `T` (its type is checked by the downcast that
    // made `value`, its shape gives `len`) in CPU or page-locked host memory, both readable by
    // the CPU once the run has synchronised its outputs; the slice lives no longer than `value`.
    let data = unsafe { std::slice::from_raw_parts(value.data_ptr().cast::<T>(), len) };
    Ok((shape, data))
}

/// Downcasts the run's output to a tensor of `T`.
pub fn typed<T>(value: DynValue) -> ort::Result<Tensor<T>>
where
    T: PrimitiveTensorElementType + std::fmt::Debug + 'static,
{
    value.downcast::<TensorValueType<T>>()
}
