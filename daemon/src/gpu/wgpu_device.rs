//! wgpu device: adapter choice, the WGSL pipelines of `shaders/`, storage
//! buffers, and the recording of dispatches into one command buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Compute, GpuError, Readback, Record, Result, Tensor};

/// Every shader of `shaders/`, by file stem; each has one entry point, `main`.
pub const SHADERS: &[(&str, &str)] = &[
    ("conv2d", include_str!("../../../shaders/conv2d.wgsl")),
    ("depthwise", include_str!("../../../shaders/depthwise.wgsl")),
    ("conv1x1", include_str!("../../../shaders/conv1x1.wgsl")),
    (
        "conv_transpose2x2",
        include_str!("../../../shaders/conv_transpose2x2.wgsl"),
    ),
    (
        "maxpool2x2",
        include_str!("../../../shaders/maxpool2x2.wgsl"),
    ),
    ("maxpool", include_str!("../../../shaders/maxpool.wgsl")),
    (
        "crop_concat",
        include_str!("../../../shaders/crop_concat.wgsl"),
    ),
    ("sigmoid", include_str!("../../../shaders/sigmoid.wgsl")),
    ("prelu", include_str!("../../../shaders/prelu.wgsl")),
    (
        "global_avg_pool",
        include_str!("../../../shaders/global_avg_pool.wgsl"),
    ),
    ("linear", include_str!("../../../shaders/linear.wgsl")),
    ("softmax", include_str!("../../../shaders/softmax.wgsl")),
    ("letterbox", include_str!("../../../shaders/letterbox.wgsl")),
    ("mask_fill", include_str!("../../../shaders/mask_fill.wgsl")),
    (
        "mask_pixelate",
        include_str!("../../../shaders/mask_pixelate.wgsl"),
    ),
    (
        "mask_box_blur",
        include_str!("../../../shaders/mask_box_blur.wgsl"),
    ),
    ("mask_put", include_str!("../../../shaders/mask_put.wgsl")),
    ("jpeg_dct", include_str!("../../../shaders/jpeg_dct.wgsl")),
    (
        "jpeg_huffman",
        include_str!("../../../shaders/jpeg_huffman.wgsl"),
    ),
    ("jpeg_pack", include_str!("../../../shaders/jpeg_pack.wgsl")),
];

/// Whether an adapter is real hardware. `auto` never picks a software
/// rasteriser (llvmpipe/lavapipe, WARP): the CPU backend is faster there.
pub fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    )
}

pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
    .replace(" )", ")")
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Every adapter the system offers, best first: discrete, integrated,
/// virtual, then software.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let inst = instance();
    let mut all = pollster::block_on(inst.enumerate_adapters(inst_backends()));
    all.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    });
    all
}

fn inst_backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

/// Which adapters `open` may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Hardware only (`backend = "auto"`).
    Hardware,
    /// Hardware if there is any, else a software adapter (`backend = "wgpu"`).
    AnyPreferHardware,
    /// Software only: tests that must run the same on every machine.
    Software,
}

/// An open device with every pipeline built.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Largest storage buffer one binding may cover.
    pub max_binding: u64,
    pipelines: HashMap<&'static str, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
    /// Set when the device is lost; every later use fails and /health says so.
    lost: Arc<AtomicBool>,
}

impl Gpu {
    /// Open the first adapter `policy` allows and build every pipeline.
    pub fn open(policy: AdapterPolicy) -> Result<Arc<Self>> {
        let all = adapters();
        let mut skipped = Vec::new();
        for a in all {
            let info = a.get_info();
            let ok = match policy {
                AdapterPolicy::Hardware => is_hardware(&info),
                AdapterPolicy::AnyPreferHardware => true,
                AdapterPolicy::Software => info.device_type == wgpu::DeviceType::Cpu,
            };
            if !ok {
                skipped.push(format!("{} skipped: software adapter", describe(&info)));
                continue;
            }
            return Self::with_adapter(a).map(Arc::new);
        }
        Err(GpuError::NoAdapter(if skipped.is_empty() {
            "the system reports no Vulkan, Metal or DX12 adapter".into()
        } else {
            skipped.join("; ")
        }))
    }

    fn with_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let al = adapter.limits();
        // Ask for the largest buffers and workgroup storage the adapter has:
        // batches of full-size activations go far beyond WebGPU's defaults.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: al.max_storage_buffer_binding_size,
            max_buffer_size: al.max_buffer_size,
            max_storage_buffers_per_shader_stage: al.max_storage_buffers_per_shader_stage.min(8),
            max_compute_workgroup_storage_size: al.max_compute_workgroup_storage_size,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("argus"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let lost = Arc::new(AtomicBool::new(false));
        {
            // Work is recorded inside error scopes (see `Recorder`), so an
            // error reaching this handler is a bug to log, not a reason to
            // take the device out of service (the default handler panics).
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                tracing::error!(error = %e, "wgpu error outside any scope");
            }));
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                tracing::error!(?reason, msg, "wgpu device lost");
                lost.store(true, Ordering::SeqCst);
            });
        }
        let mut pipelines = HashMap::new();
        for &(name, src) in SHADERS {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(GpuError::Shader {
                    name: name.into(),
                    message: e.to_string(),
                });
            }
            let layout = pipeline.get_bind_group_layout(0);
            pipelines.insert(name, (pipeline, layout));
        }
        Ok(Self {
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            device,
            queue,
            info,
            pipelines,
            lost,
        })
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// A buffer holding `contents` (whole words), written through the queue:
    /// unlike `create_buffer_init`, which panics when the device is gone,
    /// this leaves a failure to the error scopes.
    fn buffer_with(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len() as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, contents);
        buf
    }

    /// Destroy the device as a driver reset would, for the tests of what
    /// happens next.
    #[cfg(test)]
    pub(crate) fn destroy(&self) {
        self.device.destroy();
        let _ = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        });
    }
}

impl Compute for Gpu {
    type Buf = wgpu::Buffer;
    type Rec<'a> = Recorder<'a>;

    /// A storage buffer holding `data`.
    fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // Bindings must cover at least four bytes, and copies move whole words.
        let mut padded;
        let contents = if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
            padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4).max(4), 0);
            &padded[..]
        } else {
            bytes
        };
        if self.lost.load(Ordering::SeqCst) {
            return Err(GpuError::Run("the device was lost".into()));
        }
        Ok(self.buffer_with(
            label,
            contents,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        ))
    }

    /// An uninitialised tensor of `shape` (NCHW).
    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<wgpu::Buffer>> {
        let bytes = (shape.iter().product::<usize>() * 4).max(4) as u64;
        if bytes > self.max_binding {
            return Err(GpuError::Shape(format!(
                "a {shape:?} tensor needs {bytes} bytes; the adapter binds at most {}",
                self.max_binding
            )));
        }
        Ok(Tensor {
            buf: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            shape,
        })
    }

    /// Start recording. Errors of everything done on this thread until
    /// `finish` (buffer creation included) are caught and returned there.
    fn recorder(&self) -> Recorder<'_> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        Recorder {
            scopes: Some((oom, validation)),
            gpu: self,
            enc: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
            readbacks: Vec::new(),
        }
    }

    fn max_binding(&self) -> u64 {
        self.max_binding
    }

    fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Ok while the device is usable.
    fn health(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(GpuError::Run("the device was lost".into()));
        }
        Ok(())
    }
}

/// Dispatches recorded into one command buffer.
pub struct Recorder<'a> {
    /// (out-of-memory, validation): popped innermost first, on drop too.
    scopes: Option<(wgpu::ErrorScopeGuard, wgpu::ErrorScopeGuard)>,
    gpu: &'a Gpu,
    enc: wgpu::CommandEncoder,
    /// Staging buffers and the bytes asked for (the copy moves whole words).
    readbacks: Vec<(wgpu::Buffer, u64)>,
}

impl<'a> Record for Recorder<'a> {
    type Buf = wgpu::Buffer;

    fn size(&self, buf: &wgpu::Buffer) -> u64 {
        buf.size()
    }

    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<wgpu::Buffer>> {
        self.gpu.tensor(shape)
    }

    /// Record one dispatch of `shader`: binding 0 gets `params` as a
    /// uniform (u32 words; f32 goes in as its bits), bindings 1.. `bufs`.
    fn dispatch(
        &mut self,
        shader: &str,
        params: &[u32],
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let (pipeline, layout) =
            self.gpu
                .pipelines
                .get(shader)
                .ok_or_else(|| GpuError::Shader {
                    name: shader.into(),
                    message: "no such pipeline".into(),
                })?;
        super::check_grid(shader, groups)?;
        if groups.contains(&0) {
            return Ok(());
        }
        let mut words = params.to_vec();
        words.resize(params.len().next_multiple_of(4).max(4), 0);
        let uniform = self.gpu.buffer_with(
            shader,
            bytemuck::cast_slice(&words),
            wgpu::BufferUsages::UNIFORM,
        );
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in bufs.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(shader),
                layout,
                entries: &entries,
            });
        let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(shader),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    /// Copy the first `len` bytes of `buf` back to the host at `finish`.
    fn read(&mut self, buf: &wgpu::Buffer, len: u64) -> Result<Readback> {
        let words = len.next_multiple_of(4).max(4);
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: words,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.enc.copy_buffer_to_buffer(buf, 0, &staging, 0, words);
        self.readbacks.push((staging, len));
        Ok(Readback(self.readbacks.len() - 1))
    }

    /// Submit, wait for the device, and return every requested readback's bytes.
    fn finish(mut self) -> Result<Vec<Vec<u8>>> {
        if self.gpu.lost.load(Ordering::SeqCst) {
            return Err(GpuError::Run("the device was lost".into()));
        }
        let (oom, scope) = self.scopes.take().expect("scopes are taken once");
        let Recorder {
            gpu,
            enc,
            readbacks,
            ..
        } = self;
        let index = gpu.queue.submit([enc.finish()]);
        let mut results = Vec::with_capacity(readbacks.len());
        let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        for (staging, _) in &readbacks {
            let failed = failed.clone();
            staging.map_async(wgpu::MapMode::Read, .., move |r| {
                if let Err(e) = r {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            });
        }
        let polled = gpu.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(std::time::Duration::from_secs(120)),
        });
        // Both scopes are popped, innermost first, before any early return:
        // wgpu panics on scopes popped out of order.
        let oom = pollster::block_on(oom.pop());
        let invalid = pollster::block_on(scope.pop());
        polled.map_err(|e| GpuError::Run(e.to_string()))?;
        if let Some(e) = oom {
            return Err(GpuError::Run(format!("out of device memory: {e}")));
        }
        if let Some(e) = invalid {
            return Err(GpuError::Run(e.to_string()));
        }
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(GpuError::Run(format!("reading back: {e}")));
        }
        for (staging, len) in readbacks {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Run(format!("reading back: {e}")))?;
            results.push(view[..len as usize].to_vec());
            drop(view);
            staging.unmap();
        }
        Ok(results)
    }
}

/// The open software adapter tests share, or why there is none.
#[cfg(test)]
pub(crate) fn test_gpu() -> Option<Arc<Gpu>> {
    static GPU: std::sync::OnceLock<std::result::Result<Arc<Gpu>, String>> =
        std::sync::OnceLock::new();
    match GPU.get_or_init(|| {
        // Lavapipe is the same everywhere; a hardware adapter is taken only
        // when no software one exists.
        Gpu::open(AdapterPolicy::Software)
            .or_else(|_| Gpu::open(AdapterPolicy::AnyPreferHardware))
            .map_err(|e| e.to_string())
    }) {
        Ok(g) => {
            eprintln!("wgpu test on {}", g.describe());
            Some(g.clone())
        }
        Err(e) => {
            eprintln!("skipping wgpu test: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{f32s, ops};

    /// Every file in `shaders/` is built into the daemon, parses, and
    /// passes naga's validation, with no device needed.
    #[test]
    fn every_shader_validates_with_naga() {
        let on_disk = crate::gpu::stems_in("shaders", "wgsl");
        let mut built: Vec<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
        built.sort();
        assert_eq!(on_disk, built, "shaders/ and gpu::SHADERS differ");
        for (name, src) in SHADERS {
            let module = naga::front::wgsl::parse_str(src)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(
                module.entry_points.iter().any(|e| e.name == "main"),
                "{name}: no `main` entry point"
            );
        }
    }

    /// Bad shapes and oversized tensors come back as errors, a recording
    /// abandoned half-way leaves the device usable, and the next one runs.
    #[test]
    fn errors_are_values_and_the_device_stays_usable() {
        let Some(gpu) = test_gpu() else { return };
        let huge = (gpu.max_binding / 4 + 1) as usize;
        assert!(matches!(
            gpu.tensor([1, 1, 1, huge]),
            Err(GpuError::Shape(_))
        ));
        {
            let mut r = gpu.recorder();
            let x = gpu.tensor_from([1, 2, 2, 2], &[1.0; 8]).unwrap();
            let conv = ops::Conv::new(&*gpu, &[1.0; 27], &[0.0], 1, 3, 3).unwrap();
            assert!(ops::conv2d(&mut r, &x, &conv, 1, 1, false).is_err());
            assert!(r.dispatch("no_such_shader", &[], &[], [1, 1, 1]).is_err());
        }
        let mut r = gpu.recorder();
        let x = gpu
            .tensor_from([1, 1, 2, 2], &[-1.0, 0.0, 1.0, 2.0])
            .unwrap();
        ops::sigmoid(&mut r, &x, 0, 1).unwrap();
        let rb = r.read(&x.buf, 16).unwrap();
        let got = f32s(&r.finish().unwrap()[rb.0]);
        let want = [-1.0f32, 0.0, 1.0, 2.0].map(|v| 1.0 / (1.0 + (-v).exp()));
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        assert!(gpu.health().is_ok());
    }
}
