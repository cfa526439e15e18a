//! The skin nets on every device against the original runtimes' goldens
//! and the CPU nets, and the footprints batches split by.

use super::*;
use crate::gpu::{on_every_device, Readback};
use crate::model::age::AgeNet;
use crate::model::face_mesh::tests::weights_and_golden;
use crate::model::face_mesh::FaceMesh;
use crate::model::iris::IrisNet;
use candle_core::Device;

/// The golden crop (HWC u8) and its mirror image: two different faces
/// or eyes for the nets, so a batch's rows are told apart.
fn crop_and_mirror(
    golden: &std::collections::HashMap<String, candle_core::Tensor>,
) -> [Vec<u8>; 2] {
    let image = golden["image"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let side = golden["image"].dims()[0];
    let mirror = image
        .chunks_exact(3 * side)
        .flat_map(|row| {
            row.chunks_exact(3)
                .rev()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    [image, mirror]
}

fn max_diff(a: &[[f32; 3]], b: &[f32]) -> f32 {
    assert_eq!(a.len() * 3, b.len());
    a.iter()
        .flatten()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Tolerances as the CPU nets' own tests against the original runtimes
/// (1e-3 px; 1e-3 years): f32 in another summation order, while any
/// graph error (a pad on the wrong side, a missing shortcut) moves the
/// points by pixels.
#[test]
fn face_mesh_matches_tflite_and_the_cpu_net() {
    on_every_device!(face_mesh_on);
}

fn face_mesh_on<D: Compute>(gpu: &D) {
    let (vb, golden) = weights_and_golden("face_mesh");
    let cpu = FaceMesh::load(vb.clone()).unwrap();
    let dev = GpuFaceMesh::load(gpu, vb).unwrap();
    let crops = crop_and_mirror(&golden);
    // A grey crop, no face, joins the batch: the faces' presence logits
    // (~24) saturate the sigmoid, so the logits themselves are compared.
    let grey = vec![128u8; crops[0].len()];
    let refs = [&crops[0][..], &crops[1][..], &grey[..]];
    let rows = dev
        .0
        .rows(gpu, &refs, face_mesh::input_from_rgb8, MESH)
        .unwrap();
    assert_eq!(rows.len(), 3);
    let d = max_diff(&triples(&rows[0][0]), &flat(&golden["landmarks"]));
    let golden_logit = flat(&golden["face_flag_logit"])[0];
    println!("face mesh ({}): {d:.3e} px from TFLite", gpu.describe());
    assert!(d < 1e-3, "landmarks {d} px from TFLite");
    assert!((rows[0][1][0] - golden_logit).abs() < 1e-3);
    let want = cpu
        .forward(&face_mesh::input_from_rgb8(&refs, &Device::Cpu).unwrap())
        .unwrap();
    let (lm, logits) = (flat(&want.landmarks), flat(&want.presence_logit));
    println!("presence logits {logits:?}");
    let per = 3 * face_mesh::NUM_LANDMARKS;
    for (i, [mesh, logit]) in rows.iter().enumerate() {
        let d = max_diff(&triples(mesh), &lm[i * per..][..per]);
        assert!(d < 1e-3, "crop {i}: {d} px from the CPU net");
        let dl = (logit[0] - logits[i]).abs();
        assert!(
            dl < 1e-3,
            "crop {i}: logit {} against {}",
            logit[0],
            logits[i]
        );
    }
    // `run` gives the same rows, the logit through the sigmoid.
    let got = dev.run(gpu, &refs).unwrap();
    for (g, [mesh, logit]) in got.iter().zip(&rows) {
        assert_eq!(max_diff(&g.points, mesh), 0.0);
        assert_eq!(g.presence, 1.0 / (1.0 + (-logit[0]).exp()));
    }
    // A wrong input size is refused, not run.
    let x = gpu.tensor_from([1, 3, 8, 8], &[0.0; 192]).unwrap();
    assert!(dev.forward(&mut gpu.recorder(), &x).is_err());
}

#[test]
fn iris_matches_tflite_and_the_cpu_net() {
    on_every_device!(iris_on);
}

fn iris_on<D: Compute>(gpu: &D) {
    let (vb, golden) = weights_and_golden("iris");
    let cpu = IrisNet::load(vb.clone()).unwrap();
    let dev = GpuIris::load(gpu, vb).unwrap();
    let crops = crop_and_mirror(&golden);
    let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
    let got = dev.run(gpu, &refs).unwrap();
    assert_eq!(got.len(), 2);
    let dc = max_diff(&got[0].contour, &flat(&golden["eye_contour"]));
    let di = max_diff(&got[0].iris, &flat(&golden["iris"]));
    println!(
        "iris ({}): contour {dc:.3e} px, iris {di:.3e} px from TFLite",
        gpu.describe()
    );
    assert!(
        dc < 1e-3 && di < 1e-3,
        "contour {dc} px, iris {di} px from TFLite"
    );
    let want = cpu
        .forward(&iris::input_from_rgb8(&refs, &Device::Cpu).unwrap())
        .unwrap();
    let (contour, points) = (flat(&want.contour), flat(&want.iris));
    let (nc, ni) = (3 * iris::NUM_CONTOUR, 3 * iris::NUM_IRIS);
    for (i, g) in got.iter().enumerate() {
        let dc = max_diff(&g.contour, &contour[i * nc..][..nc]);
        let di = max_diff(&g.iris, &points[i * ni..][..ni]);
        assert!(
            dc < 1e-3 && di < 1e-3,
            "crop {i}: {dc} / {di} px from the CPU net"
        );
    }
    // One item per submission gives what one submission of both gave.
    let data = host_input(&refs, iris::input_from_rgb8).unwrap();
    let side = iris::INPUT_SIZE;
    let one = Footprint {
        peak: gpu.max_binding(),
        total: 1,
        planes: 1,
    };
    let one_each = in_chunks(gpu, &data, [3, side, side], one, |r, x| {
        Ok(dev.forward(r, x)?.into())
    })
    .unwrap();
    assert_eq!(one_each.len(), 2);
    for (i, (k, maps)) in one_each.iter().enumerate() {
        assert_eq!(*k, 1);
        assert_eq!(max_diff(&got[i].contour, &maps[0]), 0.0, "crop {i}");
        assert_eq!(max_diff(&got[i].iris, &maps[1]), 0.0, "crop {i}");
    }
}

#[test]
fn age_matches_tensorflow_js_and_the_cpu_net() {
    on_every_device!(age_on);
}

fn age_on<D: Compute>(gpu: &D) {
    let (vb, golden) = weights_and_golden("age");
    let cpu = AgeNet::load(vb.clone()).unwrap();
    let dev = GpuAge::load(gpu, vb).unwrap();
    let crops = crop_and_mirror(&golden);
    let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
    let got = dev.run(gpu, &refs).unwrap();
    let want = flat(&golden["age"])[0];
    println!("age ({}): {} vs {want} years", gpu.describe(), got[0]);
    assert!(
        (got[0] - want).abs() < 1e-3,
        "{} years, TF.js {want}",
        got[0]
    );
    let cpu = flat(
        &cpu.forward(&age::input_from_rgb8(&refs, &Device::Cpu).unwrap())
            .unwrap(),
    );
    assert_eq!(got.len(), cpu.len());
    for (g, c) in got.iter().zip(&cpu) {
        assert!((g - c).abs() < 1e-3, "{g} years, the CPU net {c}");
    }
    // No crops, no work.
    assert!(dev.run(gpu, &[]).unwrap().is_empty());
}

/// A recorder that adds up the tensors a forward allocates and the
/// largest z of its grids, and runs nothing (`tensor` takes `&self`,
/// hence the cells).
struct Counting<R> {
    inner: R,
    total: std::cell::Cell<u64>,
    peak: std::cell::Cell<u64>,
    planes: u64,
}

impl<R: Record> Record for Counting<R> {
    type Buf = R::Buf;

    fn dispatch(
        &mut self,
        _name: &str,
        _params: &[u32],
        _bufs: &[&R::Buf],
        groups: [u32; 3],
    ) -> Result<()> {
        self.planes = self.planes.max(groups[2] as u64);
        Ok(())
    }
    fn size(&self, buf: &R::Buf) -> u64 {
        self.inner.size(buf)
    }
    fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<R::Buf>> {
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        self.total.set(self.total.get() + bytes);
        self.peak.set(self.peak.get().max(bytes));
        self.inner.tensor(shape)
    }
    fn read(&mut self, buf: &R::Buf, len: u64) -> Result<Readback> {
        self.inner.read(buf, len)
    }
    fn finish(self) -> Result<Vec<Vec<u8>>> {
        self.inner.finish()
    }
}

/// The footprints batches split by hold one image's forward: every tensor
/// it allocates and every grid it dispatches, counted, within them (peak
/// and planes exactly; the total within a third of its bound, since a
/// loose bound wastes batch room). Shapes only: one device is enough.
#[test]
fn activations_fit_their_footprints() {
    #[cfg(feature = "wgpu")]
    if let Some(g) = crate::gpu::wgpu_device::test_gpu() {
        return footprints_on(&*g);
    }
    if let Some(h) = crate::gpu::cuda_host::test_cuda_host() {
        footprints_on(&*h);
    }
}

/// One image's forward counted by `f`, against `bound`.
fn count<'d, D: Compute>(
    gpu: &'d D,
    side: usize,
    bound: Footprint,
    f: impl FnOnce(&mut Counting<D::Rec<'d>>, &Tensor<D::Buf>),
) {
    let mut r = Counting {
        inner: gpu.recorder(),
        total: 0.into(),
        peak: 0.into(),
        planes: 0,
    };
    let x = gpu
        .tensor_from([1, 3, side, side], &vec![0.5; 3 * side * side])
        .unwrap();
    f(&mut r, &x);
    let (peak, total, planes) = (r.peak.get(), r.total.get(), r.planes);
    println!("{side}x{side}: peak {peak} B, total {total} B, {planes} planes");
    assert!(total <= bound.total, "{total} B over {bound:?}");
    assert!(3 * total > 2 * bound.total, "{total} B far under {bound:?}");
    assert_eq!((peak, planes), (bound.peak, bound.planes));
}

fn footprints_on<D: Compute>(gpu: &D) {
    let (vb, _) = weights_and_golden("face_mesh");
    let mesh = GpuFaceMesh::load(gpu, vb).unwrap();
    count(gpu, face_mesh::INPUT_SIZE, MESH, |r, x| {
        mesh.forward(r, x).unwrap();
    });
    let (vb, _) = weights_and_golden("iris");
    let eyes = GpuIris::load(gpu, vb).unwrap();
    count(gpu, iris::INPUT_SIZE, IRIS, |r, x| {
        eyes.forward(r, x).unwrap();
    });
    let (vb, _) = weights_and_golden("age");
    let ages = GpuAge::load(gpu, vb).unwrap();
    count(gpu, age::INPUT_SIZE, AGE, |r, x| {
        ages.forward(r, x).unwrap();
    });
}
