//! The skin models' micro-batched workloads: face-mesh crops, eye crops
//! and age crops from many requests share batches, each kind on its own
//! batcher, on the appliance's backend (CPU, wgpu or CUDA).

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, Batch, BatchOutput, ModelPaths, ModelSet, Target};
use crate::batch::queue::Policy;
use crate::batch::{Batcher, SubmitError, Workload};
use crate::frame::{EyePoints, MeshPoints};
use crate::metrics::Metrics;
use crate::model::{age, face_mesh, iris};
use crate::RunError;

/// Check that an RGB crop is `side` x `side`.
fn check_rgb(item: &[u8], side: usize) -> Result<(), SubmitError> {
    let want = side * side * 3;
    if item.len() != want {
        return Err(SubmitError::WrongSize {
            got: item.len(),
            want,
        });
    }
    Ok(())
}

fn pack(items: Vec<Vec<u8>>, f: fn(Vec<u8>, usize) -> Batch) -> Batch {
    let count = items.len();
    f(items.concat(), count)
}

/// 192x192 RGB face crops -> 468 mesh points and a presence score each.
pub struct MeshWork;

impl Workload for MeshWork {
    type Item = Vec<u8>;
    type Output = MeshPoints;

    fn model(&self) -> &'static str {
        "face_mesh"
    }
    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        check_rgb(item, face_mesh::INPUT_SIZE)
    }
    fn warm_item(&self) -> Self::Item {
        vec![127; face_mesh::INPUT_SIZE.pow(2) * 3]
    }
    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        pack(items, |data, count| Batch::MeshCrops { data, count })
    }
    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::Mesh(v) => Some(v),
            _ => None,
        }
    }
}

/// 64x64 RGB eye crops (right eyes mirrored) -> eye contour and iris.
pub struct EyeWork;

impl Workload for EyeWork {
    type Item = Vec<u8>;
    type Output = EyePoints;

    fn model(&self) -> &'static str {
        "iris"
    }
    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        check_rgb(item, iris::INPUT_SIZE)
    }
    fn warm_item(&self) -> Self::Item {
        vec![127; iris::INPUT_SIZE.pow(2) * 3]
    }
    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        pack(items, |data, count| Batch::EyeCrops { data, count })
    }
    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::Eyes(v) => Some(v),
            _ => None,
        }
    }
}

/// 112x112 RGB face crops -> the age model's estimate, years.
pub struct AgeWork;

impl Workload for AgeWork {
    type Item = Vec<u8>;
    type Output = f32;

    fn model(&self) -> &'static str {
        "age"
    }
    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        check_rgb(item, age::INPUT_SIZE)
    }
    fn warm_item(&self) -> Self::Item {
        vec![127; age::INPUT_SIZE.pow(2) * 3]
    }
    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        pack(items, |data, count| Batch::AgeCrops { data, count })
    }
    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::Ages(v) => Some(v),
            _ => None,
        }
    }
}

/// The skin pipeline's batchers: its face detector and the three skin
/// models.
pub struct SkinBatchers {
    pub detector: Batcher,
    pub mesh: Batcher<MeshWork>,
    pub eyes: Batcher<EyeWork>,
    pub age: Batcher<AgeWork>,
}

impl SkinBatchers {
    /// Start the detector (at `skin.detector_input`) and the skin models'
    /// batchers. Blocking: loads and warms the models.
    pub fn start(
        cfg: &crate::config::Config,
        target: &Target,
        models: &ModelPaths,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RunError> {
        let side = cfg.skin.detector_input;
        let detector =
            crate::families::face_batcher(cfg, (side, side), target, models, metrics.clone())?;
        let batch = &cfg.batch;
        let max_batch = batch.max_batch_for(target).max(1);
        let policy = Policy {
            max_batch,
            max_wait: Duration::from_millis(batch.max_wait_ms),
            max_depth: batch.queue_depth_for(target) * 2,
        };
        let mesh = Batcher::start_work(
            MeshWork,
            backend::start(target, models, ModelSet::FaceMesh, max_batch)?,
            policy,
            (face_mesh::INPUT_SIZE, face_mesh::INPUT_SIZE),
            metrics.clone(),
        )?;
        let eyes = Batcher::start_work(
            EyeWork,
            backend::start(target, models, ModelSet::Iris, max_batch * 2)?,
            Policy {
                max_batch: max_batch * 2,
                ..policy
            },
            (iris::INPUT_SIZE, iris::INPUT_SIZE),
            metrics.clone(),
        )?;
        let age = Batcher::start_work(
            AgeWork,
            backend::start(target, models, ModelSet::Age, max_batch)?,
            policy,
            (age::INPUT_SIZE, age::INPUT_SIZE),
            metrics,
        )?;
        Ok(Self {
            detector,
            mesh,
            eyes,
            age,
        })
    }

    pub fn healthy(&self) -> bool {
        self.detector.healthy() && self.mesh.healthy() && self.eyes.healthy() && self.age.healthy()
    }

    pub fn shutdown(&self) {
        self.detector.shutdown();
        self.mesh.shutdown();
        self.eyes.shutdown();
        self.age.shutdown();
    }
}
