//! The classification, on messages ONNX Runtime 1.31.1 gives. The first two were produced on a
//! machine without a GPU: the encoder with `--device cuda:0` and the onnxruntime-gpu 1.31.1
//! wheel, without `libcuda.so.1`, and then with Debian's `libcuda1` 535.261.03 (a driver that
//! supports CUDA 12.2) on the loader path. The others follow the formats in ONNX Runtime's
//! source (`cuda_call.cc`, `bfc_arena.cc`), with real CUDA texts.

use super::*;

const NO_LIBCUDA: &str = "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 \
    onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : \
    Failed to load library /work/wt18/.onnxruntime-gpu/libonnxruntime_providers_cuda.so with \
    error: libcuda.so.1: cannot open shared object file: No such file or directory\n";

const DRIVER_535: &str = "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc:63 \
    static onnxruntime::CUDAExecutionProviderInfo onnxruntime::CUDAExecutionProviderInfo::FromProviderOptions(const onnxruntime::ProviderOptions&) \
    [ONNXRuntimeError] : 1 : FAIL : provider_options_utils.h:187 Parse Failed to parse provider option \"device_id\": \
    CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=-1 ; hostname=vm ; \
    file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc ; line=70 ; \
    expr=cudaGetDeviceCount(&num_devices); \n";

fn cause(msg: &str) -> Option<Cause> {
    classify(msg).map(|f| f.cause)
}

#[test]
fn a_missing_driver_library_is_no_driver() {
    let f = classify(NO_LIBCUDA).unwrap();
    assert_eq!(f.cause, Cause::NoDriver);
    assert!(
        f.detail.starts_with(
            "Failed to load library /work/wt18/.onnxruntime-gpu/libonnxruntime_providers_cuda.so"
        ),
        "{}",
        f.detail
    );
    let cudnn = "Failed to load library libonnxruntime_providers_cuda.so with error: \
                 libcudnn.so.9: cannot open shared object file: No such file or directory";
    assert_eq!(
        cause(cudnn),
        Some(Cause::MissingLibrary("libcudnn.so.9".into()))
    );
}

#[test]
fn an_old_driver_is_driver_too_old() {
    let f = classify(DRIVER_535).unwrap();
    assert_eq!(f.cause, Cause::DriverTooOld);
    assert!(
        f.detail
            .starts_with("CUDA failure 35: CUDA driver version is insufficient"),
        "{}",
        f.detail
    );
    let mismatch = "CUDA failure 803: system has unsupported display driver / cuda driver \
                    combination ; GPU=0 ; hostname=n1 ; file=f ; line=1 ; expr=cudaSetDevice(0);";
    assert_eq!(cause(mismatch), Some(Cause::DriverTooOld));
    let stub = "CUDA failure 34: CUDA driver is a stub library ; GPU=-1 ; hostname=n1 ; file=f ; \
                line=70 ; expr=cudaGetDeviceCount(&num_devices);";
    assert_eq!(cause(stub), Some(Cause::NoDriver));
}

#[test]
fn no_gpu_is_no_device() {
    let none = "CUDA failure 100: no CUDA-capable device is detected ; GPU=-1 ; hostname=n1 ; \
                file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc ; \
                line=70 ; expr=cudaGetDeviceCount(&num_devices);";
    assert_eq!(cause(none), Some(Cause::NoDevice));
    let busy = "CUDA failure 46: CUDA-capable device(s) is/are busy or unavailable ; GPU=0 ; \
                hostname=n1 ; file=f ; line=1 ; expr=cudaSetDevice(info_.device_id);";
    assert_eq!(cause(busy), Some(Cause::NoDevice));
}

#[test]
fn out_of_memory_in_every_form() {
    let arena = "Non-zero status code returned while running MatMul node. \
                 Name:'/encoder/layer.0/attention/self/MatMul' Status Message: \
                 /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 void* \
                 onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, \
                 onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 17179869184\n";
    let limit = "Non-zero status code returned while running Softmax node. Name:'Softmax_12' \
                 Status Message: Available memory of 34699008 is smaller than requested bytes of 945041920";
    let malloc = "CUDA failure 2: out of memory ; GPU=0 ; hostname=n1 ; \
                  file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; line=49 ; \
                  expr=cudaMalloc((void**)&p, size);";
    let cublas = "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; hostname=n1 ; \
                  file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_stream_handle.cc ; \
                  line=40 ; expr=cublasCreate(&cublas_handle_);";
    for msg in [arena, limit, malloc, cublas] {
        assert_eq!(cause(msg), Some(Cause::OutOfMemory), "{msg}");
        assert!(is_out_of_memory(msg), "{msg}");
    }
    assert!(
        classify(arena)
            .unwrap()
            .detail
            .starts_with("Failed to allocate memory")
    );
    assert!(!is_out_of_memory(DRIVER_535));
}

#[test]
fn other_library_failures_keep_their_library_and_code() {
    let cudnn = "CUDNN failure 1001: CUDNN_STATUS_NOT_INITIALIZED ; GPU=0 ; hostname=n1 ; \
                 file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_stream_handle.cc ; \
                 line=45 ; expr=cudnnCreate(&cudnn_handle_);";
    assert_eq!(cause(cudnn), Some(Cause::Library("CUDNN".into(), 1001)));
    assert_eq!(
        Cause::Library("CUDNN".into(), 1001).summary(),
        "CUDNN error 1001"
    );
    let unknown =
        "CUDA failure 999: unknown error ; GPU=0 ; hostname=n1 ; file=f ; line=1 ; expr=x;";
    assert_eq!(cause(unknown), Some(Cause::Library("CUDA".into(), 999)));
}

#[test]
fn model_errors_are_not_gpu_failures() {
    for msg in [
        "Load model from /m/model.onnx failed:Protobuf parsing failed.",
        "Non-zero status code returned while running Gather node. Name:'/embeddings/Gather' \
         Status Message: indices element out of data bounds, idx=30522 must be within the \
         inclusive range [-30522,30521]",
        "Got invalid dimensions for input: input_ids for the following indices",
        "the CUDAExecutionProvider failed",
    ] {
        assert_eq!(classify(msg), None, "{msg}");
        assert!(!is_out_of_memory(msg), "{msg}");
    }
}
