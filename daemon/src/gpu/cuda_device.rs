//! CUDA device through cudarc: the driver and NVRTC are loaded at run time
//! (no toolkit at build time), and the kernels of `kernels/` are compiled by
//! NVRTC once at start for the GPU's own architecture. Work goes to one
//! stream in order; a readback waits for what was queued before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, DriverError, LaunchConfig,
    PushKernelArg,
};

use super::cuda_kernels::{tensor_len, KERNELS, MAX_BINDING};
use super::{check_grid, Compute, GpuError, Readback, Record, Result, Tensor};

/// Parameter words, passed by value; each kernel reads the leading words
/// as its own parameter struct.
#[repr(C)]
#[derive(Clone, Copy)]
struct Words([u32; 16]);

// SAFETY: plain old data, 16 u32 with C layout.
unsafe impl DeviceRepr for Words {}

/// A device buffer of 32-bit words that makes its context current on the
/// thread that frees it.
///
/// cudarc frees a `CudaSlice` (`cuMemFreeAsync`) on whichever thread drops
/// it without making the context current there first. Requests drop their
/// resident frames on any runtime thread; on one where the context had never
/// been current the free failed with `CUDA_ERROR_INVALID_CONTEXT`, the
/// memory leaked, and cudarc kept the error and returned it from the next
/// call on any thread, so a healthy device failed a batch and was retired
/// (seen on an H200 with 8 concurrent detect requests).
pub struct CudaBuf(CudaSlice<u32>);

impl Drop for CudaBuf {
    fn drop(&mut self) {
        // Runs before the slice's own drop frees it. Not `bind_to_thread`:
        // that first takes, and so would hide, an error kept from an
        // earlier call.
        // SAFETY: the slice holds its stream, which holds the context, so
        // the context is alive; making it current changes only this thread.
        let _ = unsafe { cudarc::driver::result::ctx::set_current(self.0.context().cu_ctx()) };
    }
}

fn dev_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Run(format!("CUDA: {e}"))
}

/// Why CUDA cannot be used here, or Ok. cudarc's dynamically loaded
/// bindings panic on first use when a library is missing, so this checks
/// for the libraries before anything calls them.
pub fn probe() -> std::result::Result<(), String> {
    // SAFETY: both only try to load the library and report whether it loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the NVIDIA driver library (libcuda) is not loadable".into());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "libnvrtc is not loadable (install the CUDA toolkit's NVRTC, or the PyPI \
             package nvidia-cuda-nvrtc, and put its lib/ on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err("the CUDA driver reports no device".into()),
        Err(e) => Err(format!("the CUDA driver reports no device: {e}")),
    }
}

/// Compile one kernel source to PTX for `arch` (e.g. `compute_90`).
pub fn compile(name: &str, src: &str, arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    cudarc::nvrtc::compile_ptx_with_opts(
        src,
        cudarc::nvrtc::CompileOptions {
            arch: Some(arch),
            name: Some(format!("{name}.cu")),
            ..Default::default()
        },
    )
    .map_err(|e| GpuError::Shader {
        name: name.into(),
        message: e.to_string(),
    })
}

/// Whether a failed call leaves the context unusable. Sticky errors (an
/// illegal address, a failed launch) poison it for the life of the
/// process. A request for more memory than is free, a bad argument or a
/// launch asking for too many resources do not: that one call failed and
/// the device serves on, so a burst of big frames must not hand every
/// later batch to the CPU.
fn poisons(e: &DriverError) -> bool {
    use cudarc::driver::sys::CUresult;
    !matches!(
        e.0,
        CUresult::CUDA_ERROR_OUT_OF_MEMORY
            | CUresult::CUDA_ERROR_INVALID_VALUE
            | CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    )
}

/// An open CUDA device with every kernel loaded.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, (CudaFunction, [u32; 3])>,
    name: String,
    capability: (i32, i32),
    memory: usize,
    /// A launch or copy failed: CUDA errors of that kind poison the context.
    broken: AtomicBool,
}

impl Cuda {
    pub fn open(ordinal: usize) -> Result<Arc<Self>> {
        probe().map_err(GpuError::NoCudaDevice)?;
        let ctx = CudaContext::new(ordinal).map_err(dev_err)?;
        let capability = ctx.compute_capability().map_err(dev_err)?;
        let arch: &'static str =
            Box::leak(format!("compute_{}{}", capability.0, capability.1).into_boxed_str());
        let mut funcs = HashMap::new();
        for &(name, src, block) in KERNELS {
            let module = ctx
                .load_module(compile(name, src, arch)?)
                .map_err(dev_err)?;
            let f = module.load_function(name).map_err(dev_err)?;
            funcs.insert(name, (f, block));
        }
        Ok(Arc::new(Self {
            name: ctx.name().map_err(dev_err)?,
            memory: ctx.total_mem().map_err(dev_err)?,
            stream: ctx.default_stream(),
            ctx,
            funcs,
            capability,
            broken: AtomicBool::new(false),
        }))
    }

    /// Err once a sticky error has retired the context.
    fn usable(&self) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(GpuError::Run(
                "an earlier CUDA error left the context unusable".into(),
            ));
        }
        Ok(())
    }

    fn failed(&self, e: DriverError) -> GpuError {
        if poisons(&e) {
            self.broken.store(true, Ordering::SeqCst);
        }
        dev_err(e)
    }
}

impl Compute for Cuda {
    type Buf = CudaBuf;
    type Rec<'a> = CudaRecorder<'a>;

    fn recorder(&self) -> CudaRecorder<'_> {
        CudaRecorder {
            dev: self,
            reads: Vec::new(),
        }
    }

    fn upload<T: bytemuck::Pod>(&self, _label: &str, data: &[T]) -> Result<CudaBuf> {
        // A retired device takes no new copies: requests then leave their
        // frames to the backend, which runs on the CPU after a take-over.
        self.usable()?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // Whole, aligned words (a frame, usually) go as they are; the rest
        // is copied into words first.
        if let Ok(words) = bytemuck::try_cast_slice::<u8, u32>(bytes) {
            if !words.is_empty() {
                return self
                    .stream
                    .clone_htod(words)
                    .map(CudaBuf)
                    .map_err(|e| self.failed(e));
            }
        }
        let mut words = vec![0u32; bytes.len().div_ceil(4).max(1)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        self.stream
            .clone_htod(&words)
            .map(CudaBuf)
            .map_err(|e| self.failed(e))
    }

    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<CudaBuf>> {
        self.usable()?;
        let len = tensor_len(shape)?;
        Ok(Tensor {
            buf: CudaBuf(
                self.stream
                    .alloc_zeros::<u32>(len.max(1))
                    .map_err(|e| self.failed(e))?,
            ),
            shape,
        })
    }

    fn max_binding(&self) -> u64 {
        MAX_BINDING
    }

    fn describe(&self) -> String {
        format!(
            "{} (CUDA, compute {}.{}, {} MiB)",
            self.name,
            self.capability.0,
            self.capability.1,
            self.memory >> 20
        )
    }
    fn health(&self) -> Result<()> {
        self.usable()?;
        self.ctx.bind_to_thread().map_err(dev_err)
    }
}

/// Launches queued on the device's stream; readbacks copy as they are asked for.
pub struct CudaRecorder<'a> {
    dev: &'a Cuda,
    reads: Vec<Vec<u8>>,
}

impl Record for CudaRecorder<'_> {
    type Buf = CudaBuf;

    fn dispatch(
        &mut self,
        name: &str,
        params: &[u32],
        bufs: &[&CudaBuf],
        groups: [u32; 3],
    ) -> Result<()> {
        let (f, block) = self.dev.funcs.get(name).ok_or_else(|| GpuError::Shader {
            name: name.into(),
            message: "no such kernel".into(),
        })?;
        check_grid(name, groups)?;
        if groups.contains(&0) {
            return Ok(());
        }
        let mut words = Words([0; 16]);
        if params.len() > words.0.len() {
            return Err(GpuError::Shape(format!(
                "{name}: {} parameter words",
                params.len()
            )));
        }
        words.0[..params.len()].copy_from_slice(params);
        let mut launch = self.dev.stream.launch_builder(f);
        launch.arg(&words);
        for b in bufs {
            launch.arg(&b.0);
        }
        let cfg = LaunchConfig {
            grid_dim: (groups[0], groups[1], groups[2]),
            block_dim: (block[0], block[1], block[2]),
            shared_mem_bytes: 0,
        };
        // SAFETY: the kernel's parameters are its parameter struct (read
        // from the leading words of `words`) and one device pointer per
        // buffer, in this order; ops.rs sizes every buffer for the grid.
        unsafe { launch.launch(cfg) }
            .map(|_| ())
            .map_err(|e| self.dev.failed(e))
    }

    fn size(&self, buf: &CudaBuf) -> u64 {
        (buf.0.len() * 4) as u64
    }

    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<CudaBuf>> {
        self.dev.tensor(shape)
    }

    fn read(&mut self, buf: &CudaBuf, len: u64) -> Result<Readback> {
        // Only the words asked for cross the bus.
        let count = (len.div_ceil(4) as usize).min(buf.0.len());
        let words = self
            .dev
            .stream
            .clone_dtoh(&buf.0.slice(..count))
            .map_err(|e| self.dev.failed(e))?;
        let mut bytes: Vec<u8> = bytemuck::cast_slice(&words).to_vec();
        bytes.truncate(len as usize);
        self.reads.push(bytes);
        Ok(Readback(self.reads.len() - 1))
    }

    fn finish(self) -> Result<Vec<Vec<u8>>> {
        self.dev
            .stream
            .synchronize()
            .map_err(|e| self.dev.failed(e))?;
        Ok(self.reads)
    }
}

/// The first CUDA device, shared by tests, or why there is none.
#[cfg(test)]
pub(crate) fn test_cuda() -> Option<Arc<Cuda>> {
    static DEV: std::sync::OnceLock<std::result::Result<Arc<Cuda>, String>> =
        std::sync::OnceLock::new();
    match DEV.get_or_init(|| Cuda::open(0).map_err(|e| e.to_string())) {
        Ok(d) => {
            eprintln!("cuda test on {}", d.describe());
            Some(d.clone())
        }
        Err(e) => {
            eprintln!("skipping cuda test: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer freed on a thread where the context was never current (a
    /// request's resident frame, dropped on any runtime thread) leaves the
    /// device healthy, and the next work on it runs.
    #[test]
    fn a_buffer_freed_on_a_fresh_thread_leaves_the_device_healthy() {
        let Some(dev) = test_cuda() else { return };
        let frame = dev.upload("frame", &vec![7u32; 1 << 18]).unwrap();
        std::thread::spawn(move || drop(frame)).join().unwrap();
        dev.health().unwrap();
        let next = dev.upload("next", &[1u32, 2, 3]).unwrap();
        let mut rec = dev.recorder();
        let back = rec.read(&next, 12).unwrap();
        let out = rec.finish().unwrap();
        assert_eq!(out[back.0], bytemuck::cast_slice::<u32, u8>(&[1, 2, 3]));
        dev.health().unwrap();
    }

    #[test]
    fn only_sticky_errors_retire_the_device() {
        use cudarc::driver::sys::CUresult;
        assert!(!poisons(&DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)));
        assert!(!poisons(&DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)));
        assert!(poisons(&DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS)));
        assert!(poisons(&DriverError(CUresult::CUDA_ERROR_LAUNCH_FAILED)));
    }

    /// Every kernel compiles with
    /// NVRTC for the H100/H200 architecture and exports its entry point. Needs
    /// libnvrtc but no GPU; without libnvrtc it says so and skips.
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        // SAFETY: only checks whether the library loads.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipping NVRTC compilation: libnvrtc is not loadable");
            return;
        }
        for &(name, src, _) in KERNELS {
            let ptx = compile(name, src, "compute_90").unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            assert!(
                text.contains(&format!(".entry {name}(")),
                "{name}: no entry point in the PTX"
            );
        }
    }
}
