//! Prediction and the scaling state machine (pure): metrics and the previous
//! status in, the recommendation per instance and typed transitions out.

pub mod consumer;
pub mod machine;
pub mod predict;
pub mod spec;
pub mod status;
pub mod step;

pub use spec::ScalingSpec;
pub use step::{Metrics, Restored, StepInput, StepOutput, Transition, step};

#[cfg(test)]
mod tests;
