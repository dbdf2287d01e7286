//! The diffusion side of bdense, on burn: schedules and solvers, teachers, the K-branch
//! student, training loops, sampling and metrics.
//!
//! Nothing here names a backend except [`backend`]; tensors live on whatever `Device` the
//! caller passes (burn-ndarray on the CPU, burn-tch with the `tch` feature).

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod edm;
pub mod error;
pub mod fit;
pub mod log;
pub mod optim;
pub mod pd;
pub mod precond;
pub mod rng;
pub mod schedule;
pub mod solvers;
pub mod teachers;
pub mod unet;

pub use error::{Result, TrainerError};
pub mod classifier;
pub mod conv;
pub mod method;
pub mod metrics;
pub mod sample;
pub mod student;
#[cfg(feature = "tch")]
pub mod torch;
