//! A test device that runs the CUDA kernels of `kernels/` on the host CPU.
//!
//! Without a GPU the CUDA backend's kernels would only ever be compiled,
//! never run. Here the host C++ compiler builds those exact sources against
//! `cuda_host.hpp`, which supplies the few CUDA builtins they use
//! (`threadIdx`, `__shared__`, `__syncthreads`, ...), and this device
//! launches them as `cuda_device` does: the same block shapes, parameter
//! words and buffer order. So every parity test written with
//! `on_every_device!` also checks the CUDA kernels' indexing and arithmetic
//! against the CPU reference, and it catches what a GPU would not report:
//! - a read or write past the end of a buffer (each ends at a guard page, and
//!   the fault comes back as an error naming the block and thread);
//! - a tensor element left unwritten (new tensors are filled with NaN);
//! - parameter words or buffers that do not match the kernel's signature;
//! - a `__syncthreads` that only some threads of a block reach;
//! - a result that depends on the order blocks or threads run in (each
//!   launch runs in reverse order too, and the two must agree bit for bit).
//!
//! What it cannot check: timing, races that reversing the order does not
//! show (threads interleaved between barriers), and the CUDA driver itself.
//! Those need a GPU.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::cuda_kernels::{tensor_len, KERNELS, MAX_BINDING};
use super::{check_grid, Compute, GpuError, Readback, Record, Result, Tensor};

const RUNTIME: &str = include_str!("cuda_host.hpp");

type Launch = unsafe extern "C" fn(
    words: *const u32,
    nwords: u32,
    bufs: *const *mut u32,
    nbufs: u32,
    grid: *const u32,
    block: *const u32,
    reverse: u32,
    err: *mut u8,
    errlen: usize,
) -> i32;
type Alloc = unsafe extern "C" fn(words: usize) -> *mut u32;
type Free = unsafe extern "C" fn(p: *mut u32, words: usize);

/// Host memory standing in for a device buffer; it ends at a guard page.
pub struct HostBuf {
    ptr: *mut u32,
    len: usize,
    free: Free,
}

// SAFETY: the memory is owned by this value; kernels write it only through
// launches, which the recorder runs one at a time, as a GPU's stream would.
unsafe impl Send for HostBuf {}
// SAFETY: as above; shared buffers (weights) are only read.
unsafe impl Sync for HostBuf {}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by the runtime's `argus_host_alloc(len)`.
        unsafe { (self.free)(self.ptr, self.len) }
    }
}

impl HostBuf {
    fn words(&self) -> &[u32] {
        // SAFETY: `len` initialised words live at `ptr` while self does.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The kernels, built for the host and loaded.
pub struct CudaHost {
    launches: HashMap<&'static str, (Launch, [u32; 3])>,
    alloc: Alloc,
    free: Free,
    compiler: String,
}

/// The C++ source: the runtime, then each kernel in a namespace of its own
/// (their parameter structs share names) with a launcher named for it.
fn source() -> String {
    let mut s = String::from(RUNTIME);
    for &(name, src, _) in KERNELS {
        let barriers = src.contains("__syncthreads");
        let _ = write!(
            s,
            "\nnamespace k_{name} {{\n#line 1 \"kernels/{name}.cu\"\n{src}\n}}\n\
             extern \"C\" int argus_launch_{name}(const unsigned* words, unsigned nwords, \
             void* const* bufs, unsigned nbufs, const unsigned* grid, const unsigned* block, \
             unsigned reverse, char* err, size_t errlen) {{\n  return argus_host::launch(\"{name}\", \
             k_{name}::{name}, {barriers}, words, nwords, bufs, nbufs, grid, block, reverse, err, \
             errlen);\n}}\n"
        );
    }
    s
}

impl CudaHost {
    /// Compile the kernels with the host's C++ compiler (`$CXX`, else `c++`)
    /// and load them.
    pub fn open() -> Result<Arc<Self>> {
        let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        // Beside the test binary rather than in /tmp, which may be mounted noexec.
        let exe = std::env::current_exe().map_err(|e| GpuError::Device(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("argus-cuda-host-")
            .tempdir_in(exe.parent().unwrap_or(std::path::Path::new(".")))
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let src = dir.path().join("kernels.cpp");
        let lib = dir.path().join("libargus_kernels.so");
        std::fs::write(&src, source()).map_err(|e| GpuError::Device(e.to_string()))?;
        let out = std::process::Command::new(&compiler)
            .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-pthread"])
            .args(["-Wall", "-Wno-unknown-pragmas", "-Werror"])
            .arg("-o")
            .arg(&lib)
            .arg(&src)
            .output()
            .map_err(|e| {
                GpuError::NoCudaDevice(format!("no host C++ compiler `{compiler}`: {e}"))
            })?;
        if !out.status.success() {
            return Err(GpuError::Shader {
                name: "kernels/*.cu on the host".into(),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        // SAFETY: the library was just built from our own sources; loading
        // it runs no initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&lib) }
            .map_err(|e| GpuError::Device(e.to_string()))?;
        // Kept loaded for the life of the process: buffers and launchers
        // point into it.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let symbol = |name: &str| -> Result<*const ()> {
            // SAFETY: the symbol is looked up, not called, here.
            unsafe { lib.get::<*const ()>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| GpuError::Shader {
                    name: name.into(),
                    message: e.to_string(),
                })
        };
        let mut launches = HashMap::new();
        for &(name, _, block) in KERNELS {
            let f = symbol(&format!("argus_launch_{name}"))?;
            // SAFETY: generated by `source()` with exactly the `Launch` signature.
            launches.insert(
                name,
                (
                    unsafe { std::mem::transmute::<*const (), Launch>(f) },
                    block,
                ),
            );
        }
        // SAFETY: both are defined in cuda_host.hpp with these signatures.
        let (alloc, free) = unsafe {
            (
                std::mem::transmute::<*const (), Alloc>(symbol("argus_host_alloc")?),
                std::mem::transmute::<*const (), Free>(symbol("argus_host_free")?),
            )
        };
        Ok(Arc::new(Self {
            launches,
            alloc,
            free,
            compiler,
        }))
    }

    fn buffer(&self, words: usize, fill: u32) -> Result<HostBuf> {
        let len = words.max(1);
        // SAFETY: returns `len` writable words or null.
        let ptr = unsafe { (self.alloc)(len) };
        if ptr.is_null() {
            return Err(GpuError::Run(format!("cannot map {len} words")));
        }
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }.fill(fill);
        Ok(HostBuf {
            ptr,
            len,
            free: self.free,
        })
    }
}

/// A quiet NaN: what a new tensor holds until a kernel writes it, so an
/// element no kernel wrote shows up in a comparison.
const UNWRITTEN: u32 = 0x7fc0_0bad;

impl Compute for CudaHost {
    type Buf = HostBuf;
    type Rec<'a> = HostRecorder<'a>;

    fn recorder(&self) -> HostRecorder<'_> {
        HostRecorder {
            dev: self,
            reads: Vec::new(),
        }
    }

    fn upload<T: bytemuck::Pod>(&self, _label: &str, data: &[T]) -> Result<HostBuf> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.buffer(bytes.len().div_ceil(4), 0)?;
        // SAFETY: the buffer holds at least `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.ptr.cast::<u8>(), bytes.len()) };
        Ok(buf)
    }

    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<HostBuf>> {
        let len = tensor_len(shape)?;
        Ok(Tensor {
            buf: self.buffer(len, UNWRITTEN)?,
            shape,
        })
    }

    fn max_binding(&self) -> u64 {
        MAX_BINDING
    }

    fn describe(&self) -> String {
        format!(
            "CUDA kernels on the host CPU (built with {})",
            self.compiler
        )
    }

    fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// Runs each launch as it is recorded, in order, as one CUDA stream would.
pub struct HostRecorder<'a> {
    dev: &'a CudaHost,
    reads: Vec<Vec<u8>>,
}

impl Record for HostRecorder<'_> {
    type Buf = HostBuf;

    fn dispatch(
        &mut self,
        name: &str,
        params: &[u32],
        bufs: &[&HostBuf],
        groups: [u32; 3],
    ) -> Result<()> {
        let &(launch, block) = self
            .dev
            .launches
            .get(name)
            .ok_or_else(|| GpuError::Shader {
                name: name.into(),
                message: "no such kernel".into(),
            })?;
        check_grid(name, groups)?;
        if groups.contains(&0) {
            return Ok(());
        }
        let ptrs: Vec<*mut u32> = bufs.iter().map(|b| b.ptr).collect();
        let run = |reverse: bool| -> Result<()> {
            let mut err = [0u8; 512];
            // SAFETY: the launcher checks the word and buffer counts against
            // the kernel's signature before it runs; the buffers live until
            // this returns, and faults inside the kernel come back as an error.
            let rc = unsafe {
                launch(
                    params.as_ptr(),
                    params.len() as u32,
                    ptrs.as_ptr(),
                    ptrs.len() as u32,
                    groups.as_ptr(),
                    block.as_ptr(),
                    reverse as u32,
                    err.as_mut_ptr(),
                    err.len(),
                )
            };
            if rc != 0 {
                let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
                return Err(GpuError::Run(
                    String::from_utf8_lossy(&err[..end]).into_owned(),
                ));
            }
            Ok(())
        };
        // A GPU runs blocks, and warps within a block, in no set order. So
        // each launch runs twice from the same inputs, last block and thread
        // first, then in order: a result that differs between the two is a
        // race (a block reading what another writes, a missing barrier, a
        // shared tile read before it is written) that a GPU could expose.
        let snapshot = || -> Vec<Vec<u32>> { bufs.iter().map(|b| b.words().to_vec()).collect() };
        let before = snapshot();
        run(true)?;
        let reversed = snapshot();
        for (b, w) in bufs.iter().zip(&before) {
            // SAFETY: `w` is a copy of this very buffer, so of its length;
            // no launch is running.
            unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), b.ptr, b.len) };
        }
        drop(before);
        run(false)?;
        for (k, (b, r)) in bufs.iter().zip(&reversed).enumerate() {
            if let Some(i) = b.words().iter().zip(r).position(|(a, r)| a != r) {
                return Err(GpuError::Run(format!(
                    "{name}: the result depends on the order blocks and threads run in \
                     (buffer {k}, word {i}: {:#010x} in order, {:#010x} in reverse), \
                     a race on a GPU",
                    b.words()[i],
                    r[i]
                )));
            }
        }
        Ok(())
    }

    fn size(&self, buf: &HostBuf) -> u64 {
        (buf.len * 4) as u64
    }

    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<HostBuf>> {
        self.dev.tensor(shape)
    }

    fn read(&mut self, buf: &HostBuf, len: u64) -> Result<Readback> {
        let count = (len.div_ceil(4) as usize).min(buf.len);
        let mut bytes: Vec<u8> = bytemuck::cast_slice(&buf.words()[..count]).to_vec();
        bytes.truncate(len as usize);
        self.reads.push(bytes);
        Ok(Readback(self.reads.len() - 1))
    }

    fn finish(self) -> Result<Vec<Vec<u8>>> {
        Ok(self.reads)
    }
}

/// The kernels built for the host, shared by tests, or why they cannot be.
/// `ARGUS_TEST_SKIP_CUDA_HOST=1` leaves the host run out: on a machine with
/// a real GPU and a short lease, CI has already run it, and it is the slow
/// part of the whole-net tests.
pub(crate) fn test_cuda_host() -> Option<Arc<CudaHost>> {
    if std::env::var_os("ARGUS_TEST_SKIP_CUDA_HOST").is_some_and(|v| v == "1") {
        eprintln!("skipping the host run of the cuda kernels: ARGUS_TEST_SKIP_CUDA_HOST=1");
        return None;
    }
    static DEV: std::sync::OnceLock<std::result::Result<Arc<CudaHost>, String>> =
        std::sync::OnceLock::new();
    match DEV.get_or_init(|| CudaHost::open().map_err(|e| e.to_string())) {
        Ok(d) => {
            eprintln!("cuda kernels test on {}", d.describe());
            Some(d.clone())
        }
        // A compiler that rejects the kernels is a failure, not a skip.
        Err(e) if !e.contains("no host C++ compiler") => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping the host run of the cuda kernels: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{f32s, grid_1d};

    fn dev() -> Option<Arc<CudaHost>> {
        test_cuda_host()
    }

    #[test]
    fn a_kernel_runs_and_its_results_come_back() {
        let Some(d) = dev() else { return };
        let x = d
            .tensor_from([1, 2, 1, 3], &[0.0, 1.0, -1.0, 2.0, 0.5, -3.0])
            .unwrap();
        let mut r = d.recorder();
        // sigmoid of channel 1 only, in place.
        r.dispatch("sigmoid", &[1, 2, 3, 1, 1, 0, 0, 0], &[&x.buf], grid_1d(3))
            .unwrap();
        let back = r.read(&x.buf, 24).unwrap();
        let out = f32s(&r.finish().unwrap()[back.0]);
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        assert_eq!(&out[..3], &[0.0, 1.0, -1.0]);
        for (o, v) in out[3..].iter().zip([2.0, 0.5, -3.0]) {
            assert!((o - s(v)).abs() < 1e-6, "{o} vs {}", s(v));
        }
    }

    #[test]
    fn a_read_past_the_end_of_a_buffer_is_an_error_naming_the_thread() {
        let Some(d) = dev() else { return };
        // maxpool over a 4x4 plane told it is 8x8 reads far past the input.
        let x = d.tensor_from([1, 1, 4, 4], &[1.0; 16]).unwrap();
        let y = d.tensor([1, 1, 4, 4]).unwrap();
        let mut r = d.recorder();
        let e = r
            .dispatch("maxpool2x2", &[8, 8, 4, 4], &[&x.buf, &y.buf], [1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("maxpool2x2") && e.contains("outside its buffers"),
            "{e}"
        );
        // The device is still usable afterwards.
        let mut r = d.recorder();
        r.dispatch("maxpool2x2", &[4, 4, 2, 2], &[&x.buf, &y.buf], [1, 1, 1])
            .unwrap();
        let back = r.read(&y.buf, 16).unwrap();
        assert_eq!(f32s(&r.finish().unwrap()[back.0]), vec![1.0; 4]);
    }

    #[test]
    fn launches_that_do_not_match_the_kernel_are_refused() {
        let Some(d) = dev() else { return };
        let x = d.tensor([1, 1, 4, 4]).unwrap();
        let mut r = d.recorder();
        let words = r
            .dispatch("maxpool2x2", &[4, 4, 2], &[&x.buf, &x.buf], [1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(
            words.contains("given 3 parameter words, its struct has 4"),
            "{words}"
        );
        let bufs = r
            .dispatch("maxpool2x2", &[4, 4, 2, 2], &[&x.buf], [1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(bufs.contains("given 1 buffers, it takes 2"), "{bufs}");
        assert!(r.dispatch("nope", &[], &[], [1, 1, 1]).is_err());
    }

    #[test]
    fn a_result_that_depends_on_the_run_order_is_an_error() {
        let Some(d) = dev() else { return };
        // A box blur along rows, in place: each thread reads neighbours
        // that other threads overwrite, so the answer depends on who runs
        // first. The same blur into a buffer of its own is fine.
        let (w, h, radius) = (40u32, 3u32, 2u32);
        let n = (w * h * 3) as usize;
        let img = d.upload("img", &vec![0u8; n]).unwrap();
        let src: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32).collect();
        let a = d.upload("a", &src).unwrap();
        let b = d.upload("b", &vec![0f32; n]).unwrap();
        let p = [w, 0, 0, w, h, radius, 1, 0];
        let grid = [(n as u32).div_ceil(256), 1, 1];
        let mut r = d.recorder();
        r.dispatch("mask_box_blur", &p, &[&img, &a, &b], grid)
            .unwrap();
        let e = r
            .dispatch("mask_box_blur", &p, &[&img, &a, &a], grid)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mask_box_blur: the result depends on the order"),
            "{e}"
        );
    }

    #[test]
    fn shared_memory_and_barriers_work_across_a_block() {
        let Some(d) = dev() else { return };
        // conv1x1 stages tiles in shared memory between two barriers: with
        // cin = 40 it takes three 16-deep tiles, the last one partial.
        let (cin, cout, hw) = (40usize, 70usize, 130usize);
        let x: Vec<f32> = (0..cin * hw).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..cout * cin)
            .map(|i| ((i * 5) % 11) as f32 * 0.1)
            .collect();
        let b: Vec<f32> = (0..cout).map(|i| i as f32).collect();
        let xt = d.tensor_from([1, cin, 1, hw], &x).unwrap();
        let wb = d.upload("w", &w).unwrap();
        let bb = d.upload("b", &b).unwrap();
        let y = d.tensor([1, cout, 1, hw]).unwrap();
        let mut r = d.recorder();
        let p = [1, cin, cout, hw, 0, 0, 0, 0].map(|v| v as u32);
        let grid = [hw.div_ceil(64) as u32, cout.div_ceil(64) as u32, 1];
        r.dispatch("conv1x1", &p, &[&xt.buf, &wb, &bb, &y.buf, &y.buf], grid)
            .unwrap();
        let back = r.read(&y.buf, (cout * hw * 4) as u64).unwrap();
        let out = f32s(&r.finish().unwrap()[back.0]);
        for co in 0..cout {
            for px in 0..hw {
                let want: f32 = b[co]
                    + (0..cin)
                        .map(|ci| w[co * cin + ci] * x[ci * hw + px])
                        .sum::<f32>();
                let got = out[co * hw + px];
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "{co},{px}: {got} vs {want}"
                );
            }
        }
    }
}
