//! Berth operator: reconciles `BookingPlatform` and `ServiceSpec` custom
//! resources into the Deployments, Services, autoscalers, policies, migration
//! jobs and Redis lock cluster that run the Berth booking platform.

pub mod build;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod hash;
pub mod http;
pub mod metrics;
pub mod names;
pub mod run;
pub mod servicespec;
pub mod status;
